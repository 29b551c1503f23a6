"""Export round trip: a layer calling ppdet_dac.ops.ms_deform_attn, exported with
``to_static(full_graph=True)`` + ``jit.save``, runs in a fresh process's Paddle Inference predictor
(after ``register_op_library()``) and matches dygraph, for two sets of level sizes. A
reference-forced export has no custom op and runs without registering it."""

import os
import re
import subprocess
import sys

import numpy as np
import paddle
import pytest

from ppdet_dac import ops
from ppdet_dac.ops import _library

from _msda_helpers import make_inputs, naive_msda

paddle.set_device("cpu")

HERE = os.path.dirname(os.path.abspath(__file__))
HEADS, CHANNELS, POINTS, LEVELS = 2, 4, 2, 2
OP_IN_GRAPH = re.compile(r'"\d+\.ms_deform_attn"')  # a PIR op record in model.json


class _ProjectedAttention(paddle.nn.Layer):
    """value [N, S, M·D] -> Linear -> ms_deform_attn -> Linear: [N, Lq, M·D].

    The level table (spatial_shapes int64 [L, 2], level_start_index int64 [L]) is a graph input,
    so the exported graph takes any level sizes."""

    def __init__(self):
        super().__init__()
        self.value_proj = paddle.nn.Linear(HEADS * CHANNELS, HEADS * CHANNELS)
        self.output_proj = paddle.nn.Linear(HEADS * CHANNELS, HEADS * CHANNELS)

    def forward(self, value, spatial_shapes, level_start_index, loc, attn):
        value = self.value_proj(value).reshape([0, 0, HEADS, CHANNELS])
        out = ops.ms_deform_attn(value, spatial_shapes, level_start_index, loc, attn)
        return self.output_proj(out)


INPUT_NAMES = ("value", "spatial_shapes", "level_start_index", "loc", "attn")


def _spec():
    return [
        paddle.static.InputSpec([None, None, HEADS * CHANNELS], "float32", "value"),
        paddle.static.InputSpec([LEVELS, 2], "int64", "spatial_shapes"),
        paddle.static.InputSpec([LEVELS], "int64", "level_start_index"),
        paddle.static.InputSpec([None, None, HEADS, LEVELS, POINTS, 2], "float32", "loc"),
        paddle.static.InputSpec([None, None, HEADS, LEVELS, POINTS], "float32", "attn"),
    ]


def _runs():
    """Inputs for two level-size / batch / query settings: {run: {input name: array}}."""
    runs = {}
    cases = [(((6, 8), (3, 4)), 2, 7), (((5, 3), (2, 2)), 1, 3)]  # (level sizes, batch, queries)
    for run, (sizes, batch, queries) in enumerate(cases):
        arrays = make_inputs(
            sizes,
            batch=batch,
            num_queries=queries,
            heads=HEADS,
            channels=CHANNELS,
            points=POINTS,
            seed=run,
            dtype="float32",
        )
        runs[run] = {
            "value": arrays["value"].reshape(batch, -1, HEADS * CHANNELS),
            "spatial_shapes": arrays["spatial_shapes"],
            "level_start_index": arrays["level_start_index"],
            "loc": arrays["loc"],
            "attn": arrays["attn"],
        }
    return runs


def _export(layer, prefix, reference):
    previous = ops.force_reference(reference)
    try:
        paddle.jit.save(paddle.jit.to_static(layer, input_spec=_spec(), full_graph=True), prefix)
    finally:
        ops.force_reference(previous)
    with open(prefix + ".json") as f:
        return f.read()


def _expected(layer, arrays):
    """The layer's output computed with the NumPy transcription in place of the attention."""
    value = arrays["value"] @ layer.value_proj.weight.numpy() + layer.value_proj.bias.numpy()
    batch = value.shape[0]
    out = naive_msda(
        value.reshape(batch, -1, HEADS, CHANNELS),
        arrays["spatial_shapes"],
        arrays["level_start_index"],
        arrays["loc"],
        arrays["attn"],
    )
    return out @ layer.output_proj.weight.numpy() + layer.output_proj.bias.numpy()


@pytest.mark.skipif(not ops.op_available(), reason=f"op library not built: {_library.load_error()}")
def test_export_round_trip_in_fresh_process(tmp_path):
    paddle.seed(0)
    layer = _ProjectedAttention()
    layer.eval()
    runs = _runs()
    eager = {
        run: layer(*[paddle.to_tensor(a[k]) for k in INPUT_NAMES]).numpy()
        for run, a in runs.items()
    }
    for run, arrays in runs.items():
        np.testing.assert_allclose(eager[run], _expected(layer, arrays), rtol=0, atol=1e-5)

    op_prefix, ref_prefix = str(tmp_path / "with_op"), str(tmp_path / "with_reference")
    op_json = _export(layer, op_prefix, reference=False)
    ref_json = _export(layer, ref_prefix, reference=True)
    assert OP_IN_GRAPH.search(op_json) and "grid_sample" not in op_json
    assert not OP_IN_GRAPH.search(ref_json) and "grid_sample" in ref_json

    inputs = str(tmp_path / "inputs.npz")
    np.savez(inputs, **{f"{run}/{k}": v for run, a in runs.items() for k, v in a.items()})
    out_path = str(tmp_path / "outputs.npz")
    # The reference model runs first, before the op library is registered in that process.
    cmd = [
        sys.executable,
        os.path.join(HERE, "_op_export_probe.py"),
        out_path,
        ref_prefix,
        inputs,
        "--register",
        op_prefix,
        inputs,
    ]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    env.pop(ops.ENV_VAR, None)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "registered" in proc.stdout
    with np.load(out_path) as outputs:
        for run in runs:
            for prefix in (op_prefix, ref_prefix):
                got = outputs[f"{os.path.basename(prefix)}/{run}"]
                np.testing.assert_allclose(
                    got, eager[run], rtol=0, atol=1e-5, err_msg=f"{prefix} run {run}"
                )
