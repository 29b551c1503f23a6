"""`python -m ppdet_dac.ops.selfcheck` on CPU: it says that CUDA is absent (exit 2); its GPU path
(comparison, verdict, exit status) run with the CPU standing in for the GPU; the kink mask."""

import io
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from ppdet_dac import ops
from ppdet_dac.ops import _library, selfcheck

from _common import REPO

pytestmark = pytest.mark.skipif(
    not ops.op_available(), reason=f"op library not built: {_library.load_error()}"
)


@pytest.mark.skipif(paddle.is_compiled_with_cuda(), reason="this Paddle has CUDA")
def test_cpu_paddle_reports_cuda_absent():
    proc = subprocess.run(
        [sys.executable, "-m", "ppdet_dac.ops.selfcheck"],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr[-2000:]
    lines = [l for l in proc.stdout.splitlines() if l.startswith("ms_deform_attn self-check:")]
    assert len(lines) == 2, proc.stdout
    assert lines[0].endswith(f"(built with CUDA: False, CPU kernels: {_library.cpu_variant()})")
    assert lines[1] == (
        "ms_deform_attn self-check: CUDA is absent: this Paddle "
        f"({paddle.__version__}) is not compiled with CUDA; install "
        "requirements-gpu.txt on a CUDA machine; nothing was compared"
    )


def test_cuda_paddle_without_a_visible_gpu_reports_cuda_absent(monkeypatch, capsys):
    monkeypatch.setattr(paddle, "is_compiled_with_cuda", lambda: True)
    monkeypatch.setattr(paddle.device.cuda, "device_count", lambda: 0)
    assert selfcheck.main([]) == 2
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("ms_deform_attn self-check: CUDA is absent: this Paddle")
    assert "sees no GPU (check the driver and CUDA_VISIBLE_DEVICES)" in last


def test_gpu_with_a_cpu_only_library_is_an_error(monkeypatch, capsys):
    monkeypatch.setattr(selfcheck, "cuda_status", lambda: (True, "GPU 0 stand-in"))
    monkeypatch.setattr(_library, "built_with_cuda", lambda: False)
    assert selfcheck.main([]) == 1
    assert "GPU 0 stand-in, but the op library was built without CUDA" in capsys.readouterr().out


@pytest.fixture
def cpu_as_gpu(monkeypatch):
    """The self-check's GPU path with the CPU standing in for GPU 0; returns the list of places
    run_op was called with."""
    monkeypatch.setattr(selfcheck, "cuda_status", lambda: (True, "GPU 0 stand-in (CPU)"))
    monkeypatch.setattr(_library, "built_with_cuda", lambda: True)
    stand_in = paddle.CPUPlace()
    monkeypatch.setattr(paddle, "CUDAPlace", lambda index: stand_in)
    places = []
    real_run_op = selfcheck.run_op

    def spy(arrays, place):
        places.append(place)
        return real_run_op(arrays, place)

    monkeypatch.setattr(selfcheck, "run_op", spy)
    return places


def test_gpu_path_passes_when_both_sides_agree(cpu_as_gpu, capsys):
    assert selfcheck.main([]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [l for l in out if l.startswith(("float32 ", "float64 "))]
    assert len(rows) == 2 * len(selfcheck.CASES) * 4
    assert all(" ok" in l for l in rows)
    assert out[-1] == f"RESULT: PASS: the GPU op matches the CPU op ({len(rows)} comparisons)"
    assert len(cpu_as_gpu) == 2 * 2 * len(selfcheck.CASES)  # candidate + reference per case


def test_gpu_path_fails_on_a_wrong_gradient(cpu_as_gpu, monkeypatch, capsys):
    """A candidate whose grad_attention_weights is off by 1e-3 * scale in one element."""
    calls = {"n": 0}
    spy = selfcheck.run_op

    def wrong_on_gpu(arrays, place):
        result = spy(arrays, place)
        calls["n"] += 1
        if calls["n"] % 2 == 1:  # check_cases calls the candidate first
            g = result["grad_attention_weights"]
            g.reshape(-1)[g.size // 2] += 1e-3 * max(1.0, np.abs(g).max())
        return result

    monkeypatch.setattr(selfcheck, "run_op", wrong_on_gpu)
    assert selfcheck.main([]) == 1
    out = capsys.readouterr().out.splitlines()
    bad = [l for l in out if "MISMATCH" in l]
    assert len(bad) == 2 * len(selfcheck.CASES)
    assert all(" grad_attention_weights " in l for l in bad)
    assert out[-1].startswith(
        f"RESULT: FAIL: {len(bad)} of {8 * len(selfcheck.CASES)} "
        "comparisons exceed their thresholds: float32/dac-encoder-reduced/"
        "grad_attention_weights"
    )


def test_op_matches_grid_sample_reference_under_the_selfcheck_thresholds():
    """The comparison engine with an independent reference: the op (CPU) against the pure-Paddle
    grid_sample implementation with autograd."""

    def reference(arrays):
        names = ("value", "spatial_shapes", "level_start_index", "loc", "attn")
        tensors = [paddle.to_tensor(arrays[k]) for k in names]
        for t in (tensors[0], tensors[3], tensors[4]):
            t.stop_gradient = False
        out = ops.ms_deform_attn_reference(*tensors)
        (out * paddle.to_tensor(arrays["grad_out"])).sum().backward()
        return {
            "out": out.numpy(),
            "grad_value": tensors[0].grad.numpy(),
            "grad_sampling_locations": tensors[3].grad.numpy(),
            "grad_attention_weights": tensors[4].grad.numpy(),
        }

    rows = selfcheck.check_cases(
        lambda a: selfcheck.run_op(a, paddle.CPUPlace()), reference, out=io.StringIO()
    )
    assert len(rows) == 2 * len(selfcheck.CASES) * 4
    assert [r for r in rows if not r["ok"]] == []
    assert max(r["max_abs"] for r in rows if r["dtype"] == "float64") < 1e-11


def test_kink_mask_hand_computed():
    """H = 2, W = 4: u = x * 4 - 0.5 and v = y * 2 - 0.5; integers inside (-1, size) are kinks."""
    shapes = np.array([[2, 4]], "int64")
    xs = [0.125, 0.375, 0.3, -0.125, 1.125, 0.25]  # u = 0, 1, 0.7, -1, 4, 0.5
    ys = [0.25, 0.6, 0.75, 0.5, 1.25, 0.0]  # v = 0, 0.7, 1, 0.5, 2, -0.5
    loc = np.array([xs, ys], "float64").T.reshape(1, 6, 1, 1, 1, 2)
    mask = selfcheck.kink_mask(loc, shapes).reshape(6, 2)
    assert mask[:, 0].tolist() == [True, True, False, False, False, False]
    assert mask[:, 1].tolist() == [True, False, True, False, False, False]
