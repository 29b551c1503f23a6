"""The multi-scale deformable attention layer (projections, offsets, weights -> ops.ms_deform_attn)."""

import math

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ppdet_dac.ops import ms_deform_attn
from . import init


class MSDeformableAttention(nn.Layer):
    """Deformable attention over L feature levels, M heads, P points per head and level.

    ``sampling_offsets`` learns at ``offset_lr_mult`` times the base learning rate (0.1 officially).
    """

    def __init__(self, embed_dim=256, num_levels=4, num_heads=8, num_points=4, offset_lr_mult=0.1):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_levels = embed_dim, num_levels
        self.num_heads, self.num_points = num_heads, num_points
        self.head_dim = embed_dim // num_heads
        n_samples = num_heads * num_levels * num_points
        self.sampling_offsets = nn.Linear(
            embed_dim,
            n_samples * 2,
            weight_attr=paddle.ParamAttr(learning_rate=offset_lr_mult),
            bias_attr=paddle.ParamAttr(learning_rate=offset_lr_mult),
        )
        self.attention_weights = nn.Linear(embed_dim, n_samples)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self):
        """Offsets start on a ring of directions, one per head, scaled by point index + 1."""
        init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = np.arange(self.num_heads, dtype=np.float64) * (2.0 * math.pi / self.num_heads)
        grid = np.stack([np.cos(thetas), np.sin(thetas)], -1)
        grid = grid / np.abs(grid).max(-1, keepdims=True)
        grid = np.tile(grid[:, None, None, :], (1, self.num_levels, self.num_points, 1))
        grid *= np.arange(1, self.num_points + 1, dtype=np.float64)[None, None, :, None]
        init.assign_(self.sampling_offsets.bias, grid.reshape(-1).astype("float32"))
        init.constant_(self.attention_weights.weight, 0.0)
        init.constant_(self.attention_weights.bias, 0.0)
        for layer in (self.value_proj, self.output_proj):
            init.xavier_(layer.weight)
            init.constant_(layer.bias, 0.0)

    def forward(
        self, query, reference_points, value, spatial_shapes, level_start_index, value_padding=None
    ):
        """
        query: [B, Lq, C]; value: [B, S, C] with S = Σ H_l·W_l.
        reference_points: [B, Lq, L, 2] (x, y) or [B, Lq, L, 4] (cx, cy, w, h), normalised.
        spatial_shapes: int64 [L, 2] (H, W); level_start_index: int64 [L].
        value_padding: [B, S] bool, True = padding (those values are zeroed).
        Returns [B, Lq, C].
        """
        bs, len_q = query.shape[0], query.shape[1]
        value = self.value_proj(value)
        if value_padding is not None:
            value = value * paddle.logical_not(value_padding).astype(value.dtype).unsqueeze(-1)
        value = value.reshape([bs, -1, self.num_heads, self.head_dim])
        offsets = self.sampling_offsets(query).reshape(
            [bs, len_q, self.num_heads, self.num_levels, self.num_points, 2]
        )
        weights = self.attention_weights(query).reshape(
            [bs, len_q, self.num_heads, self.num_levels * self.num_points]
        )
        weights = F.softmax(weights, axis=-1).reshape(
            [bs, len_q, self.num_heads, self.num_levels, self.num_points]
        )
        if reference_points.shape[-1] == 2:
            normalizer = paddle.flip(spatial_shapes, axis=[1]).astype(offsets.dtype)  # (W, H)
            locations = (
                reference_points[:, :, None, :, None, :]
                + offsets / normalizer[None, None, None, :, None, :]
            )
        elif reference_points.shape[-1] == 4:
            locations = (
                reference_points[:, :, None, :, None, :2]
                + offsets / self.num_points * reference_points[:, :, None, :, None, 2:] * 0.5
            )
        else:
            raise ValueError(
                f"reference_points must end in 2 or 4 coordinates, got shape {reference_points.shape}"
            )
        out = ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights)
        return self.output_proj(out)
