"""A nonsense value (learning rate -1, batch size 0, epoch 'abc', a threshold of 1.5) stops the
tools at load time with one ValueError naming the -o entry or the file, the key and the value;
a _BASE_ cycle is named instead of recursing; every real config still loads.

check_config_file reads the files itself and leaves ppdet's global config alone, so everything
runs in this process except the one tools/train.py run."""

import os
import re

import pytest
import yaml

from _common import REPO
from _engine_helpers import make_tiny_setup, run_train

from ppdet_dac.engine.config_keys import check_config_file
from ppdet_dac.engine.config_values import NESTED, SCHEDULERS, SECTIONS, TOP_LEVEL, TRANSFORMS

DEMO = os.path.join(REPO, "configs", "demo", "dac_demo.yml")


def _error(config, opts=None):
    with pytest.raises(ValueError) as info:
        check_config_file(config, opts)
    return str(info.value)


def _user_config(tmp_path, override, base=DEMO, name="user.yml"):
    user = tmp_path / name
    user.write_text(f"_BASE_: ['{base}']\n" + yaml.safe_dump(override, sort_keys=False))
    return user


# The issue's cases and one of each kind of rule, by hand:
# (-o as ppdet's ArgsParser gives it, the entry as typed, the message after "<config> with -o
# <entry>: ")
BAD_OPTS = [
    (
        {"LearningRate": {"base_lr": -1}},
        "LearningRate.base_lr=-1",
        "LearningRate.base_lr must be a number > 0, got -1",
    ),
    (
        {"LearningRate": {"base_lr": 0.0}},
        "LearningRate.base_lr=0.0",
        "LearningRate.base_lr must be a number > 0, got 0.0",
    ),
    (
        {"LearningRate": {"base_lr": "1e-4"}},
        "LearningRate.base_lr=1e-4",
        "LearningRate.base_lr must be a number > 0, got '1e-4' (YAML reads 1e-4 as text: a float "
        "needs a decimal point and a signed exponent, e.g. 1.0e-4)",
    ),
    (
        {"OptimizerBuilder": {"clip_grad_by_norm": "1.0e4"}},
        "OptimizerBuilder.clip_grad_by_norm=1.0e4",
        "OptimizerBuilder.clip_grad_by_norm must be a number > 0 (or null), got '1.0e4' (YAML reads "
        "1.0e4 as text: a float needs a decimal point and a signed exponent, e.g. 1.0e+4)",
    ),
    ({"epoch": "abc"}, "epoch=abc", "epoch must be an integer >= 1, got 'abc'"),
    ({"epoch": 0}, "epoch=0", "epoch must be an integer >= 1, got 0"),
    ({"epoch": 2.5}, "epoch=2.5", "epoch must be an integer >= 1, got 2.5"),
    (
        {"TrainReader": {"batch_size": 0}},
        "TrainReader.batch_size=0",
        "TrainReader.batch_size must be an integer >= 1, got 0",
    ),
    # among several -o entries, the one at fault is named
    (
        {"epoch": 2, "TrainReader": {"shuffle": False, "batch_size": 0}, "save_dir": "out"},
        "TrainReader.batch_size=0",
        "TrainReader.batch_size must be an integer >= 1, got 0",
    ),
    (
        {"EvalReader": {"batch_size": "two"}},
        "EvalReader.batch_size=two",
        "EvalReader.batch_size must be an integer >= 1, got 'two'",
    ),
    (
        {"TestReader": {"batch_size": -1}},
        "TestReader.batch_size=-1",
        "TestReader.batch_size must be an integer >= 1, got -1",
    ),
    ({"worker_num": -1}, "worker_num=-1", "worker_num must be an integer >= 0, got -1"),
    ({"snapshot_epoch": 0}, "snapshot_epoch=0", "snapshot_epoch must be an integer >= 1, got 0"),
    (
        {"draw_threshold": 1.5},
        "draw_threshold=1.5",
        "draw_threshold must be a number in [0, 1], got 1.5",
    ),
    (
        {"use_gpu": "yes please"},
        "use_gpu=yes please",
        "use_gpu must be true or false, got 'yes please'",
    ),
    (
        {"DACNMSPostProcess": {"nms_iou_threshold": -0.1}},
        "DACNMSPostProcess.nms_iou_threshold=-0.1",
        "DACNMSPostProcess.nms_iou_threshold must be a number in [0, 1], got -0.1",
    ),
    (
        {"DACCriterion": {"o2m_threshold": 2}},
        "DACCriterion.o2m_threshold=2",
        "DACCriterion.o2m_threshold must be a number in [0, 1], got 2",
    ),
    (
        {"DACTransformer": {"num_queries": 0}},
        "DACTransformer.num_queries=0",
        "DACTransformer.num_queries must be an integer >= 1, got 0",
    ),
    (
        {"DACTransformer": {"dropout": 1.0}},
        "DACTransformer.dropout=1.0",
        "DACTransformer.dropout must be a number in [0, 1), got 1.0",
    ),
    ({"hidden_dim": 0}, "hidden_dim=0", "hidden_dim must be an integer >= 1, got 0"),
    (
        {"num_classes": float("nan")},
        "num_classes=nan",
        "num_classes must be an integer >= 1, got nan",
    ),
    (
        {"OptimizerBuilder": {"clip_grad_by_norm": 0}},
        "OptimizerBuilder.clip_grad_by_norm=0",
        "OptimizerBuilder.clip_grad_by_norm must be a number > 0 (or null), got 0",
    ),
    (
        {"OptimizerBuilder": {"optimizer": {"weight_decay": -0.01}}},
        "OptimizerBuilder.optimizer.weight_decay=-0.01",
        "OptimizerBuilder.optimizer.weight_decay must be a number >= 0 (or null), got -0.01",
    ),
    # a matcher given as the criterion's argument gets the matcher's rules
    (
        {"DACCriterion": {"matcher": {"name": "DACHungarianMatcher", "alpha": 1.5}}},
        "DACCriterion.matcher.alpha=1.5",
        "DACCriterion.matcher.alpha must be a number in [0, 1], got 1.5",
    ),
    (
        {"LearningRate": {"schedulers": [{"name": "PiecewiseDecay", "milestones": [8, 3]}]}},
        "LearningRate.schedulers=[{'name': 'PiecewiseDecay', 'milestones': [8, 3]}]",
        "LearningRate.schedulers[0].milestones must be a list of integers >= 0, strictly "
        "increasing, got [8, 3]",
    ),
    (
        {"TrainReader": {"sample_transforms": [{"DACDecode": {}}, {"RandomFlip": {"prob": 2}}]}},
        "TrainReader.sample_transforms=[{'DACDecode': {}}, {'RandomFlip': {'prob': 2}}]",
        "TrainReader.sample_transforms[1].RandomFlip.prob must be a number in [0, 1], got 2",
    ),
    (
        {
            "EvalReader": {
                "sample_transforms": [{"Resize": {"target_size": [160, 0], "keep_ratio": True}}]
            }
        },
        "EvalReader.sample_transforms=[{'Resize': {'target_size': [160, 0], 'keep_ratio': True}}]",
        "EvalReader.sample_transforms[0].Resize.target_size must be an integer >= 1 or a "
        "non-empty list of integers >= 1, got [160, 0]",
    ),
]


