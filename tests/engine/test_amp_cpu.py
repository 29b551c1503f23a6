"""`--amp` on CPU: Paddle 3.3's auto_cast does nothing on CPU (bfloat16 included; see
tests/ops/test_op_amp.py), so DACTrainer says so and trains in float32: a run with --amp gives the
same float32 parameters, bit for bit, as the same run without it."""

import os
import subprocess

import numpy as np
import pytest

from _engine_helpers import PYTHON, REPO, child_env, load_params, make_tiny_setup

pytestmark = pytest.mark.slow


def test_amp_on_cpu_warns_and_trains_in_float32(tmp_path):
    config = make_tiny_setup(str(tmp_path), epoch=1, num_train=2)  # one step of batch 2
    # the two runs are independent single-thread processes: started together, they take the
    # time of one on an idle 2-core machine
    flags = {"amp": ["--amp"], "plain": []}
    procs = {
        name: subprocess.Popen(
            [
                PYTHON,
                os.path.join(REPO, "tools", "train.py"),
                "-c",
                config,
                *flags[name],
                "--seed",
                "3",
                "-o",
                f"save_dir={tmp_path / name}",
            ],
            cwd=REPO,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in flags
    }
    runs = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)  # a hang guard
        log = out + err
        assert proc.returncode == 0, log[-3000:]
        warned = [l for l in log.splitlines() if "--amp needs a GPU" in l]
        assert len(warned) == (1 if flags[name] else 0), log[-3000:]
        if flags[name]:
            assert "float32" in warned[0]
        runs[name] = load_params(
            tmp_path / name / os.path.basename(config)[:-4] / "model_final.pdparams"
        )
    assert runs["amp"].keys() == runs["plain"].keys()
    for key, value in runs["plain"].items():
        assert value.dtype == np.float32 and runs["amp"][key].dtype == np.float32, key
        assert runs["amp"][key].tobytes() == value.tobytes(), key
