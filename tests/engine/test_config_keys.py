"""An unknown key in a config file or an -o override stops the tools with one error that names
the key, where it was set and the closest known names; every real config still loads.

The key check reads the files itself and leaves ppdet's process-global config alone, so it runs
in this process; the tools run in a fresh interpreter."""

import glob
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from _common import REPO
from _engine_helpers import TINY_CONFIG, child_env

from ppdet_dac.engine.config_keys import TOP_LEVEL_KEYS, check_config_file

DEMO = os.path.join(REPO, "configs", "demo", "dac_demo.yml")
R50 = os.path.join(REPO, "configs", "dac_cdn_ice_r50.yml")


def _error(config, opts=None):
    with pytest.raises(ValueError) as info:
        check_config_file(config, opts)
    return str(info.value)


# (-o as ppdet's ArgsParser gives it, the message after "<config> with -o ...: ")
OPT_TYPOS = [
    ({"epcoh": 1}, "epcoh=1", "unknown key 'epcoh' (top level); did you mean 'epoch'?"),
    (
        {"TrainReader": {"batchsize": 1}},
        "TrainReader.batchsize=1",
        "unknown key 'batchsize' in TrainReader; did you mean 'batch_size'?",
    ),
    (
        {"TrainDataset": {"anno_pth": "a.json"}},
        "TrainDataset.anno_pth=a.json",
        "unknown key 'anno_pth' in TrainDataset (DACCOCODataSet); did you mean 'anno_path'?",
    ),
    (
        {"TestDataset": {"anno_pth": "a.json"}},
        "TestDataset.anno_pth=a.json",
        "unknown key 'anno_pth' in TestDataset (ImageFolder); did you mean 'anno_path'?",
    ),
    (
        {"OptimizerBuilder": {"optimizer": {"weight_decy": 0.05}}},
        "OptimizerBuilder.optimizer.weight_decy=0.05",
        "unknown key 'weight_decy' in OptimizerBuilder.optimizer (AdamW); did you mean "
        "'weight_decay'?",
    ),
    (
        {"OptimizerBuilder": {"clip_grad_by_nrm": 0.1}},
        "OptimizerBuilder.clip_grad_by_nrm=0.1",
        "unknown key 'clip_grad_by_nrm' in OptimizerBuilder; did you mean 'clip_grad_by_norm'",
    ),
    (
        {"LearningRate": {"base_rl": 0.1}},
        "LearningRate.base_rl=0.1",
        "unknown key 'base_rl' in LearningRate; did you mean 'base_lr'?",
    ),
    (
        {"LearningRate": {"schedulers": [{"name": "PiecewiseDecay", "gama": 0.1}]}},
        "LearningRate.schedulers=[{'name': 'PiecewiseDecay', 'gama': 0.1}]",
        "unknown key 'gama' in LearningRate.schedulers[0] (PiecewiseDecay); did you mean 'gamma'?",
    ),
    (
        {"DACTransformer": {"num_querys": 50}},
        "DACTransformer.num_querys=50",
        "unknown key 'num_querys' in DACTransformer; did you mean 'num_queries' or 'num_heads' or "
        "'num_levels'?",
    ),
    (
        {"DACCriterion": {"matcher": {"name": "DACHungarianMatcher", "cost_clas": 1}}},
        "DACCriterion.matcher.cost_clas=1",
        "unknown key 'cost_clas' in DACCriterion.matcher (DACHungarianMatcher); did you mean "
        "'cost_class'?",
    ),
    (
        {"TrainReader": {"sample_transforms": [{"DACDecode": {}}, {"RandomFlip": {"prb": 0.5}}]}},
        "TrainReader.sample_transforms=[{'DACDecode': {}}, {'RandomFlip': {'prb': 0.5}}]",
        "unknown key 'prb' in TrainReader.sample_transforms[1].RandomFlip; did you mean 'prob'?",
    ),
    (
        {"EvalReader": {"batch_transforms": [{"PadMaskBtch": {}}]}},
        "EvalReader.batch_transforms=[{'PadMaskBtch': {}}]",
        "unknown transform 'PadMaskBtch' in EvalReader.batch_transforms[0]; did you mean "
        "'PadMaskBatch'",
    ),
    (
        {"TestReader": {"inputs_def": {"image_shap": [3, 640, 640]}}},
        "TestReader.inputs_def.image_shap=[3, 640, 640]",
        "unknown key 'image_shap' in TestReader.inputs_def; did you mean 'image_shape'?",
    ),
    # no close name: the known ones are listed
    (
        {"export": {"onnx": True}},
        "export.onnx=True",
        "unknown key 'onnx' in export; known: benchmark, fuse_conv_bn, nms, post_process",
    ),
]


