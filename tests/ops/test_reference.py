"""The grid_sample reference equals an independent NumPy transcription of the sampling convention
(docs/algorithm.md#sampling-convention), in dygraph and after ``to_static(full_graph=True)``
export with image sizes that change between calls."""

import os

import numpy as np
import paddle
import pytest

from ppdet_dac.ops import ms_deform_attn_reference

from _msda_helpers import make_inputs, naive_msda, to_paddle

paddle.set_device("cpu")


@pytest.mark.parametrize(
    "shapes,batch,queries,channels",
    [
        ([(6, 7), (3, 4)], 2, 5, 3),
        ([(1, 5), (4, 1), (1, 1)], 1, 4, 5),  # levels with H = 1 and/or W = 1
        ([(5, 5)], 3, 1, 7),  # batch 3, one query, odd channels
    ],
)
def test_reference_matches_numpy(shapes, batch, queries, channels):
    arrays = make_inputs(shapes, batch=batch, num_queries=queries, channels=channels, seed=3)
    out = ms_deform_attn_reference(*to_paddle(arrays)).numpy()
    expected = naive_msda(
        arrays["value"],
        arrays["spatial_shapes"],
        arrays["level_start_index"],
        arrays["loc"],
        arrays["attn"],
    )
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-10)


class _TwoLevelAttention(paddle.nn.Layer):
    """Builds value / spatial_shapes / level_start_index from two feature maps, as a model does."""

    def __init__(self, heads=2, points=2):
        super().__init__()
        self.heads, self.points = heads, points

    def forward(self, feat0, feat1, loc, attn):
        # feat_l: [N, M·D, H_l, W_l]; loc: [N, Lq, M, 2, P, 2]; attn: [N, Lq, M, 2, P]
        shapes, values = [], []
        for feat in (feat0, feat1):
            size = paddle.shape(feat)
            shapes.append(paddle.stack([size[2], size[3]]))
            values.append(feat.flatten(2).transpose([0, 2, 1]))
        spatial_shapes = paddle.stack(shapes).astype("int64")
        areas = spatial_shapes.prod(1)
        level_start_index = paddle.concat([paddle.zeros([1], dtype="int64"), areas.cumsum(0)[:-1]])
        value = paddle.concat(values, 1)
        value = value.reshape([0, 0, self.heads, -1])
        return ms_deform_attn_reference(value, spatial_shapes, level_start_index, loc, attn)


def _layer_inputs(h0, w0, h1, w1, batch, queries, seed):
    rng = np.random.default_rng(seed)
    feats = [
        rng.standard_normal((batch, 6, h, w)).astype("float32") for h, w in ((h0, w0), (h1, w1))
    ]
    loc = rng.uniform(-0.1, 1.1, (batch, queries, 2, 2, 2, 2)).astype("float32")
    attn = rng.uniform(0, 1, (batch, queries, 2, 2, 2)).astype("float32")
    return [paddle.to_tensor(a) for a in (*feats, loc, attn)]


def test_reference_to_static_dynamic_sizes(tmp_path):
    layer = _TwoLevelAttention()
    spec = [
        paddle.static.InputSpec([None, 6, None, None], "float32", "feat0"),
        paddle.static.InputSpec([None, 6, None, None], "float32", "feat1"),
        paddle.static.InputSpec([None, None, 2, 2, 2, 2], "float32", "loc"),
        paddle.static.InputSpec([None, None, 2, 2, 2], "float32", "attn"),
    ]
    static_layer = paddle.jit.to_static(layer, input_spec=spec, full_graph=True)
    path = os.path.join(str(tmp_path), "ref")
    paddle.jit.save(static_layer, path)
    loaded = paddle.jit.load(path)
    for sizes, batch, queries in (((6, 8, 3, 4), 2, 5), ((5, 3, 2, 2), 1, 3)):
        inputs = _layer_inputs(*sizes, batch, queries, seed=sum(sizes))
        eager = layer(*inputs).numpy()
        feats = [t.numpy() for t in inputs[:2]]
        values = np.concatenate([f.reshape(batch, 6, -1).transpose(0, 2, 1) for f in feats], 1)
        hw = np.array([sizes[:2], sizes[2:]], dtype="int64")
        expected = naive_msda(
            values.reshape(batch, -1, 2, 3),
            hw,
            np.array([0, hw[0].prod()]),
            inputs[2].numpy(),
            inputs[3].numpy(),
        )
        np.testing.assert_allclose(eager, expected, rtol=0, atol=1e-5)
        np.testing.assert_allclose(static_layer(*inputs).numpy(), expected, rtol=0, atol=1e-5)
        np.testing.assert_allclose(loaded(*inputs).numpy(), expected, rtol=0, atol=1e-5)
