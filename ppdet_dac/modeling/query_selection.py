"""Two-stage proposals from the encoder memory and mixed query selection."""

import paddle
import paddle.nn as nn

from .position_encoding import box_position_embedding
from . import init


def encoder_proposals(token_padding, spatial_shapes_list, dtype="float32"):
    """One fixed proposal per encoder token: its cell centre, size 0.05·2^level, in logit space.

    token_padding: [B, S] bool (True = padding); spatial_shapes_list: L pairs (H_l, W_l).
    Returns (proposals_unact [B, S, 4] with +inf at padded or out-of-range tokens,
             valid [B, S, 1] bool: all four sigmoid-space coordinates inside (0.01, 0.99)).
    Centres are normalised by each image's unpadded extent at that level.
    """
    bs = token_padding.shape[0]
    proposals, start = [], 0
    for lvl, (h, w) in enumerate(spatial_shapes_list):
        level_padding = token_padding[:, start : start + h * w].reshape([bs, h, w])
        start = start + h * w
        is_image = paddle.logical_not(level_padding).astype(dtype)
        valid_h = is_image[:, :, 0].sum(axis=1)
        valid_w = is_image[:, 0, :].sum(axis=1)
        grid_y, grid_x = paddle.meshgrid(
            paddle.arange(h, dtype=dtype), paddle.arange(w, dtype=dtype)
        )
        grid = paddle.stack([grid_x, grid_y], axis=-1).unsqueeze(0) + 0.5  # [1, H, W, 2]
        scale = paddle.stack([valid_w, valid_h], axis=-1).reshape([bs, 1, 1, 2])
        grid = grid / scale
        wh = paddle.full_like(grid, 0.05 * (2.0**lvl))
        proposals.append(paddle.concat([grid, wh], axis=-1).reshape([bs, -1, 4]))
    proposals = paddle.concat(proposals, axis=1)
    valid = paddle.logical_and(proposals > 0.01, proposals < 0.99).all(axis=-1, keepdim=True)
    proposals = paddle.log(proposals / (1 - proposals))
    invalid = paddle.logical_or(token_padding.unsqueeze(-1), paddle.logical_not(valid))
    proposals = paddle.where(invalid, paddle.full_like(proposals, float("inf")), proposals)
    return proposals, valid


class QuerySelection(nn.Layer):
    """Encoder-side heads input and the positional part of the decoder queries.

    ``enc_output`` (Linear + LN) turns the memory (zeroed at padding) into proposal features;
    ``pos_trans`` (Linear 2C->2C + LN) maps the sine encoding of each reference box to query_pos,
    keeping the first C channels. query_pos is computed once and shared by all decoder layers
    (and both DAC streams).
    """

    def __init__(self, hidden_dim=256):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.enc_output = nn.Linear(hidden_dim, hidden_dim)
        self.enc_output_norm = nn.LayerNorm(hidden_dim)
        self.pos_trans = nn.Linear(2 * hidden_dim, 2 * hidden_dim)
        self.pos_trans_norm = nn.LayerNorm(2 * hidden_dim)
        for layer in (self.enc_output, self.pos_trans):
            init.xavier_(layer.weight)
            init.bias_default_(layer.bias, layer.weight.shape[0])

    def proposal_features(self, memory, token_padding, spatial_shapes_list):
        """memory: [B, S, C]; token_padding: [B, S] bool, True = padding
        -> (features [B, S, C], proposals_unact [B, S, 4])."""
        proposals, valid = encoder_proposals(token_padding, spatial_shapes_list, memory.dtype)
        keep = paddle.logical_and(paddle.logical_not(token_padding.unsqueeze(-1)), valid)
        features = memory * keep.astype(memory.dtype)
        return self.enc_output_norm(self.enc_output(features)), proposals

    def query_pos(self, ref_unact):
        """ref_unact: [B, Q, 4] logit-space boxes -> query_pos [B, Q, C]."""
        pos = self.pos_trans_norm(
            self.pos_trans(box_position_embedding(ref_unact, num_feats=self.hidden_dim // 2))
        )
        return pos[..., : self.hidden_dim]
