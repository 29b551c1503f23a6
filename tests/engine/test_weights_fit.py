"""Weights must fit: ``weights=`` (eval / infer through ``DACTrainer.load_weights``, export, the
dumps) loads only when every model tensor is in the file with its shape, a ``.pdopt`` /
``.pdstate`` is named as such, unused names are summarised; ``pretrain_weights`` fails when no
backbone tensor fits, warns once when some do not, and never runs a file's pickle code (local or
downloaded)."""

import logging
import os
import pickle
import re
import subprocess
import types

import numpy as np
import paddle
import pytest

from _common import build_tiny_detector
from _engine_helpers import PYTHON, REPO, child_env, make_tiny_setup

from ppdet_dac.engine.checkpoint import save_checkpoint
from ppdet_dac.engine.pretrained import fetch_pretrain_weights, load_pretrain_weights
from ppdet_dac.engine.trainer import DACTrainer
from ppdet_dac.interop.weights import load_model_weights


@pytest.fixture(scope="module")
def models():
    """A tiny model and the weights of another config (3 classes, 1 decoder layer)."""
    return build_tiny_detector(seed=0), build_tiny_detector(
        num_classes=3, num_decoder_layers=1, seed=1
    )


@pytest.fixture
def weights_log(caplog):
    """Records of ppdet_dac.interop.weights (ppdet loggers do not propagate)."""
    log = logging.getLogger("ppdet_dac.interop.weights")
    log.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    yield caplog
    log.removeHandler(caplog.handler)


def _numpy_state(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def _trainer_load(model, weights):
    """What tools/eval.py and tools/infer.py call: DACTrainer.load_weights on the model."""
    DACTrainer.load_weights(types.SimpleNamespace(is_loaded_weights=False, model=model), weights)


@pytest.mark.parametrize("load", [_trainer_load, load_model_weights], ids=["trainer", "loader"])
def test_weights_of_another_config_are_one_error_with_counts(models, tmp_path, load):
    model, other = models
    path = str(tmp_path / "other.pdparams")
    paddle.save(other.state_dict(), path)
    own, theirs = _numpy_state(model), _numpy_state(other)
    missing = sorted(set(own) - set(theirs))
    shape = sorted(k for k in set(own) & set(theirs) if own[k].shape != theirs[k].shape)
    assert missing and shape  # the reference: names and shapes compared one by one
    with pytest.raises(ValueError) as info:
        load(model, path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        f"{path}: the weights do not fit the model (another config?): "
        f"{len(own) - len(missing) - len(shape)} of {len(own)} model "
        "tensors found with their shape; "
    )
    assert f"missing {len(missing)} ({', '.join(missing[:5])}, ...)" in message
    k = shape[0]
    assert (
        f"other shape {len(shape)} ({k}: file {list(theirs[k].shape)} vs model "
        f"{list(own[k].shape)}, "
    ) in message
    assert message.endswith("unused in the file 0")
    for key, value in _numpy_state(model).items():  # nothing was loaded
        np.testing.assert_array_equal(value, own[key], err_msg=key)


def test_weights_of_the_same_config_load_every_tensor(models, tmp_path):
    model, _ = models
    source = build_tiny_detector(seed=5)
    paddle.save(source.state_dict(), str(tmp_path / "same.pdparams"))
    target = build_tiny_detector(seed=6)
    _trainer_load(target, str(tmp_path / "same"))  # the suffix may be left out
    expected = _numpy_state(source)
    for key, value in _numpy_state(target).items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)