@pytest.mark.parametrize("opts, entry, message", BAD_OPTS, ids=[e for _, e, _ in BAD_OPTS])
def test_bad_opt_value_names_the_entry_key_and_value(opts, entry, message):
    assert _error(DEMO, opts) == f"{DEMO} with -o {entry}: {message}"


def test_opt_scheduler_built_by_the_parser_is_checked_and_shown():
    """ppdet's -o parser builds `!PiecewiseDecay {...}` into the scheduler object."""
    from ppdet.utils.cli import ArgsParser

    args = ArgsParser().parse_args(
        [
            "-c",
            DEMO,
            "-o",
            "LearningRate.schedulers=[!PiecewiseDecay "
            "{milestones: [3, 3], gamma: 0.1, use_warmup: false}]",
        ]
    )
    assert _error(DEMO, args.opt) == (
        f"{DEMO} with -o LearningRate.schedulers=[!PiecewiseDecay {{gamma: [0.1, 0.01], "
        "milestones: [3, 3], values: None, use_warmup: False}]: LearningRate.schedulers[0]."
        "milestones must be a list of integers >= 0, strictly increasing, got [3, 3]"
    )


def _bad_value(rule):
    """A value that breaks ``rule``: below its lower bound (or above its upper), else text."""
    if rule.kind == "bool" or (rule.low is None and rule.high is None):
        return "abc"
    bad = (
        (rule.low if rule.open_low else rule.low - 1)
        if rule.low is not None
        else (rule.high if rule.open_high else rule.high + 1)
    )
    return [bad] if rule.shape == "list" else bad


