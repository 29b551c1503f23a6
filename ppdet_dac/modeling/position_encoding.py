"""Sine position encodings: one for feature maps (encoder), one for boxes (query_pos)."""

import math

import paddle


def _interleave_sin_cos(pos):
    """pos: [..., F] -> [..., F] with sin on even and cos on odd feature indices."""
    stacked = paddle.stack([paddle.sin(pos[..., 0::2]), paddle.cos(pos[..., 1::2])], axis=-1)
    return stacked.flatten(start_axis=-2)


def _frequencies(num_feats, temperature, dtype):
    """dim_t[i] = temperature ** (2 * (i // 2) / num_feats), [num_feats]."""
    dim_t = paddle.arange(num_feats, dtype=dtype)
    return temperature ** (2 * paddle.floor(dim_t / 2) / num_feats)


def sine_position_embedding(
    padding, num_feats=128, temperature=10000.0, scale=2 * math.pi, eps=1e-6, dtype="float32"
):
    """Normalised 2-D sine encoding of a padded feature map.

    padding: [B, H, W] bool, True = padding.
    Returns [B, 2 * num_feats, H, W] = concat(pos_y, pos_x). Positions count unpadded pixels
    (cumulative sum), are offset by -0.5 and divided by the last count + eps, then scaled by 2π.
    dtype: of the result (the model's float type: float64 runs compute it in float64).
    """
    is_image = paddle.logical_not(padding).astype(dtype)
    y_embed = paddle.cumsum(is_image, axis=1)
    x_embed = paddle.cumsum(is_image, axis=2)
    y_embed = (y_embed - 0.5) / (y_embed[:, -1:, :] + eps) * scale
    x_embed = (x_embed - 0.5) / (x_embed[:, :, -1:] + eps) * scale
    dim_t = _frequencies(num_feats, temperature, dtype)
    pos_x = _interleave_sin_cos(x_embed.unsqueeze(-1) / dim_t)
    pos_y = _interleave_sin_cos(y_embed.unsqueeze(-1) / dim_t)
    return paddle.concat([pos_y, pos_x], axis=-1).transpose([0, 3, 1, 2])


def box_position_embedding(boxes_unact, num_feats=128, temperature=10000.0, scale=2 * math.pi):
    """Sine encoding of boxes given in logit space (the two-stage proposals).

    boxes_unact: [B, Q, 4] unsigmoided (cx, cy, w, h).
    Returns [B, Q, 4 * num_feats]: per coordinate, num_feats/2 interleaved (sin, cos) pairs.
    """
    pos = paddle.nn.functional.sigmoid(boxes_unact) * scale
    dim_t = _frequencies(num_feats, temperature, pos.dtype)
    pos = _interleave_sin_cos(pos.unsqueeze(-1) / dim_t)  # [B, Q, 4, num_feats]
    return pos.flatten(start_axis=2)