def test_unused_names_are_summarised_in_one_short_line(models, tmp_path, caplog):
    model, _ = models
    state = dict(model.state_dict())
    extra = {f"neck.extra_{i:03d}.weight": paddle.zeros([2]) for i in range(500)}
    paddle.save(dict(state, **extra), str(tmp_path / "more.pdparams"))
    loggers = [
        logging.getLogger(name)
        for name in list(logging.Logger.manager.loggerDict)
        if name.startswith("ppdet")
    ]  # ppdet's and ours (they do not propagate)
    for log in loggers:
        log.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    try:
        _trainer_load(model, str(tmp_path / "more.pdparams"))
    finally:
        for log in loggers:
            log.removeHandler(caplog.handler)
    messages = [r.getMessage() for r in caplog.records]
    assert messages and max(len(m) for m in messages) < 1000, max(map(len, messages))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{tmp_path / 'more.pdparams'}: 500 (neck.extra_000.weight, "
        "neck.extra_001.weight, neck.extra_002.weight, neck.extra_003.weight, "
        "neck.extra_004.weight, ...) tensor(s) of the file are not used by the "
        "model"
    ]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A training checkpoint of a Linear model after one AdamW step: base path and model."""
    paddle.seed(0)
    model = paddle.nn.Linear(3, 2)
    opt = paddle.optimizer.AdamW(parameters=model.parameters())
    model(paddle.ones([1, 3])).sum().backward()
    opt.step()
    base = str(tmp_path_factory.mktemp("ckpt") / "model_final")
    save_checkpoint(base, model, opt, 1, 1)
    return base, model


@pytest.mark.parametrize(
    "suffix,kind",
    [(".pdopt", "an optimizer state (.pdopt)"), (".pdstate", "a training state (.pdstate)")],
)
def test_optimizer_or_training_state_given_as_weights_is_named(checkpoint, suffix, kind):
    base, model = checkpoint
    with pytest.raises(ValueError) as info:
        _trainer_load(model, base + suffix)
    assert str(info.value) == (f"{base}{suffix} is {kind}, not model weights; use {base}.pdparams")


def test_optimizer_state_is_recognised_by_its_content(checkpoint, tmp_path):
    base, model = checkpoint
    renamed = tmp_path / "weights.pdparams"
    renamed.write_bytes(open(base + ".pdopt", "rb").read())
    with pytest.raises(ValueError) as info:
        load_model_weights(model, str(renamed))
    assert str(info.value) == (
        f"{renamed} is an optimizer state (.pdopt), not model weights; "
        "use the .pdparams file of the checkpoint (e.g. "
        "model_final.pdparams)"
    )


def test_eval_tool_refuses_weights_of_another_config(tmp_path):
    """tools/eval.py: a non-zero exit status, the error as the last line, no evaluation."""
    config = make_tiny_setup(str(tmp_path), num_train=1, num_val=1)
    weights = str(tmp_path / "five_classes.pdparams")
    paddle.save(build_tiny_detector(num_classes=5).state_dict(), weights)  # the config has 3
    proc = subprocess.run(
        [PYTHON, os.path.join(REPO, "tools", "eval.py"), "-c", config, "-o", f"weights={weights}"],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"eval.py: error: {weights}: the weights do not fit the model (another config?): "
    ), last
    assert re.search(
        r"; other shape \d+ \(transformer\.class_heads\.0\.bias: file \[5\] vs "
        r"model \[3\], ",
        last,
    ), last
    assert "Average Precision" not in proc.stdout + proc.stderr


# ------------------------------------------------------------------ pretrain_weights
def test_pretrained_file_fitting_no_backbone_tensor_is_an_error(models, tmp_path):
    model, _ = models
    path = str(tmp_path / "other_names.pdparams")
    paddle.save({f"layer{i}.weight": paddle.ones([3]) for i in range(8)}, path)
    before = _numpy_state(model)
    with pytest.raises(ValueError) as info:
        load_pretrain_weights(model, path)
    message = str(info.value)
    backbone = sorted(k for k in before if k.startswith("backbone."))
    assert message.startswith(
        f"{path}: pretrain_weights fit no backbone tensor of the model "
        f"(0 of {len(backbone)} found with their shape; "
    )
    assert "layer0.weight, layer1.weight" in message and "\n" not in message
    for key, value in _numpy_state(model).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_pretrained_file_missing_some_backbone_tensors_warns_once(tmp_path, weights_log):
    source, target = build_tiny_detector(seed=3), build_tiny_detector(seed=4)
    state = {
        k[len("backbone.") :]: v
        for k, v in source.state_dict().items()
        if k.startswith("backbone.")
    }  # an ImageNet-style file: backbone names only
    dropped = sorted(state)[:7]
    for key in dropped:
        del state[key]
    state["fc.weight"] = paddle.ones([4, 2])  # a classifier the detector does not have
    path = str(tmp_path / "partial.pdparams")
    paddle.save(state, path)
    summary = load_pretrain_weights(target, path)
    backbone = [k for k in target.state_dict() if k.startswith("backbone.")]
    warnings = [r.getMessage() for r in weights_log.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{path}: pretrain_weights fill {len(backbone) - 7} of {len(backbone)} backbone tensors; "
        f"missing 7 ({', '.join('backbone.' + k for k in dropped[:5])}, ...); other shape 0; "
        "these keep their random initialisation"
    ]
    assert summary["unused"] == ["fc.weight"]
    loaded = _numpy_state(target)
    for key, value in state.items():
        if key != "fc.weight":
            np.testing.assert_array_equal(loaded["backbone." + key], value.numpy(), err_msg=key)


class _Runs:
    """Unpickling this calls os.system: what a crafted file does under paddle.load."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("where", ["local", "downloaded"])
def test_crafted_pretrained_file_runs_no_code(models, tmp_path, monkeypatch, where):
    """A pretrain_weights file whose pickle calls os.system: refused, the command never runs;
    also for a URL's file in ppdet's weights cache (what a download leaves there)."""
    from ppdet.utils import download

    model, _ = models
    marker = tmp_path / "ran"
    crafted = {"conv1.weight": [1.0, 2.0], "payload": _Runs(marker)}
    if where == "local":
        path = str(tmp_path / "crafted.pdparams")
    else:
        monkeypatch.setattr(download, "WEIGHTS_HOME", str(tmp_path / "weights"))
        os.makedirs(tmp_path / "weights")
        path = str(tmp_path / "weights" / "crafted.pdparams")
    with open(path, "wb") as handle:
        pickle.dump(crafted, handle, protocol=2)
    value = path if where == "local" else "https://example.invalid/models/crafted.pdparams"
    resolved = fetch_pretrain_weights(value)  # the cached file: no network access
    assert resolved == path
    with pytest.raises(
        ValueError,
        match=r"refused: the file asks to build the Python object "
        r"(posix|os)\.system",
    ):
        load_pretrain_weights(model, resolved)
    assert not marker.exists()