def _every_rule():
    """(override mapping, key path text, bad value) for each rule of the tables, placed where
    the rule applies in a config."""
    cases = []
    for key, rule in TOP_LEVEL.items():
        cases.append(({key: _bad_value(rule)}, key, _bad_value(rule)))
    for section, rules in SECTIONS.items():
        for key, rule in rules.items():
            cases.append(({section: {key: _bad_value(rule)}}, f"{section}.{key}", _bad_value(rule)))
    for (section, arg), rules in NESTED.items():
        for key, rule in rules.items():
            cases.append(
                (
                    {
                        section: {arg: {"type": "AdamW", key: _bad_value(rule)}}
                        if arg == "optimizer"
                        else {arg: {key: _bad_value(rule)}}
                    },
                    f"{section}.{arg}.{key}",
                    _bad_value(rule),
                )
            )
    for name, rules in SCHEDULERS.items():
        for key, rule in rules.items():
            cases.append(
                (
                    {"LearningRate": {"schedulers": [{"name": name, key: _bad_value(rule)}]}},
                    f"LearningRate.schedulers[0].{key}",
                    _bad_value(rule),
                )
            )
    for name, rules in TRANSFORMS.items():
        for key, rule in rules.items():
            ops = [{"DACDecode": {}}, {name: {key: _bad_value(rule)}}]
            cases.append(
                (
                    {"TrainReader": {"sample_transforms": ops}},
                    f"TrainReader.sample_transforms[1].{name}.{key}",
                    _bad_value(rule),
                )
            )
    return cases


EVERY_RULE = _every_rule()


@pytest.mark.parametrize("override, key, bad", EVERY_RULE, ids=[k for _, k, _ in EVERY_RULE])
def test_every_rule_refuses_a_bad_opt_and_a_bad_file_value(tmp_path, override, key, bad):
    """Each rule of the tables, once as -o and once in a config file based on the demo."""
    message = _error(DEMO, override)
    assert message.startswith(f"{DEMO} with -o {key.split('[')[0].split('.')[0]}")
    assert f": {key} must be " in message and message.endswith(f", got {bad!r}")
    user = _user_config(tmp_path, override)
    message = _error(str(user))
    assert message.startswith(f"{user}: {key} must be ")
    assert message.endswith(f", got {bad!r}")


def test_bad_value_in_a_base_file_names_that_file(tmp_path):
    base = _user_config(tmp_path, {"TrainReader": {"batch_size": 0}}, name="base.yml")
    user = tmp_path / "user.yml"
    user.write_text("_BASE_: ['base.yml']\nepoch: 1\n")
    assert _error(str(user)) == (
        f"{user} (_BASE_ {base}): TrainReader.batch_size must be an integer >= 1, got 0"
    )


def test_a_file_value_overridden_by_a_good_opt_is_still_refused(tmp_path):
    """The file is checked on its own first: -o does not hide a bad file."""
    user = _user_config(tmp_path, {"epoch": 0})
    assert _error(str(user), {"epoch": 2}) == f"{user}: epoch must be an integer >= 1, got 0"


# (a value at the edge that real runs use: passes, the value just beyond it: refused)
EDGES = [
    ({"worker_num": 0}, {"worker_num": -1}),  # no workers
    ({"snapshot_iter": 0}, {"snapshot_iter": -1}),  # no iteration checkpoints
    ({"draw_threshold": 0.0}, {"draw_threshold": -0.01}),
    ({"draw_threshold": 1}, {"draw_threshold": 1.01}),
    ({"LearningRate": {"base_lr": 0.00000001}}, {"LearningRate": {"base_lr": 0}}),
    (
        {"OptimizerBuilder": {"clip_grad_by_norm": None}},  # no clip
        {"OptimizerBuilder": {"clip_grad_by_norm": -1.0}},
    ),
    ({"DACTransformer": {"num_denoising": 0}}, {"DACTransformer": {"num_denoising": -1}}),
    ({"DACTransformer": {"dropout": 0.0}}, {"DACTransformer": {"dropout": 1}}),
    (
        {"DACNMSPostProcess": {"nms_iou_threshold": 1.0}},
        {"DACNMSPostProcess": {"nms_iou_threshold": 1.5}},
    ),
    # a constant schedule, and a warm-up from 0
    (
        {
            "LearningRate": {
                "schedulers": [
                    {"name": "PiecewiseDecay", "milestones": [], "gamma": [], "use_warmup": True}
                ]
            }
        },
        {
            "LearningRate": {
                "schedulers": [
                    {"name": "PiecewiseDecay", "milestones": [2, 2], "gamma": [0.1, 0.01]}
                ]
            }
        },
    ),
    (
        {
            "LearningRate": {
                "schedulers": [{"name": "LinearWarmup", "steps": 0, "start_factor": 0.0}]
            }
        },
        {
            "LearningRate": {
                "schedulers": [{"name": "LinearWarmup", "steps": 0, "start_factor": -0.1}]
            }
        },
    ),
]


