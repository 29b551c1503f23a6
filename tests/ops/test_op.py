"""The compiled ms_deform_attn op: forward and gradients against the NumPy transcription, finite
differences and the grid_sample reference; determinism; dispatch; the op inside the tiny detector;
malformed inputs; CUDA (skipped without a CUDA build)."""

import importlib
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from ppdet_dac import ops
from ppdet_dac.ops import _library
from ppdet_dac.ops import ms_deform_attn, ms_deform_attn_reference

from _msda_helpers import make_inputs, naive_msda, to_paddle

paddle.set_device("cpu")
HERE = os.path.dirname(os.path.abspath(__file__))
# the dispatch module (the package attribute of the same name is the function)
dispatch = importlib.import_module("ppdet_dac.ops.ms_deform_attn")

pytestmark = pytest.mark.skipif(
    not ops.op_available(), reason=f"op library not built: {_library.load_error()}"
)

GRAD_KEYS = ("value", "loc", "attn")

# (levels (H, W), batch, queries, heads, channels, points)
SHAPE_CASES = [
    ([(6, 7), (3, 4)], 2, 5, 2, 3, 2),
    ([(1, 5), (4, 1), (1, 1)], 1, 4, 2, 5, 3),  # levels with H = 1 and/or W = 1
    ([(5, 5)], 3, 1, 1, 7, 4),  # batch 3, one query, odd channels
    ([(8, 6), (4, 3), (2, 2), (1, 1)], 3, 9, 3, 32, 2),  # D = 32: the unrolled kernel
]


@pytest.fixture(autouse=True)
def _default_dispatch(monkeypatch):
    """Each test starts from the default dispatch (no forcing, no env var) and leaves it so."""
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    previous = ops.force_reference(None)
    yield
    ops.force_reference(previous)


def _inputs(case, seed, **kwargs):
    shapes, batch, queries, heads, channels, points = case
    return make_inputs(
        shapes,
        batch=batch,
        num_queries=queries,
        heads=heads,
        channels=channels,
        points=points,
        seed=seed,
        **kwargs,
    )


def _naive(arrays):
    return naive_msda(
        arrays["value"],
        arrays["spatial_shapes"],
        arrays["level_start_index"],
        arrays["loc"],
        arrays["attn"],
    )


def _op_grads(fn, arrays, grad_out):
    """(out, {value, loc, attn: grad}) of ``fn`` for the loss sum(out * grad_out)."""
    tensors = to_paddle(arrays, stop_gradient=False)
    out = fn(*tensors)
    (out * paddle.to_tensor(grad_out)).sum().backward()
    grads = {k: t.grad.numpy() for k, t in zip(GRAD_KEYS, (tensors[0], tensors[3], tensors[4]))}
    return out.numpy(), grads


# --- forward ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", SHAPE_CASES)
@pytest.mark.parametrize("dtype,atol", [("float64", 1e-10), ("float32", 1e-5)])
def test_forward_matches_numpy_and_reference(case, dtype, atol):
    arrays = _inputs(case, seed=7, dtype=dtype)
    tensors = to_paddle(arrays)
    out = ms_deform_attn(*tensors)
    assert dispatch.selected_backend(tensors[0])[0] == "op"
    assert out.dtype == tensors[0].dtype
    expected = _naive(arrays)
    assert out.shape == list(expected.shape)
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=atol)
    np.testing.assert_allclose(
        out.numpy(), ms_deform_attn_reference(*tensors).numpy(), rtol=0, atol=atol
    )


def test_forward_hand_computed_sample():
    """One head, one channel, a 2x2 map: loc (0.5, 0.5) is the centre, the mean of the 4 values;
    loc (0.25, 0.25) is pixel (0, 0); loc (0, 0) is a quarter of pixel (0, 0); (1.5, 0.5) is off."""
    value = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 4, 1, 1)
    locs = np.array([[0.5, 0.5], [0.25, 0.25], [0.0, 0.0], [1.5, 0.5]]).reshape(1, 4, 1, 1, 1, 2)
    attn = np.full((1, 4, 1, 1, 1), 2.0)
    arrays = {
        "value": value,
        "spatial_shapes": np.array([[2, 2]], "int64"),
        "level_start_index": np.array([0], "int64"),
        "loc": locs,
        "attn": attn,
    }
    out = ms_deform_attn(*to_paddle(arrays)).numpy().reshape(-1)
    np.testing.assert_allclose(out, [2.0 * 2.5, 2.0 * 1.0, 2.0 * 0.25, 0.0], rtol=0, atol=1e-12)


