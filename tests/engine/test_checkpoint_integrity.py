"""Checkpoint integrity: one token in every file of a checkpoint, a set mixed by an interrupted
rewrite refused naming the file, partial temporary files removed, the token invisible to the
weight loaders (ours and ppdet's), and the restricted reader: the same objects as paddle.load,
no code run from a crafted file."""

import os
import pickle
import signal
import subprocess
import textwrap

import numpy as np
import paddle
import pytest

from _engine_helpers import PYTHON, REPO, child_env

from ppdet_dac.engine.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    read_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from ppdet_dac.interop.paddle_files import TOKEN_KEY, load_weights_file, read_file

# Run A writes checkpoint 1; run B rewrites it and is killed (SIGKILL) while writing the
# .pdopt, after its .pdparams is in place: B's weights next to A's optimizer state and .pdstate.
REWRITE = textwrap.dedent("""
    import sys, time
    import paddle
    import ppdet_dac.engine.checkpoint as ck
    paddle.seed(0)
    model = paddle.nn.Linear(3, 2)
    opt = paddle.optimizer.AdamW(parameters=model.parameters())
    ck.save_checkpoint(sys.argv[1] + '/1', model, opt, 1, 10)           # run A
    with paddle.no_grad():
        model.weight.set_value(model.weight + 1)                        # run B's weights
    real_save, calls = paddle.save, []
    def save(obj, path, **kw):
        calls.append(path)
        real_save(obj, path, **kw)
        if len(calls) == 2:                                             # B's .pdopt: half of it
            with open(path, 'r+b') as f:
                f.truncate(40)
            print('WRITING', flush=True)
            time.sleep(600)
    paddle.save = save
    ck.save_checkpoint(sys.argv[1] + '/1', model, opt, 2, 20)           # run B, killed
""")


def _model():
    paddle.seed(0)
    model = paddle.nn.Linear(3, 2)
    return model, paddle.optimizer.AdamW(parameters=model.parameters())


@pytest.fixture
def checkpoint_log(caplog):
    """Records of ppdet_dac.engine.checkpoint's logger (ppdet loggers do not propagate)."""
    import logging

    log = logging.getLogger("ppdet_dac.engine.checkpoint")
    log.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    yield caplog
    log.removeHandler(caplog.handler)


def test_interrupted_rewrite_is_refused_and_its_partial_file_removed(tmp_path, checkpoint_log):
    proc = subprocess.Popen(
        [PYTHON, "-c", REWRITE, str(tmp_path)],
        cwd=REPO,
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert "WRITING" in (line.strip() for line in iter(proc.stdout.readline, ""))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    base = str(tmp_path / "1")
    partial = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(partial) == 1 and partial[0].startswith(".1.pdopt.")
    # the mix: run B's weights (A's + 1), run A's optimizer state and .pdstate
    a_state, b_params = paddle.load(base + ".pdstate"), paddle.load(base + ".pdparams")
    model, opt = _model()
    np.testing.assert_allclose(b_params["weight"].numpy(), model.weight.numpy() + 1)
    assert a_state["epochs_done"] == 1 and paddle.load(base + ".pdopt")["last_epoch"] == 1
    assert b_params[TOKEN_KEY] != a_state[TOKEN_KEY]
    with pytest.raises(
        ValueError,
        match=rf"checkpoint {base} is mixed from different writes: "
        rf"\['{base}\.pdparams'\] does not come from the "
        rf"write of {base}\.pdstate",
    ):
        load_checkpoint(base, model, opt)
    np.testing.assert_array_equal(model.weight.numpy(), _model()[0].weight.numpy())  # untouched
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]  # removed at the resume
    assert (
        f"removed {tmp_path / partial[0]} (40 bytes), a partial checkpoint file"
        in checkpoint_log.text
    )
    assert latest_checkpoint(str(tmp_path)) is None


def test_every_file_holds_the_token_and_loaders_leave_it_out(tmp_path):
    from ppdet.utils.checkpoint import load_pretrain_weight, load_weight
    from ppdet_dac.analysis.dump import load_model_weights
    from ppdet_dac.engine.pretrained import load_pretrain_weights

    model, opt = _model()
    base = str(tmp_path / "0")
    save_checkpoint(base, model, opt, 1, 4)
    tokens = {s: paddle.load(base + s)[TOKEN_KEY] for s in (".pdparams", ".pdopt", ".pdstate")}
    assert len(set(tokens.values())) == 1 and len(tokens[".pdstate"]) == 32
    save_checkpoint(base, model, opt, 1, 4)
    assert paddle.load(base + ".pdparams")[TOKEN_KEY] != tokens[".pdparams"]  # new per write
    state, opt_state, params = read_checkpoint(base)
    assert TOKEN_KEY not in state and TOKEN_KEY not in opt_state and TOKEN_KEY not in params
    expected = {k: v.numpy() for k, v in model.state_dict().items()}
    assert load_weights_file(base)[1].keys() == expected.keys()
    loaders = [
        lambda m: load_model_weights(m, base),  # strict about extra keys
        lambda m: load_pretrain_weights(m, base + ".pdparams"),
        lambda m: load_weight(m, base),  # ppdet's -r
        lambda m: load_pretrain_weight(m, base),
    ]  # ppdet's weights=
    for load in loaders:
        paddle.seed(1)
        other = paddle.nn.Linear(3, 2)
        assert not np.array_equal(other.weight.numpy(), expected["weight"])
        load(other)
        for key, value in other.state_dict().items():
            np.testing.assert_array_equal(value.numpy(), expected[key], err_msg=key)