@pytest.mark.parametrize("opts, entry, message", OPT_TYPOS, ids=[e for _, e, _ in OPT_TYPOS])
def test_opt_typo_names_the_entry_and_the_right_key(opts, entry, message):
    assert _error(DEMO, opts).startswith(f"{DEMO} with -o {entry}: {message}")


@pytest.mark.parametrize(
    "opts, entry, section",
    [
        (
            {"TrainReader": {"sample_transforms": {"1": {"RandomFlip": {"prob": 0.3}}}}},
            "TrainReader.sample_transforms.1.RandomFlip.prob=0.3",
            "TrainReader.sample_transforms",
        ),
        (
            {"LearningRate": {"schedulers": {"0": {"gamma": 0.2}}}},
            "LearningRate.schedulers.0.gamma=0.2",
            "LearningRate.schedulers",
        ),
    ],
)
def test_opt_cannot_index_a_list(opts, entry, section):
    """ppdet's -o parser turns `a.list.1.key=value` into a mapping that replaces the whole list:
    refused, with how to do it instead."""
    message = _error(DEMO, opts)
    assert message.startswith(f"{DEMO} with -o {entry}: {section} must be a list of")
    assert message.endswith("(-o cannot set one item of a list; give the whole list), not dict")


def test_optimizer_keys_that_the_builder_replaces_are_refused():
    """ppdet's OptimizerBuilder sets a non-AdamW optimizer's weight_decay from `regularizer`."""
    opts = {
        "OptimizerBuilder": {
            "optimizer": {"type": "Momentum", "momentum": 0.9, "weight_decay": 0.01}
        }
    }
    assert (
        "'weight_decay' in OptimizerBuilder.optimizer (Momentum) is replaced by "
        "OptimizerBuilder (from regularizer)" in _error(DEMO, opts)
    )
    opts = {"OptimizerBuilder": {"optimizer": {"type": "Momentm"}}}
    assert (
        "unknown optimizer type 'Momentm' in OptimizerBuilder.optimizer.type; did you mean "
        "'Momentum'?" in _error(DEMO, opts)
    )


def test_correct_opts_pass():
    """The -o entries the README and the tests use, and new keys read by the Trainer."""
    check_config_file(
        DEMO,
        {
            "epoch": 1,
            "use_ema": True,
            "ema_decay": 0.999,
            "pretrain_weights": "none",
            "weights": "w",
            "save_dir": "out",
            "TrainReader": {"batch_size": 1, "shuffle": False},
            "TrainDataset": {"dataset_dir": "d", "anno_path": "a.json"},
            "EvalDataset": {"image_dir": "train"},
            "TestDataset": {"dataset_dir": "d"},
            "OptimizerBuilder": {"optimizer": {"weight_decay": 0.05}, "clip_grad_by_norm": 0.1},
            "LearningRate": {"base_lr": 0.001},
            "DACTransformer": {"num_queries": 50},
            "DACCriterion": {"matcher": {"name": "DACHungarianMatcher", "cost_class": 1.0}},
        },
    )