def test_non_finite_and_far_locations_sample_nothing():
    """NaN, +-inf and huge locations contribute zero and zero gradients (no out-of-range reads)."""
    arrays = make_inputs([(4, 5), (2, 3)], batch=2, num_queries=4, heads=2, channels=3, seed=11)
    flat = arrays["loc"].reshape(-1, 2)
    bad = [np.nan, np.inf, -np.inf, 1e30, -1e30]
    for i, v in enumerate(bad):
        flat[5 * i, i % 2] = v
        flat[5 * i + 1] = v
    out, grads = _op_grads(ms_deform_attn, arrays, np.ones((2, 4, 6)))
    bad_rows = np.zeros(flat.shape[0], bool)
    bad_rows[[5 * i for i in range(5)] + [5 * i + 1 for i in range(5)]] = True
    clean = dict(
        arrays,
        attn=np.where(bad_rows.reshape(arrays["attn"].shape), 0.0, arrays["attn"]),
        loc=np.where(bad_rows.reshape(arrays["attn"].shape)[..., None], 0.5, arrays["loc"]),
    )
    np.testing.assert_allclose(out, _naive(clean), rtol=0, atol=1e-10)
    assert np.isfinite(grads["value"]).all()
    assert np.all(grads["loc"].reshape(-1, 2)[bad_rows] == 0)
    assert (grads["attn"].reshape(-1)[bad_rows] == 0).all()


# --- gradients -------------------------------------------------------------------------------


def _central_difference(fn, arrays, key, grad_out, eps):
    """d sum(fn(arrays) * grad_out) / d arrays[key], by central differences (float64)."""
    base = arrays[key]
    grad = np.zeros_like(base)
    for idx in np.ndindex(base.shape):
        vals = []
        for sign in (1.0, -1.0):
            moved = base.copy()
            moved[idx] += sign * eps
            out = fn(*to_paddle(dict(arrays, **{key: moved}))).numpy()
            vals.append((out * grad_out).sum())
        grad[idx] = (vals[0] - vals[1]) / (2.0 * eps)
    return grad