def test_stale_temporaries_go_at_the_next_save(tmp_path):
    stale = tmp_path / ".3.pdparams.0a1b2c3d.tmp"
    stale.write_bytes(b"\0" * 1000)
    unrelated = [tmp_path / ".notes.tmp", tmp_path / "3.pdparams.0a1b2c3d.tmp"]
    for path in unrelated:
        path.write_bytes(b"x")
    model, opt = _model()
    save_checkpoint(str(tmp_path / "4"), model, opt, 5, 20)
    assert not stale.exists() and all(path.exists() for path in unrelated)
    assert remove_stale_temporaries(str(tmp_path)) == []


class _Runs:
    """Unpickling this calls os.system: what a crafted file does under paddle.load."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_read_file_returns_what_paddle_load_does_and_runs_no_code(tmp_path):
    class Ema:  # EMA on: raw weights, EMA state and every kind of value in the .pdstate
        step = 3
        state_dict = {"weight": paddle.ones([2, 3]), "bias": paddle.zeros([2])}

        def apply(self):
            return self.state_dict

    model, opt = _model()
    model(paddle.ones([1, 3])).sum().backward()
    opt.step()
    base = str(tmp_path / "iter_7")
    save_checkpoint(base, model, opt, 1, 7, ema=Ema(), epoch_step=3)

    def same(a, b, where):
        assert type(a) is type(b), where
        if isinstance(a, dict):
            assert list(a) == list(b), where
            for key in a:
                same(a[key], b[key], f"{where}/{key}")
        elif isinstance(a, (list, tuple)):
            assert len(a) == len(b), where
            for i, (x, y) in enumerate(zip(a, b)):
                same(x, y, f"{where}[{i}]")
        elif isinstance(a, paddle.Tensor):
            assert a.dtype == b.dtype, where
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=where)
        elif type(a).__name__ == "GeneratorState":
            assert a.current_seed() == b.current_seed(), where
        else:
            assert a == b, where

    for suffix in (".pdparams", ".pdopt", ".pdstate"):
        same(paddle.load(base + suffix), read_file(base + suffix), suffix)

    marker = tmp_path / "ran"
    crafted = tmp_path / "crafted.pdparams"
    with open(crafted, "wb") as handle:
        pickle.dump({"weight": _Runs(marker)}, handle, protocol=4)
    with pytest.raises(
        ValueError,
        match=rf"{crafted}: refused: the file asks to build the "
        r"Python object posix\.system",
    ):
        load_weights_file(str(crafted))
    assert not marker.exists()
    paddle.load(str(crafted))  # what the file does when paddle.load reads it
    assert marker.exists()
    # a crafted .pdstate in a checkpoint is refused on resume the same way
    marker.unlink()
    with open(base + ".pdstate", "wb") as handle:
        pickle.dump({TOKEN_KEY: "x", "rng": _Runs(marker)}, handle, protocol=4)
    with pytest.raises(ValueError, match=r"iter_7\.pdstate: refused"):
        load_checkpoint(base, *_model())
    assert not marker.exists()


def test_checkpoint_of_the_earlier_layout_still_resumes(tmp_path):
    """Written before the .pdparams held the token (.pdstate key 'token'): resumed with a
    warning, its .pdopt still checked against its .pdstate."""
    model, opt = _model()
    base = str(tmp_path / "2")
    save_checkpoint(base, model, opt, 3, 12)
    params, state = paddle.load(base + ".pdparams"), paddle.load(base + ".pdstate")
    del params[TOKEN_KEY]
    state["token"] = state.pop(TOKEN_KEY)
    paddle.save(params, base + ".pdparams")
    paddle.save(state, base + ".pdstate")
    assert load_checkpoint(base, *_model())["epochs_done"] == 3
    assert latest_checkpoint(str(tmp_path)) == base
    opt_state = paddle.load(base + ".pdopt")
    opt_state[TOKEN_KEY] = "another write"
    paddle.save(opt_state, base + ".pdopt")
    with pytest.raises(ValueError, match=r"\['[^']*2\.pdopt'\] does not come from the write"):
        load_checkpoint(base, *_model())