YAML_BASE = f"_BASE_: ['{R50}']\n"
# (the user's YAML after its _BASE_ line, the message after "<file>: ")
YAML_TYPOS = [
    ("epcoh: 1\n", "unknown key 'epcoh' (top level); did you mean 'epoch'?"),
    (
        "TrainReader:\n  batchsize: 4\n",
        "unknown key 'batchsize' in TrainReader; did you mean 'batch_size'?",
    ),
    (
        "EvalDataset:\n  anno_pth: a.json\n",
        "unknown key 'anno_pth' in EvalDataset (DACCOCODataSet); did you mean 'anno_path'?",
    ),
    (
        "OptimizerBuilder:\n  optimizer: {type: AdamW, weight_decy: 0.05}\n",
        "unknown key 'weight_decy' in OptimizerBuilder.optimizer (AdamW); did you mean "
        "'weight_decay'?",
    ),
    (
        "LearningRate:\n  base_lr: 0.0002\n  schedulers:\n  - !PiecewiseDecay\n    gama: 0.1\n"
        "    milestones: [11]\n",
        "unknown key 'gama' in LearningRate.schedulers[0] (!PiecewiseDecay); did you mean 'gamma'?",
    ),
    (
        "DACCriterion:\n  o2m_max_kk: 4\n",
        "unknown key 'o2m_max_kk' in DACCriterion; did you mean 'o2m_max_k'?",
    ),
    (
        "SwinTransformr:\n  depths: [2, 2, 6, 2]\n",
        "unknown key 'SwinTransformr' (top level); did you mean 'SwinTransformer'",
    ),
    # an argument of a transform nested in RandomSelect
    (
        "TrainReader:\n  sample_transforms:\n    - DACDecode: {}\n    - RandomSelect:\n"
        "        transforms1: [{RandomFlip: {}}]\n"
        "        transforms2: [{RandomSizeCrop: {min_sze: 384, max_size: 600}}]\n",
        "unknown key 'min_sze' in TrainReader.sample_transforms[1].RandomSelect.transforms2[0]."
        "RandomSizeCrop; did you mean 'min_size'",
    ),
]


@pytest.mark.parametrize("text, message", YAML_TYPOS, ids=[m.split("'")[1] for _, m in YAML_TYPOS])
def test_yaml_typo_names_the_file_and_the_right_key(tmp_path, text, message):
    user = tmp_path / "user.yml"
    user.write_text(YAML_BASE + text)
    assert _error(str(user)).startswith(f"{user}: {message}")


@pytest.mark.parametrize("key, right", [("label_lst", "label_list"), ("sample_nm", "sample_num")])
def test_voc_dataset_typo_names_the_right_key(tmp_path, key, right):
    """DACVOCDataSet takes its own keys and passes the rest to DACCOCODataSet: a typo in
    either kind is named."""
    voc = os.path.join(REPO, "configs", "demo", "demo_data_voc.yml")
    user = tmp_path / "user.yml"
    user.write_text(f"_BASE_: ['{R50}', '{voc}']\nTrainDataset:\n  {key}: 1\n")
    assert _error(str(user)).startswith(
        f"{user}: unknown key '{key}' in TrainDataset (DACVOCDataSet); did you mean '{right}'"
    )


def test_typo_in_a_base_file_names_that_file(tmp_path):
    base = tmp_path / "base.yml"
    base.write_text(YAML_BASE + "snapshot_epohc: 2\n")
    user = tmp_path / "user.yml"
    user.write_text("_BASE_: ['base.yml']\nepoch: 1\n")
    assert _error(str(user)).startswith(
        f"{user} (_BASE_ {base}): unknown key 'snapshot_epohc' (top level); did you mean "
        "'snapshot_epoch' or 'snapshot_iter'?"
    )


def test_missing_base_file_is_named(tmp_path):
    user = tmp_path / "user.yml"
    user.write_text("_BASE_: ['nowhere.yml']\n")
    with pytest.raises(
        FileNotFoundError,
        match=re.escape(
            f"config file not found: {tmp_path / 'nowhere.yml'} (a _BASE_ file of {user})"
        ),
    ):
        check_config_file(str(user))


REAL_CONFIGS = sorted(
    os.path.relpath(p, REPO)
    for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yml"), recursive=True)
)


@pytest.mark.parametrize("config", REAL_CONFIGS)
def test_every_real_config_passes(config):
    check_config_file(os.path.join(REPO, config))


def test_the_tests_tiny_config_passes_with_their_overrides(tmp_path):
    """tests/engine/_engine_helpers.py's config with the -o of tests/engine/test_distributed.py."""
    tiny = tmp_path / "tiny.yml"
    tiny.write_text(TINY_CONFIG.format(repo=REPO, epoch=1, data="d", save_dir="out"))
    check_config_file(
        str(tiny),
        {
            "TrainDataset": {"dataset_dir": "d"},
            "EvalDataset": {"dataset_dir": "d"},
            "TrainReader": {"batch_size": 1, "shuffle": False},
            "save_dir": "out",
        },
    )