@pytest.mark.parametrize(
    "case",
    [
        ([(3, 4), (2, 3)], 1, 2, 2, 3, 2),
        ([(1, 3), (2, 1)], 2, 1, 1, 2, 2),  # H = 1 / W = 1 levels, batch 2, one query
    ],
)
def test_grad_matches_finite_differences_float64(case):
    arrays = _inputs(case, seed=5, borders=False)
    grad_out = np.random.default_rng(1).standard_normal(_naive(arrays).shape)
    _, grads = _op_grads(ms_deform_attn, arrays, grad_out)
    assert np.abs(grads["loc"]).max() > 0.1  # the check is not vacuous
    for key, eps in (("value", 1e-6), ("loc", 1e-7), ("attn", 1e-6)):
        numeric = _central_difference(ms_deform_attn, arrays, key, grad_out, eps)
        np.testing.assert_allclose(grads[key], numeric, rtol=1e-6, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("case", SHAPE_CASES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_grad_matches_reference_autograd(case, dtype):
    arrays = _inputs(case, seed=9, dtype=dtype, borders=False)
    grad_out = np.random.default_rng(2).standard_normal(_naive(arrays).shape).astype(dtype)
    _, op_grads = _op_grads(ms_deform_attn, arrays, grad_out)
    _, ref_grads = _op_grads(ms_deform_attn_reference, arrays, grad_out)
    rel = 1e-5 if dtype == "float32" else 1e-10
    for key in GRAD_KEYS:
        scale = max(1.0, np.abs(ref_grads[key]).max())
        np.testing.assert_allclose(
            op_grads[key], ref_grads[key], rtol=0, atol=rel * scale, err_msg=key
        )


def test_backward_is_bitwise_deterministic():
    """Many queries hit the same value rows, so grad_value sums depend on order; two runs (same
    thread count) must agree bit for bit."""
    arrays, grad_out = _determinism_case()
    runs = [_op_grads(ms_deform_attn, arrays, grad_out)[1] for _ in range(2)]
    for key in GRAD_KEYS:
        assert runs[0][key].tobytes() == runs[1][key].tobytes(), key
    ref = _op_grads(ms_deform_attn_reference, arrays, grad_out)[1]["value"]
    np.testing.assert_allclose(runs[0]["value"], ref, rtol=0, atol=1e-5 * np.abs(ref).max())


_ONE_THREAD_GRADS = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from test_op import GRAD_KEYS, _determinism_case, _op_grads
from ppdet_dac.ops import ms_deform_attn
arrays, grad_out = _determinism_case()
np.savez(sys.argv[2], **_op_grads(ms_deform_attn, arrays, grad_out)[1])
"""


def _determinism_case():
    arrays = make_inputs(
        [(6, 8), (3, 4)],
        batch=2,
        num_queries=300,
        heads=4,
        channels=32,
        points=4,
        seed=3,
        dtype="float32",
        spread=0.0,
    )
    return arrays, np.random.default_rng(4).standard_normal((2, 300, 128)).astype("float32")


def test_backward_same_bits_with_one_thread(tmp_path):
    """The backward's summation order does not depend on the thread count: a process with
    OMP_NUM_THREADS=1 gives the same bits as this one (all cores unless OMP_NUM_THREADS is set)."""
    arrays, grad_out = _determinism_case()
    here = _op_grads(ms_deform_attn, arrays, grad_out)[1]
    out = str(tmp_path / "grads.npz")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop(ops.ENV_VAR, None)
    proc = subprocess.run(
        [sys.executable, "-c", _ONE_THREAD_GRADS, HERE, out],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as one_thread:
        for key in GRAD_KEYS:
            assert one_thread[key].tobytes() == here[key].tobytes(), key


# --- dispatch --------------------------------------------------------------------------------


class _Counter:
    """Wraps a function and counts its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args):
        self.calls += 1
        return self.fn(*args)


@pytest.fixture
def counters(monkeypatch):
    """Counting wrappers around the op call and the reference, as the dispatcher sees them."""
    op, ref = _Counter(_library.run_op), _Counter(dispatch.ms_deform_attn_reference)
    monkeypatch.setattr(_library, "run_op", op)
    monkeypatch.setattr(dispatch, "ms_deform_attn_reference", ref)
    return {"op": op, "reference": ref}


def _small_call(dtype="float32"):
    arrays = make_inputs([(3, 4), (2, 2)], batch=1, num_queries=3, seed=0, dtype=dtype)
    tensors = to_paddle(arrays)
    return tensors, ms_deform_attn(*tensors), _naive(arrays)


def test_default_dispatch_uses_the_op(counters):
    assert ops.op_available()
    assert _library.cpu_variant() in ("avx2+fma", "generic")
    tensors, out, expected = _small_call()
    assert ops.selected_backend(tensors[0])[0] == "op"
    assert [counters["op"].calls, counters["reference"].calls] == [1, 0]
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)


def test_force_reference_routes_to_reference(counters):
    assert ops.force_reference(True) is None
    tensors, out, expected = _small_call()
    backend, reason = ops.selected_backend(tensors[0])
    assert backend == "reference" and "force_reference" in reason
    assert [counters["op"].calls, counters["reference"].calls] == [0, 1]
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)
    assert ops.force_reference(False) is True
    _small_call()
    assert counters["op"].calls == 1


@pytest.mark.parametrize(
    "env,backend",
    [
        ("reference", "reference"),
        (" Reference ", "reference"),
        ("op", "op"),
        ("auto", "op"),
        ("", "op"),
    ],
)
def test_env_var_selects_backend(monkeypatch, counters, env, backend):
    monkeypatch.setenv(ops.ENV_VAR, env)
    tensors, out, expected = _small_call()
    assert ops.selected_backend(tensors[0])[0] == backend
    assert counters[backend].calls == 1 and sum(c.calls for c in counters.values()) == 1
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)


def test_force_reference_false_overrides_env(monkeypatch, counters):
    monkeypatch.setenv(ops.ENV_VAR, "reference")
    ops.force_reference(False)
    _small_call()
    assert [counters["op"].calls, counters["reference"].calls] == [1, 0]


def test_bad_env_value_raises(monkeypatch):
    monkeypatch.setenv(ops.ENV_VAR, "fast")
    with pytest.raises(ValueError, match=r"PPDET_DAC_MSDA='fast' is not one of"):
        _small_call()
    with pytest.raises(ValueError, match="force_reference expects True, False or None"):
        ops.force_reference("yes")


