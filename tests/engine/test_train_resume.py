"""Training with DACTrainer: exact resume after a kill (at an epoch end and in the middle of an
epoch, with -r auto), crash-safe checkpoints, the NaN guard."""

import os
import signal
import subprocess
import textwrap

import numpy as np
import paddle
import pytest

from _engine_helpers import PYTHON, REPO, child_env, load_params, make_tiny_setup, run_train

pytestmark = pytest.mark.slow

PROBE = os.path.join(REPO, "tests", "engine", "_fault_probe.py")
# iteration checkpoints after every step, the last 2 kept (they do not change the training)
SNAPSHOTS = ["snapshot_iter=1", "max_checkpoints=2"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_setup(str(tmp_path_factory.mktemp("tiny")), epoch=2)


@pytest.fixture(scope="module")
def straight_run(tiny, tmp_path_factory):
    """An uninterrupted run (seed 3, 2 epochs x 4 iterations): (checkpoint folder, its log)."""
    out = str(tmp_path_factory.mktemp("straight"))
    proc = run_train(tiny, "--seed", "3", "-o", f"save_dir={out}", *SNAPSHOTS)
    return os.path.join(out, "tiny"), proc.stdout + proc.stderr


def _epoch_lines(log):
    return [line.split("INFO: ")[1] for line in log.splitlines() if ": mean loss" in line]


def _probed_run(tiny, out, marker):
    """The same command each time: tools/train.py -r auto, SIGKILLed at iteration 6 (epoch 1,
    after 2 of its 4 batches, iter_6 written) unless ``marker`` exists; (returncode, log)."""
    cmd = [
        PYTHON,
        PROBE,
        f"kill:0:6:{marker}",
        "train",
        "-c",
        tiny,
        "--seed",
        "3",
        "-r",
        "auto",
        "-o",
        f"save_dir={out}",
        *SNAPSHOTS,
    ]
    proc = subprocess.run(
        cmd, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=600
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def killed_run(tiny, tmp_path_factory):
    """The probed run killed (SIGKILL) in the middle of epoch 1, once, for both resume tests:
    (save_dir, marker, log). Its epoch-0 checkpoint was complete before the kill."""
    root = tmp_path_factory.mktemp("killed")
    out, marker = root / "out", root / "killed"
    code, log = _probed_run(tiny, out, marker)
    assert code == -signal.SIGKILL, log[-3000:]
    return out, marker, log


def test_resume_after_kill_gives_identical_parameters(tiny, straight_run, killed_run, tmp_path):
    straight = straight_run[0]
    killed = killed_run[0] / "tiny"
    assert os.path.exists(killed / "0.pdstate")
    # resumed from the killed run's epoch-0 checkpoint into a folder of its own; a resumed run
    # takes no pretrain weights (this URL would fail: nothing listens there)
    resumed = str(tmp_path / "resumed")
    run_train(
        tiny,
        "--seed",
        "3",
        "-o",
        f"save_dir={resumed}",
        *SNAPSHOTS,
        "pretrain_weights=http://127.0.0.1:9/unreachable.pdparams",
        "-r",
        str(killed / "0"),
    )

    a = load_params(os.path.join(straight, "model_final.pdparams"))
    b = load_params(os.path.join(resumed, "tiny", "model_final.pdparams"))
    assert sorted(a) == sorted(b)
    first = load_params(os.path.join(straight, "0.pdparams"))
    assert any(not np.array_equal(first[k], a[k]) for k in a)  # the second epoch trained
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    state_a = paddle.load(os.path.join(straight, "model_final.pdstate"))
    state_b = paddle.load(os.path.join(resumed, "tiny", "model_final.pdstate"))
    assert state_a["global_iter"] == state_b["global_iter"] == 8  # 2 epochs x 4 iterations


def test_mid_epoch_kill_and_auto_resume_give_identical_parameters(tiny, straight_run, killed_run):
    straight, straight_log = straight_run
    # iteration checkpoints: every step except the epoch ends (4, 8), the 2 newest kept
    assert sorted(os.listdir(straight)) == [
        f"{base}{s}"
        for base in ("0", "iter_6", "iter_7", "model_final")
        for s in (".pdopt", ".pdparams", ".pdstate")
    ]
    assert paddle.load(os.path.join(straight, "iter_6.pdstate"))["epoch_step"] == 2
    # the same command three times. 1 (killed_run): -r auto starts fresh; SIGKILL at
    # iteration 6
    out, marker, log = killed_run
    assert "no complete checkpoint" in log and marker.exists()
    assert not (out / "tiny" / "model_final.pdstate").exists()
    # 2: resumes from iter_6, skips the 2 trained batches, completes as the uninterrupted run
    code, log = _probed_run(tiny, out, marker)
    assert code == 0, log[-3000:]
    assert f"resuming from {out / 'tiny' / 'iter_6'}," in log
    assert "epoch 1: resuming at batch 2 of 4" in log
    a = load_params(os.path.join(straight, "model_final.pdparams"))
    b = load_params(out / "tiny" / "model_final.pdparams")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert paddle.load(str(out / "tiny" / "model_final.pdstate"))["global_iter"] == 8
    # epoch 1's mean loss covers its 2 batches before the kill too
    assert _epoch_lines(log) == _epoch_lines(straight_log)[1:]
    # 3: finds the finished run and trains nothing
    code, log = _probed_run(tiny, out, marker)
    assert code == 0 and f"resuming from {out / 'tiny' / 'model_final'}," in log
    assert "saved checkpoint" not in log and "Epoch: [" not in log


KILL_WRITER = textwrap.dedent("""
    import sys, time
    import paddle
    import ppdet_dac.engine.checkpoint as ck
    model = paddle.nn.Linear(3, 2)
    opt = paddle.optimizer.AdamW(parameters=model.parameters())
    ck.save_checkpoint(sys.argv[1] + '/1', model, opt, 1, 10)
    real_save = paddle.save
    def slow_save(obj, path, **kw):
        real_save(obj, path, **kw)
        with open(path, 'r+b') as f:      # half-written: truncated, then stuck
            f.truncate(7)
        print('WRITING', flush=True)
        time.sleep(600)
    paddle.save = slow_save
    with paddle.no_grad():
        model.weight.set_value(model.weight + 1)
    ck.save_checkpoint(sys.argv[1] + '/1', model, opt, 2, 20)
""")


def test_kill_during_checkpoint_write_keeps_previous_checkpoint(tmp_path):
    from ppdet_dac.engine.checkpoint import load_checkpoint

    proc = subprocess.Popen(
        [PYTHON, "-c", KILL_WRITER, str(tmp_path)],
        cwd=REPO,
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = iter(proc.stdout.readline, "")
    assert "WRITING" in (line.strip() for line in lines)  # ppdet prints warnings first
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # The interrupted write overwrote nothing: the checkpoint is still the first one.
    model = paddle.nn.Linear(3, 2)
    opt = paddle.optimizer.AdamW(parameters=model.parameters())
    state = load_checkpoint(str(tmp_path / "1"), model, opt)
    assert [state["epochs_done"], state["global_iter"]] == [1, 10]
    saved = paddle.load(str(tmp_path / "1.pdparams"))
    np.testing.assert_array_equal(model.weight.numpy(), saved["weight"].numpy())
    leftovers = sorted(os.listdir(tmp_path))
    assert sorted(n for n in leftovers if not n.startswith(".")) == [
        "1.pdopt",
        "1.pdparams",
        "1.pdstate",
    ]


def test_incomplete_or_mixed_checkpoint_is_refused(tmp_path):
    from ppdet_dac.engine.checkpoint import load_checkpoint, save_checkpoint

    model = paddle.nn.Linear(3, 2)
    opt = paddle.optimizer.AdamW(parameters=model.parameters())
    save_checkpoint(str(tmp_path / "a"), model, opt, 1, 4)
    save_checkpoint(str(tmp_path / "b"), model, opt, 2, 8)
    os.replace(tmp_path / "b.pdopt", tmp_path / "a.pdopt")  # a mixed pair
    with pytest.raises(ValueError, match="different writes"):
        load_checkpoint(str(tmp_path / "a"), model, opt)
    with pytest.raises(FileNotFoundError, match=r"b\.pdopt"):  # an incomplete one
        load_checkpoint(str(tmp_path / "b.pdparams"), model, opt)


NAN_PROBE = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1] + '/tools')
    import train
    from ppdet_dac.modeling.criterion import DACCriterion
    real_forward, calls = DACCriterion.forward, [0]
    def forward(self, *args, **kwargs):
        losses = real_forward(self, *args, **kwargs)
        calls[0] += 1
        if calls[0] == 3:                     # epoch 1, iteration 0 (2 iterations per epoch)
            losses['loss_giou_0_one2one'] = losses['loss_giou_0_one2one'] * float('nan')
            losses['loss'] = losses['loss'] * float('nan')
        return losses
    DACCriterion.forward = forward
    train.main(sys.argv[2:])
""")


def test_nan_loss_stops_with_message_and_keeps_checkpoint(tmp_path):
    config = make_tiny_setup(str(tmp_path), epoch=3, num_train=4)
    proc = subprocess.run(
        [PYTHON, "-c", NAN_PROBE, REPO, "-c", config, "--seed", "0"],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("FloatingPointError")
    assert "epoch 1, iteration 0" in last and "global iteration 2" in last
    assert "'loss_giou_0_one2one'" in last and "'loss'" in last and "loss_ce'" not in last
    out = os.path.join(str(tmp_path), "out", "tiny")
    assert sorted(os.listdir(out)) == ["0.pdopt", "0.pdparams", "0.pdstate"]
    state = paddle.load(os.path.join(out, "0.pdstate"))
    assert state["epochs_done"] == 1 and state["global_iter"] == 2


def test_resume_with_ema_restores_ema_and_raw_weights(tiny, tmp_path):
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    run_train(tiny, "-o", f"save_dir={straight}", "use_ema=true")
    os.makedirs(os.path.join(resumed, "tiny"))
    for suffix in (".pdparams", ".pdopt", ".pdstate"):
        with (
            open(os.path.join(straight, "tiny", "0" + suffix), "rb") as src,
            open(os.path.join(resumed, "tiny", "0" + suffix), "wb") as dst,
        ):
            dst.write(src.read())
    run_train(
        tiny, "-o", f"save_dir={resumed}", "use_ema=true", "-r", os.path.join(resumed, "tiny", "0")
    )
    a = paddle.load(os.path.join(straight, "tiny", "model_final.pdstate"))
    b = paddle.load(os.path.join(resumed, "tiny", "model_final.pdstate"))
    ema_a = load_params(os.path.join(straight, "tiny", "model_final.pdparams"))
    ema_b = load_params(os.path.join(resumed, "tiny", "model_final.pdparams"))
    for key in ema_a:  # .pdparams holds the EMA weights, .pdstate the raw ones
        np.testing.assert_array_equal(ema_a[key], ema_b[key], err_msg=key)
        np.testing.assert_array_equal(
            a["raw_weights"][key].numpy(), b["raw_weights"][key].numpy(), err_msg=key
        )
    assert any(not np.array_equal(ema_a[k], a["raw_weights"][k].numpy()) for k in ema_a)
