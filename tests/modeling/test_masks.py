"""The mask vocabulary (modeling/masks.py) and the documented fields of ``FlatLevels``, on a batch
whose second image has its right half padded."""

import numpy as np
import paddle

from _common import build_tiny_detector, make_batch
from ppdet_dac.modeling.denoising import cdn_attention_mask
from ppdet_dac.modeling.masks import attn_allowed_from_blocked, padding_from_image_mask
from ppdet_dac.modeling.transformer import FlatLevels

SIZE = 64
# the tiny detector's levels at 64 px: strides 8, 16, 32 from ResNet-18, one extra at 64
LEVELS = [(8, 8), (4, 4), (2, 2), (1, 1)]


def _half_padded_batch():
    batch = make_batch([1, 1], size=SIZE)
    image_mask = np.ones((2, SIZE, SIZE), dtype="float32")
    image_mask[1, :, SIZE // 2 :] = 0.0  # image 1: columns 32..63 are padding
    batch["pad_mask"] = paddle.to_tensor(image_mask)
    return batch


def test_padding_is_true_on_padding():
    image_mask = paddle.to_tensor(np.array([[[1.0, 0.0, 1.0]]], dtype="float32"))
    assert padding_from_image_mask(image_mask).numpy().tolist() == [[[False, True, False]]]


def test_attn_allowed_is_not_blocked():
    # 2 groups of 2 DN slots (single_pad 2) in front of 3 matching queries
    blocked = cdn_attention_mask(pad_size=4, single_pad=2, num_queries=3)
    allowed = attn_allowed_from_blocked(blocked).numpy()
    np.testing.assert_array_equal(allowed, ~blocked.numpy())
    assert not allowed[4, 0]  # a matching query does not see a DN query
    assert allowed[0, 4]  # a DN query sees the matching queries
    assert allowed[0, 1] and not allowed[0, 2]  # its own group, not the other group


def test_flatten_levels_fields_have_the_documented_shapes():
    model = build_tiny_detector()
    model.eval()
    batch = _half_padded_batch()
    with paddle.no_grad():
        feats = model.backbone(batch)
        flat = model.transformer._flatten_levels(feats, padding_from_image_mask(batch["pad_mask"]))
    assert isinstance(flat, FlatLevels)
    tokens = sum(h * w for h, w in LEVELS)
    hidden = model.transformer.hidden_dim
    assert flat.tokens.shape == [2, tokens, hidden]
    assert flat.pos.shape == [2, tokens, hidden]
    assert flat.token_padding.dtype == paddle.bool and flat.token_padding.shape == [2, tokens]
    assert flat.spatial_shapes.numpy().tolist() == [list(s) for s in LEVELS]
    assert [tuple(s) for s in flat.shapes] == LEVELS
    assert flat.level_start_index.numpy().tolist() == [0, 64, 80, 84]
    # image 0 has no padding; image 1's right half is padding at every level wider than 1 cell
    # (the 1 x 1 level takes the top-left pixel, an image pixel)
    padding = flat.token_padding.numpy()
    assert not padding[0].any()
    level0 = padding[1, :64].reshape(8, 8)
    assert not level0[:, :4].any() and level0[:, 4:].all()
    assert padding[1].sum() == sum(h * w // 2 for h, w in LEVELS[:3])
    np.testing.assert_allclose(flat.valid_ratios.numpy()[0], np.ones((4, 2)))
    np.testing.assert_allclose(
        flat.valid_ratios.numpy()[1], [[0.5, 1.0], [0.5, 1.0], [0.5, 1.0], [1.0, 1.0]]
    )