def test_dispatch_logs_the_path_once(monkeypatch):
    messages = []
    monkeypatch.setattr(dispatch, "_logged", set())
    monkeypatch.setattr(dispatch.logger, "info", messages.append)
    _small_call()
    _small_call()
    ops.force_reference(True)
    _small_call()
    assert len(messages) == 2
    assert "uses the op path" in messages[0] and "uses the reference path" in messages[1]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_is_cast_around_the_op(counters, dtype):
    arrays = make_inputs([(3, 4), (2, 2)], batch=2, num_queries=3, seed=0, dtype="float32")
    low = [t.astype(dtype) if t.dtype == paddle.float32 else t for t in to_paddle(arrays)]
    low[0].stop_gradient = False
    out = ms_deform_attn(*low)
    assert out.dtype == low[0].dtype and counters["op"].calls == 1
    as_f32 = {
        k: (
            paddle.to_tensor(v).astype(dtype).astype("float32").numpy()
            if v.dtype == np.float32
            else v
        )
        for k, v in arrays.items()
    }
    tol = 1e-2 if dtype == "float16" else 5e-2
    np.testing.assert_allclose(out.astype("float32").numpy(), _naive(as_f32), rtol=tol, atol=tol)
    out.astype("float32").sum().backward()
    assert low[0].grad.dtype == low[0].dtype


# --- the op inside the tiny detector -----------------------------------------------------------


def _train_step(model, batch, seed):
    """Losses and a few parameter gradients of one training forward/backward with fixed noise."""
    paddle.seed(seed)  # dn noise and dropout draw from Paddle's global generator
    model.criterion.rng = np.random.default_rng(seed)  # one-to-many subsampling
    model.clear_gradients()
    losses = model(batch)
    losses["loss"].backward()
    named = dict(model.named_parameters())
    keys = [k for k in named if "sampling_offsets.weight" in k or "value_proj.weight" in k]
    grads = {k: named[k].grad.numpy().copy() for k in keys}
    return {k: float(v) for k, v in losses.items()}, grads


def test_tiny_detector_same_losses_with_op_and_reference(monkeypatch):
    from _common import build_tiny_detector, make_batch

    op_calls = _Counter(_library.run_op)
    monkeypatch.setattr(_library, "run_op", op_calls)
    model = build_tiny_detector(seed=0)
    model.train()
    # At initialisation the encoder samples exactly on pixel centres (zero offset weights, integer
    # grid biases): kinks of the bilinear map, where the one-sided location gradient each path
    # picks depends on float rounding. Move the biases off the grid to compare gradients.
    rng = np.random.default_rng(0)
    for name, param in model.named_parameters():
        if "sampling_offsets.bias" in name:
            param.set_value(param.numpy() + rng.uniform(-0.3, 0.3, param.shape).astype("float32"))
    batch = make_batch([2, 1], size=64, seed=1)
    op_losses, op_grads = _train_step(model, batch, seed=5)
    assert op_calls.calls > 0
    calls = op_calls.calls
    ops.force_reference(True)
    ref_losses, ref_grads = _train_step(model, batch, seed=5)
    assert op_calls.calls == calls
    assert op_losses.keys() == ref_losses.keys()
    for key, value in ref_losses.items():
        np.testing.assert_allclose(op_losses[key], value, rtol=1e-5, atol=1e-5, err_msg=key)
    assert op_grads
    for key, value in ref_grads.items():
        np.testing.assert_allclose(
            op_grads[key], value, rtol=0, atol=1e-5 * max(1.0, np.abs(value).max()), err_msg=key
        )


# --- malformed inputs ------------------------------------------------------------------------


