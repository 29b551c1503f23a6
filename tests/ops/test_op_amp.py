"""ms_deform_attn under mixed precision, as far as Paddle 3.3 on CPU allows.

Finding (Paddle 3.3.1, CPU wheel): ``paddle.amp.auto_cast`` is a no-op on CPU for every level and
dtype, bfloat16 included: ``amp_guard`` disables itself with a UserWarning unless the place is
CUDA, XPU or a custom device, and ``paddle.amp.decorate`` returns the model unchanged. So `--amp`
stays ignored on CPU (DACTrainer warns; tests/engine/test_amp_cpu.py). What GPU autocast would
feed the op (bfloat16 / float16 value from the white-listed projections, float32 or low-precision
locations and weights) is tested here directly: the op always computes in float32, the output
takes the value's dtype and every gradient its input's dtype, bit-exactly the float32 results
rounded to those dtypes.
"""

import numpy as np
import paddle
import pytest

from ppdet_dac import ops
from ppdet_dac.modeling.deformable_attention import MSDeformableAttention
from ppdet_dac.ops import _library

from _msda_helpers import make_inputs, to_paddle

paddle.set_device("cpu")

pytestmark = pytest.mark.skipif(
    not ops.op_available(), reason=f"op library not built: {_library.load_error()}"
)


@pytest.fixture
def op_dtypes(monkeypatch):
    """Records the dtypes of (value, sampling_locations, attention_weights) of each op call."""
    calls = []
    real = _library.run_op

    def spy(value, shapes, starts, loc, attn):
        calls.append((value.dtype, loc.dtype, attn.dtype))
        return real(value, shapes, starts, loc, attn)

    monkeypatch.setattr(_library, "run_op", spy)
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    previous = ops.force_reference(None)
    yield calls
    ops.force_reference(previous)


def _attention_inputs(seed=0):
    """A small MSDeformableAttention call: 2 levels, 8 heads x 4 channels, 3 points."""
    rng = np.random.default_rng(seed)
    shapes = np.array([[6, 5], [3, 3]], "int64")
    starts = np.array([0, 30], "int64")
    query = paddle.to_tensor(rng.standard_normal((2, 7, 32)).astype("float32"))
    value = paddle.to_tensor(rng.standard_normal((2, 39, 32)).astype("float32"))
    refs = paddle.to_tensor(rng.uniform(0.1, 0.9, (2, 7, 2, 2)).astype("float32"))
    return query, refs, value, paddle.to_tensor(shapes), paddle.to_tensor(starts)


@pytest.mark.parametrize("level", ["O1", "O2"])
def test_cpu_autocast_bfloat16_is_a_noop(op_dtypes, level):
    paddle.seed(0)
    layer = MSDeformableAttention(embed_dim=32, num_levels=2, num_heads=8, num_points=3)
    args = _attention_inputs()
    plain = layer(*args)
    with pytest.warns(UserWarning, match="amp_guard can only be enabled on CUDAPlace"):
        with paddle.amp.auto_cast(enable=True, level=level, dtype="bfloat16"):
            cast = layer(*args)
    assert cast.dtype == paddle.float32
    assert cast.numpy().tobytes() == plain.numpy().tobytes()
    assert op_dtypes == [(paddle.float32,) * 3] * 2
    decorated = paddle.amp.decorate(models=layer, level="O2", dtype="bfloat16")
    assert {p.dtype for p in decorated.parameters()} == {paddle.float32}


# (value, sampling_locations, attention_weights) as GPU autocast may produce them.
MIXED = [
    ("bfloat16", "float32", "float32"),
    ("bfloat16", "float32", "bfloat16"),
    ("bfloat16", "bfloat16", "bfloat16"),
    ("float16", "float32", "float16"),
    ("float32", "bfloat16", "float16"),
]


@pytest.mark.parametrize("dtypes", MIXED, ids=["-".join(d) for d in MIXED])
def test_low_precision_inputs_run_the_op_in_float32(op_dtypes, dtypes):
    arrays = make_inputs(
        [(5, 6), (3, 2)],
        batch=2,
        num_queries=4,
        heads=2,
        channels=8,
        points=3,
        seed=4,
        dtype="float32",
        borders=False,
    )
    base = to_paddle(arrays)
    grad_out = np.random.default_rng(5).standard_normal((2, 4, 16)).astype("float32")

    def run(value, loc, attn, g):
        for t in (value, loc, attn):
            t.stop_gradient = False
        out = ops.ms_deform_attn(value, base[1], base[2], loc, attn)
        (out.astype("float32") * g).sum().backward()
        return out, value.grad, loc.grad, attn.grad

    low = [base[i].astype(d) for i, d in zip((0, 3, 4), dtypes)]
    g = paddle.to_tensor(grad_out)
    got = run(*low, g)
    # The float32 computation on the same (rounded) numbers; the output gradient reaches the op
    # through the output's dtype, so it is rounded to it.
    want = run(
        *[paddle.to_tensor(t.astype("float32").numpy()) for t in low],
        g.astype(low[0].dtype).astype("float32"),
    )
    assert op_dtypes == [(paddle.float32,) * 3] * 2
    assert got[0].dtype == low[0].dtype
    assert got[0].numpy().tobytes() == want[0].astype(low[0].dtype).numpy().tobytes()
    for grad, ref, tensor in zip(got[1:], want[1:], low):
        assert grad.dtype == tensor.dtype
        assert grad.numpy().tobytes() == ref.astype(tensor.dtype).numpy().tobytes()
    assert np.abs(want[2].numpy()).max() > 0.1  # the location gradient is not vacuous
