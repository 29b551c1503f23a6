"""The deformable encoder: post-norm layers of multi-scale deformable self-attention + FFN."""

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .deformable_attention import MSDeformableAttention
from .shape_utils import as_float
from . import init


class FeedForward(nn.Layer):
    """x -> LN(x + W2·ReLU(W1·x)); dropout between (0 in DAC-DETR)."""

    def __init__(self, d_model=256, dim_feedforward=2048, dropout=0.0):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)
        for layer in (self.linear1, self.linear2):
            init.xavier_(layer.weight)
            init.bias_default_(layer.bias, layer.weight.shape[0])

    def forward(self, x):
        y = self.linear2(self.dropout(F.relu(self.linear1(x))))
        return self.norm(x + self.dropout(y))


class DeformableLayer(nn.Layer):
    """What every encoder and decoder layer has: a multi-scale deformable attention with its
    dropout and post-norm, named by ``DEFORMABLE_NAMES``, and the FFN ``ffn``.

    ``_modules_first`` makes the modules a subclass creates before those (the decoder's
    self-attention): the creation order, and so the random initialisation, is the layer's own.
    """

    DEFORMABLE_NAMES = ("self_attn", "dropout", "norm")

    def __init__(
        self,
        d_model=256,
        num_heads=8,
        dim_feedforward=2048,
        dropout=0.0,
        num_levels=4,
        num_points=4,
        offset_lr_mult=0.1,
    ):
        super().__init__()
        self._modules_first(d_model, num_heads, dropout)
        attn, drop, norm = self.DEFORMABLE_NAMES
        setattr(
            self,
            attn,
            MSDeformableAttention(d_model, num_levels, num_heads, num_points, offset_lr_mult),
        )
        setattr(self, drop, nn.Dropout(dropout))
        setattr(self, norm, nn.LayerNorm(d_model))
        self.ffn = FeedForward(d_model, dim_feedforward, dropout)

    def _modules_first(self, d_model, num_heads, dropout):
        """Modules made before the deformable attention (none here)."""


class DeformableEncoderLayer(DeformableLayer):
    """src = LN(src + MSDeformAttn(src + pos, ref, src)); src = FFN(src).

    forward(src [B, S, C], pos [B, S, C], reference_points [B, S, L, 2] (x, y) normalised,
    spatial_shapes int64 [L, 2] (H_l, W_l), level_start_index int64 [L], token_padding [B, S]
    bool (True = padding)) -> [B, S, C]; S = Σ H_l·W_l tokens, C = d_model.
    """

    def forward(self, src, pos, reference_points, spatial_shapes, level_start_index, token_padding):
        attn = self.self_attn(
            src + pos, reference_points, src, spatial_shapes, level_start_index, token_padding
        )
        return self.ffn(self.norm(src + self.dropout(attn)))


def encoder_reference_points(spatial_shapes_list, valid_ratios):
    """Centre of every feature-map cell, normalised by the valid (unpadded) extent of its level.

    spatial_shapes_list: L pairs (H_l, W_l) (ints or 0-D int tensors); valid_ratios: [B, L, 2] (w, h).
    Returns [B, S, L, 2]: each cell's (x, y) rescaled into every level's valid region.
    """
    refs = []
    for lvl, (h, w) in enumerate(spatial_shapes_list):
        ref_y, ref_x = paddle.meshgrid(
            paddle.arange(h, dtype=valid_ratios.dtype) + 0.5,
            paddle.arange(w, dtype=valid_ratios.dtype) + 0.5,
        )
        ref_y = ref_y.reshape([1, -1]) / (valid_ratios[:, lvl, 1:2] * as_float(h))
        ref_x = ref_x.reshape([1, -1]) / (valid_ratios[:, lvl, 0:1] * as_float(w))
        refs.append(paddle.stack([ref_x, ref_y], axis=-1))
    reference_points = paddle.concat(refs, axis=1)
    return reference_points.unsqueeze(2) * valid_ratios.unsqueeze(1)


class DeformableEncoder(nn.Layer):
    def __init__(self, num_layers=6, **layer_kwargs):
        super().__init__()
        self.layers = nn.LayerList(
            [DeformableEncoderLayer(**layer_kwargs) for _ in range(num_layers)]
        )

    def forward(
        self,
        src,
        pos,
        spatial_shapes,
        spatial_shapes_list,
        level_start_index,
        valid_ratios,
        token_padding,
    ):
        """src, pos: [B, S, C]; token_padding: [B, S] bool (True = padding); spatial_shapes int64
        [L, 2] and spatial_shapes_list its L (H_l, W_l) pairs; level_start_index int64 [L];
        valid_ratios [B, L, 2]. Returns memory [B, S, C]."""
        reference_points = encoder_reference_points(spatial_shapes_list, valid_ratios)
        out = src
        for layer in self.layers:
            out = layer(
                out, pos, reference_points, spatial_shapes, level_start_index, token_padding
            )
        return out