def _bad_cases():
    arrays = make_inputs([(3, 4), (2, 3)], batch=2, num_queries=3, seed=0, dtype="float32")
    v, s, st, loc, attn = to_paddle(arrays)
    i64 = lambda a: paddle.to_tensor(np.array(a, "int64"))  # noqa: E731
    return (
        {  # name: (replaced arguments, message pattern)
            "value rank": (
                {"value": v.flatten(2)},
                r"value must have rank 4 \[N, S, M, D\], got shape \[2, 18, 6\]",
            ),
            "loc rank": ({"loc": loc[..., 0]}, "sampling_locations must have rank 6"),
            "attn rank": ({"attn": attn[..., 0]}, "attention_weights must have rank 5"),
            "shapes rank": ({"shapes": s.flatten()}, "spatial_shapes must have rank 2"),
            "starts rank": ({"starts": st.reshape([1, 2])}, "level_start_index must have rank 1"),
            "int value": (
                {"value": v.astype("int32")},
                "value must be float32 or float64.*got int32",
            ),
            "loc dtype": (
                {"loc": loc.astype("float64")},
                "sampling_locations dtype float64 differs from value dtype float32",
            ),
            "batch": ({"loc": loc[:1], "attn": attn[:1]}, "batch of sampling_locations"),
            "heads": (
                {"loc": loc[:, :, :1], "attn": attn[:, :, :1]},
                "heads of sampling_locations",
            ),
            "levels": (
                {"loc": loc[:, :, :, :1], "attn": attn[:, :, :, :1]},
                r"levels of sampling_locations .* do not match spatial_shapes",
            ),
            "points": (
                {"attn": attn[..., :1]},
                "attention_weights .* does not match sampling_locations",
            ),
            "loc xy": (
                {"loc": paddle.concat([loc, loc[..., :1]], -1)},
                "sampling_locations must end in 2",
            ),
            "shapes cols": (
                {"shapes": i64([[3, 4, 1], [2, 3, 1]])},
                r"spatial_shapes must be \[L, 2\]",
            ),
            "sum hw": (
                {"shapes": i64([[3, 4], [2, 2]])},
                "sum of H\\*W over spatial_shapes is 16 but value has 18 positions",
            ),
            "starts value": (
                {"starts": i64([0, 11])},
                r"level_start_index\[1\] = 11 but the levels before it hold 12",
            ),
            "starts length": ({"starts": i64([0, 12, 18])}, "level_start_index .* does not match"),
            "zero size": (
                {"shapes": i64([[0, 4], [2, 3]]), "starts": i64([0, 0])},
                r"spatial_shapes\[0\] = \(0, 4\) must be positive",
            ),
            "shapes int32": (
                {"shapes": s.astype("int32")},
                "spatial_shapes must be int64, got int32",
            ),
            "starts int32": ({"starts": st.astype("int32")}, "level_start_index must be int64"),
        },
        {"value": v, "shapes": s, "starts": st, "loc": loc, "attn": attn},
    )


_BAD, _GOOD = _bad_cases()


@pytest.mark.parametrize("name", list(_BAD))
def test_malformed_input_raises_clear_error(name):
    replaced, pattern = _BAD[name]
    args = dict(_GOOD, **replaced)
    with pytest.raises(
        (ValueError, TypeError, RuntimeError, OSError), match="ms_deform_attn: " + pattern
    ):
        ms_deform_attn(args["value"], args["shapes"], args["starts"], args["loc"], args["attn"])


# --- CUDA --------------------------------------------------------------------------------------


def _cuda_ready():
    return paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_ready(), reason="Paddle is not compiled with CUDA or has no GPU")
@pytest.mark.parametrize("dtype,atol", [("float64", 1e-10), ("float32", 1e-5)])
def test_cuda_matches_cpu(dtype, atol):
    assert _library.built_with_cuda(), "CUDA Paddle but the op library was built without CUDA"
    case = ([(8, 6), (4, 3), (1, 1)], 2, 9, 3, 32, 2)
    arrays = _inputs(case, seed=13, dtype=dtype, borders=False)
    grad_out = np.random.default_rng(3).standard_normal(_naive(arrays).shape).astype(dtype)
    cpu_out, cpu_grads = _op_grads(ms_deform_attn, arrays, grad_out)
    gpu = to_paddle(arrays, stop_gradient=False, place=paddle.CUDAPlace(0))
    assert ops.selected_backend(gpu[0])[0] == "op"
    out = ms_deform_attn(*gpu)
    (out * paddle.to_tensor(grad_out, place=paddle.CUDAPlace(0))).sum().backward()
    np.testing.assert_allclose(out.numpy(), cpu_out, rtol=0, atol=atol)
    for key, t in zip(GRAD_KEYS, (gpu[0], gpu[3], gpu[4])):
        scale = max(1.0, np.abs(cpu_grads[key]).max())
        np.testing.assert_allclose(
            t.grad.numpy(), cpu_grads[key], rtol=0, atol=atol * scale, err_msg=key
        )