@pytest.mark.parametrize("good, bad", EDGES)
def test_edge_values_pass_and_the_next_value_is_refused(good, bad):
    check_config_file(DEMO, good)
    assert " must be " in _error(DEMO, bad)


# --- _BASE_ cycles -------------------------------------------------------------------------


def _cycle(tmp_path, names):
    """Files names[0] -> names[1] -> ... -> names[0] through _BASE_."""
    for name, nxt in zip(names, names[1:] + names[:1]):
        (tmp_path / name).write_text(f"_BASE_: ['{nxt}']\nepoch: 1\n")
    return [str(tmp_path / name) for name in names]


def test_two_file_base_cycle_is_named_before_ppdet_recurses(tmp_path):
    """Through load_checked_config, the tools' entry: the check runs before ppdet's
    load_config (which would recurse until RecursionError)."""
    from ppdet_dac.engine import load_checked_config

    a, b = _cycle(tmp_path, ["a.yml", "b.yml"])
    with pytest.raises(ValueError) as info:
        load_checked_config(a)
    assert str(info.value) == (
        f"{a}: _BASE_ cycle: {a} -> {b} -> {a} (each file lists the "
        "next in _BASE_; ppdet would recurse forever)"
    )


def test_three_file_base_cycle_reached_from_another_file_is_named(tmp_path):
    """Named from the file where it closes; two bases sharing a base (a diamond) are no
    cycle."""
    left = _user_config(tmp_path, {"epoch": 2}, name="left.yml")
    right = _user_config(tmp_path, {"log_iter": 5}, name="right.yml")
    diamond = tmp_path / "diamond.yml"
    diamond.write_text(f"_BASE_: ['{left.name}', '{right.name}']\n")
    check_config_file(str(diamond))
    a, b, c = _cycle(tmp_path, ["a.yml", "b.yml", "c.yml"])
    user = tmp_path / "user.yml"
    user.write_text("_BASE_: ['b.yml']\n")
    message = _error(str(user))
    assert message.startswith(f"{user}: _BASE_ cycle: {b} -> {c} -> {a} -> {b} (")


def test_base_that_is_not_a_list_of_files_is_named(tmp_path):
    """ppdet's loader would read `_BASE_: base.yml` letter by letter."""
    user = tmp_path / "user.yml"
    user.write_text("_BASE_: base.yml\n")
    assert _error(str(user)) == (
        f"{user}: _BASE_ must be a list of config files, e.g. _BASE_: ['base.yml'], not 'base.yml'"
    )


# --- the tool --------------------------------------------------------------------------------


def test_train_refuses_learning_rate_minus_one_before_training(tmp_path):
    """tools/train.py on a runnable config (data present) with -o LearningRate.base_lr=-1:
    one ValueError line, no checkpoint written."""
    config = make_tiny_setup(str(tmp_path), epoch=1, num_train=4, num_val=1)
    save_dir = tmp_path / "run"
    proc = run_train(
        config, "-o", "LearningRate.base_lr=-1", f"save_dir={save_dir}", check=False, timeout=600
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (
        f"train.py: error: {config} with -o LearningRate.base_lr=-1: LearningRate.base_lr must be a "
        "number > 0, got -1"
    )
    assert not save_dir.exists() or not any(save_dir.rglob("*.pdparams"))
    assert not re.search(r"Epoch: \[0\]", proc.stderr + proc.stdout)