def _sources():
    import ppdet

    ppdet_dir = os.path.dirname(ppdet.__file__)
    paths = [
        os.path.join(ppdet_dir, "engine", "trainer.py"),
        os.path.join(ppdet_dir, "engine", "callbacks.py"),
    ]
    paths += glob.glob(os.path.join(REPO, "ppdet_dac", "**", "*.py"), recursive=True)
    paths += glob.glob(os.path.join(REPO, "tools", "*.py"))
    text = ""
    for path in paths:
        if not path.endswith("config_keys.py"):
            with open(path) as handle:
                text += handle.read()
    return text


def test_every_allow_listed_key_is_read_somewhere():
    """TOP_LEVEL_KEYS stays honest: each key appears as a config read (a string literal or an
    attribute of cfg) in ppdet's Trainer / callbacks, ppdet_dac or tools/."""
    text = _sources()
    unread = [
        key for key in TOP_LEVEL_KEYS if not re.search(rf"""(['"]{key}['"]|cfg\.{key}\b)""", text)
    ]
    assert unread == []


TOOLS_SCRIPT = textwrap.dedent("""
    import importlib, json, sys
    sys.path.insert(0, "tools")
    import ppdet_dac
    from ppdet.core.workspace import global_config
    config, out = sys.argv[1], sys.argv[2]
    extra = {"infer": ["--infer_img", "x.png"], "dump_outputs": ["--input", "x.npy", "--out",
                                                                  "y.npz"]}
    runs = [   # (label, tool module, argv); the device flag is checked after loading: last
        (name + suffix, name, ["-c", config, "-o", entry] + extra.get(name, []))
        for suffix, entry in (("", "epcoh=1"), (" value", "LearningRate.base_lr=-1"))
        for name in ("train", "eval", "infer", "export_model", "dump_outputs",
                     "analyze_queries", "demo")] + [
        ("train_option", "train", ["-c", config, "-o", "amp=true"]),
        ("eval_device", "eval", ["-c", config, "-o", "use_npu=true"]),
    ]
    messages = {}
    for label, name, argv in runs:
        try:
            importlib.import_module(name).main(argv)
        except ValueError as err:
            messages[label] = str(err)
        messages[label + " loaded"] = "epoch" in global_config   # ppdet merged the config
    json.dump(messages, open(out, "w"))
""")


def test_every_tool_stops_before_loading(tmp_path):
    """train, eval, infer, export, dump, query analysis and demo share the key and value
    checks (a typo, a learning rate of -1: refused before ppdet loads the config); a tool's own
    option cannot be given with -o (merge_args would replace the -o value); a device flag
    needs that device in the Paddle build (this one is built for CPU, maybe CUDA)."""
    out = tmp_path / "messages.json"
    proc = subprocess.run(
        [sys.executable, "-c", TOOLS_SCRIPT, "configs/demo/dac_demo.yml", str(out)],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    messages = json.loads(out.read_text())
    expected = (
        "configs/demo/dac_demo.yml with -o epcoh=1: unknown key 'epcoh' (top level); "
        "did you mean 'epoch'?"
    )
    value = (
        "configs/demo/dac_demo.yml with -o LearningRate.base_lr=-1: LearningRate.base_lr "
        "must be a number > 0, got -1"
    )
    for tool in (
        "train",
        "eval",
        "infer",
        "export_model",
        "dump_outputs",
        "analyze_queries",
        "demo",
    ):
        assert messages[tool] == expected, tool
        assert messages[tool + " loaded"] is False, tool
        assert messages[tool + " value"] == value, tool
        assert messages[tool + " value loaded"] is False, tool
    assert messages["train_option"] == (
        "configs/demo/dac_demo.yml with -o amp=True: 'amp' is an option of this tool, whose "
        "value replaces the -o one; pass --amp instead"
    )
    assert messages["eval_device"] == (
        "configs/demo/dac_demo.yml: use_npu is true, but this Paddle build has no NPU support"
    )
