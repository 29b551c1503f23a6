"""DACTransformer: input projections, deformable encoder, two-stage query selection, CDN queries
and the two-stream DAC decoder, with the per-layer heads (6 decoder clones + 1 for the encoder)."""

from typing import NamedTuple

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from ppdet.core.workspace import register

from .decoder import DACDecoder
from .denoising import build_cdn_queries
from .encoder import DeformableEncoder
from .head import build_heads
from .masks import attn_allowed_from_blocked
from .position_encoding import sine_position_embedding
from .query_selection import QuerySelection
from .shape_utils import as_float, dynamic_size
from . import init


def _valid_ratio(level_padding, dtype="float32"):
    """level_padding: [B, H, W] bool (True = padding) -> [B, 2] (unpadded width / W, unpadded
    height / H)."""
    is_image = paddle.logical_not(level_padding).astype(dtype)
    h, w = dynamic_size(level_padding, (1, 2))
    valid_h = is_image[:, :, 0].sum(axis=1) / as_float(h)
    valid_w = is_image[:, 0, :].sum(axis=1) / as_float(w)
    return paddle.stack([valid_w, valid_h], axis=-1)


class FlatLevels(NamedTuple):
    """The L feature levels flattened into S = Σ H_l·W_l encoder tokens (level 0 first, each
    level row-major), as ``DACTransformer._flatten_levels`` returns them."""

    tokens: paddle.Tensor  # [B, S, C] projected features
    token_padding: paddle.Tensor  # [B, S] bool, True = padding (masks.py)
    pos: paddle.Tensor  # [B, S, C] sine position encoding + level embedding
    spatial_shapes: paddle.Tensor  # int64 [L, 2], (H_l, W_l) per level
    shapes: list  # the same L pairs (H_l, W_l) as ints (0-D tensors in export)
    level_start_index: paddle.Tensor  # int64 [L], index of each level's first token in S
    valid_ratios: paddle.Tensor  # [B, L, 2], (unpadded width / W_l, unpadded height / H_l)


@register
class DACTransformer(nn.Layer):
    """Deformable-DETR++ with contrastive denoising and DAC's C-decoder.

    Inputs: backbone features (C3, C4, C5) and the image's padding (True = padding). Outputs:
      'logits' [L, B, Q', K], 'boxes' [L, B, Q', 4] O-decoder per layer (L = 1 in eval);
      'logits_c', 'boxes_c' the C-decoder (training with use_dac only);
      'enc_logits' [B, S, K], 'enc_boxes' [B, S, 4] one proposal per encoder token;
      'topk_indices' [B, Q] the selected proposals; 'dn_meta' the denoising layout (training).
    Q' = pad_size + num_queries in training with denoising (DN queries first), else num_queries.
    """

    __shared__ = ["num_classes", "hidden_dim", "use_dac"]

    def __init__(
        self,
        num_classes=91,
        hidden_dim=256,
        num_queries=900,
        in_channels=(512, 1024, 2048),
        num_levels=4,
        num_heads=8,
        num_encoder_layers=6,
        num_decoder_layers=6,
        dim_feedforward=2048,
        dropout=0.0,
        num_encoder_points=4,
        num_decoder_points=4,
        offset_lr_mult=0.1,
        num_denoising=100,
        label_noise_ratio=0.5,
        box_noise_scale=0.4,
        use_dac=True,
        two_stage=True,
    ):
        super().__init__()
        if not two_stage and num_denoising > 0:
            raise ValueError(
                "DACTransformer: two_stage: false (plain Deformable-DETR) has no "
                f"denoising queries; set num_denoising: 0 (got {num_denoising})"
            )
        self.two_stage = two_stage
        if num_levels < len(in_channels):
            raise ValueError(
                f"num_levels {num_levels} < number of backbone levels {len(in_channels)}"
            )
        self.num_classes, self.hidden_dim, self.num_queries = num_classes, hidden_dim, num_queries
        self.num_levels, self.use_dac = num_levels, use_dac
        self.num_denoising = num_denoising
        self.label_noise_ratio, self.box_noise_scale = label_noise_ratio, box_noise_scale

        self.input_proj = nn.LayerList()
        for i in range(num_levels):
            extra = i >= len(in_channels)
            conv = nn.Conv2D(
                in_channels[-1]
                if i == len(in_channels)
                else (hidden_dim if extra else in_channels[i]),
                hidden_dim,
                kernel_size=3 if extra else 1,
                stride=2 if extra else 1,
                padding=1 if extra else 0,
            )
            init.xavier_(conv.weight)
            init.constant_(conv.bias, 0.0)
            self.input_proj.append(nn.Sequential(conv, nn.GroupNorm(32, hidden_dim)))
        self.level_embed = self.create_parameter([num_levels, hidden_dim])
        init.normal_(self.level_embed)

        layer_kwargs = dict(
            d_model=hidden_dim,
            num_heads=num_heads,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            num_levels=num_levels,
            offset_lr_mult=offset_lr_mult,
        )
        self.encoder = DeformableEncoder(
            num_encoder_layers, num_points=num_encoder_points, **layer_kwargs
        )
        self.decoder = DACDecoder(num_decoder_layers, num_points=num_decoder_points, **layer_kwargs)
        if two_stage:
            self.query_selection = QuerySelection(hidden_dim)
            self.query_embed = nn.Embedding(num_queries, hidden_dim)  # content of the queries
            self.label_enc = nn.Embedding(num_classes + 1, hidden_dim)  # content of DN queries
            init.normal_(self.query_embed.weight)
            init.normal_(self.label_enc.weight)
            self.class_heads, self.box_heads = build_heads(
                hidden_dim, num_classes, num_decoder_layers + 1
            )
        else:
            # Plain Deformable-DETR: learned (query_pos, content) pairs, reference points from
            # query_pos, one pair of heads shared by every layer (no box refinement).
            self.query_embed = nn.Embedding(num_queries, 2 * hidden_dim)
            init.normal_(self.query_embed.weight)
            # learns at offset_lr_mult like the sampling offsets (official lr_linear_proj_names)
            self.reference_points = nn.Linear(
                hidden_dim,
                2,
                weight_attr=paddle.ParamAttr(learning_rate=offset_lr_mult),
                bias_attr=paddle.ParamAttr(learning_rate=offset_lr_mult),
            )
            init.xavier_(self.reference_points.weight)
            init.constant_(self.reference_points.bias, 0.0)
            heads = build_heads(hidden_dim, num_classes, 1)
            self.class_head, self.box_head = heads[0][0], heads[1][0]
            bias = self.box_head.layers[-1].bias
            init.assign_(bias, [0.0, 0.0, -2.0, -2.0])
            # plain lists: the shared head is registered once (as class_head / box_head)
            self.class_heads = [self.class_head] * num_decoder_layers
            self.box_heads = [self.box_head] * num_decoder_layers

    @classmethod
    def from_config(cls, cfg, input_shape):
        return {"in_channels": [s.channels for s in input_shape]}

    def _flatten_levels(self, feats, padding):
        """Project the backbone levels (+ extra strided levels) and flatten them into tokens.

        feats: list of [B, C_l, H_l, W_l]; padding: [B, H, W] bool, True = padding.
        Returns a ``FlatLevels`` (shapes documented there)."""
        srcs = [proj(f) for proj, f in zip(self.input_proj, feats)]
        for i in range(len(feats), self.num_levels):
            srcs.append(self.input_proj[i](feats[-1] if i == len(feats) else srcs[-1]))
        tokens, paddings, pos, shapes, ratios = [], [], [], [], []
        for lvl, src in enumerate(srcs):
            h, w = dynamic_size(src, (2, 3))
            level_padding = (
                F.interpolate(
                    padding.unsqueeze(1).astype("float32"), size=[h, w], mode="nearest"
                ).squeeze(1)
                > 0.5
            )
            level_pos = sine_position_embedding(
                level_padding, num_feats=self.hidden_dim // 2, dtype=src.dtype
            )
            tokens.append(src.flatten(2).transpose([0, 2, 1]))
            paddings.append(level_padding.flatten(1))
            pos.append(level_pos.flatten(2).transpose([0, 2, 1]) + self.level_embed[lvl])
            shapes.append((h, w))
            ratios.append(_valid_ratio(level_padding, src.dtype))
        if paddle.in_dynamic_mode():
            spatial_shapes = paddle.to_tensor(shapes, dtype="int64")
        else:
            spatial_shapes = paddle.stack([paddle.stack([h, w]) for h, w in shapes]).astype("int64")
        areas = spatial_shapes.prod(1)
        level_start_index = paddle.concat([paddle.zeros([1], dtype="int64"), areas.cumsum(0)[:-1]])
        return FlatLevels(
            paddle.concat(tokens, 1),
            paddle.concat(paddings, 1),
            paddle.concat(pos, 1),
            spatial_shapes,
            shapes,
            level_start_index,
            paddle.stack(ratios, 1),
        )

    def _check_topk_indices(self, topk_indices, batch_and_tokens):
        """Forced top-k indices must be int [B, num_queries] with values in [0, S)."""
        bs, num_tokens = batch_and_tokens
        if not isinstance(topk_indices, paddle.Tensor):
            topk_indices = paddle.to_tensor(topk_indices)
        if list(topk_indices.shape) != [bs, self.num_queries]:
            raise ValueError(
                f"topk_indices must have shape [{bs}, {self.num_queries}] "
                f"([B, num_queries]), got {list(topk_indices.shape)}"
            )
        values = topk_indices.numpy()
        if values.size and (values.min() < 0 or values.max() >= num_tokens):
            raise ValueError(
                f"topk_indices must lie in [0, {num_tokens}) (encoder tokens), got "
                f"[{values.min()}, {values.max()}]"
            )
        return topk_indices.astype("int64")

    def forward(
        self,
        feats,
        padding,
        gt_labels=None,
        gt_boxes=None,
        dn_noise=None,
        topk_indices=None,
        run_c_stream=None,
    ):
        """
        feats: list of [B, C_l, H_l, W_l] backbone maps; padding: [B, H, W] bool, True = padding.
        gt_labels / gt_boxes: per-image int64 [n] model class ids and [n, 4] normalised cxcywh
          (training; they seed the denoising queries). dn_noise: optional replayable draws.
        topk_indices: optional [B, Q] int64 to replace the proposal top-k (exact comparisons).
        run_c_stream: override (default: training and use_dac).
        """
        levels = self._flatten_levels(feats, padding)
        (src, token_padding, pos, spatial_shapes, shapes, level_start_index, valid_ratios) = levels
        memory = self.encoder(
            src, pos, spatial_shapes, shapes, level_start_index, valid_ratios, token_padding
        )

        if run_c_stream is None:
            run_c_stream = self.training and self.use_dac
        if self.two_stage:
            tgt, init_ref, query_pos, attn_allowed, extras = self._two_stage_queries(
                memory, token_padding, shapes, gt_labels, gt_boxes, dn_noise, topk_indices
            )
        else:
            tgt, init_ref, query_pos, attn_allowed, extras = self._learned_queries(memory)
        outputs = self.decoder(
            tgt,
            init_ref,
            query_pos,
            levels._replace(tokens=memory),
            self.class_heads,
            self.box_heads,
            attn_allowed=attn_allowed,
            run_c_stream=run_c_stream,
            all_layers=self.training or run_c_stream,
        )
        outputs.update(extras)
        return outputs

    def _two_stage_queries(
        self, memory, token_padding, shapes, gt_labels, gt_boxes, dn_noise, topk_indices
    ):
        """Queries from the encoder's top-scoring proposals, with the CDN queries in front.

        Returns (content [B, Q', C], initial boxes [B, Q', 4], query_pos [B, Q', C], attn_allowed
        [Q', Q'] bool (True = may attend) or None, {'enc_logits', 'enc_boxes', 'topk_indices', 'dn_meta'})."""
        # Score one proposal per token, keep the top num_queries by channel 0.
        features, proposals = self.query_selection.proposal_features(memory, token_padding, shapes)
        enc_logits = self.class_heads[-1](features)
        enc_coords_unact = self.box_heads[-1](features) + proposals
        if topk_indices is None:
            if paddle.in_dynamic_mode() and enc_logits.shape[1] < self.num_queries:
                raise ValueError(
                    f"the image gives {enc_logits.shape[1]} encoder tokens, fewer than "
                    f"num_queries={self.num_queries}; use a larger input or fewer queries"
                )
            topk_indices = paddle.topk(enc_logits[..., 0], self.num_queries, axis=1)[1]
        elif paddle.in_dynamic_mode():
            topk_indices = self._check_topk_indices(topk_indices, enc_logits.shape[:2])
        ref_unact = paddle.take_along_axis(
            enc_coords_unact, topk_indices.unsqueeze(-1).tile([1, 1, 4]), axis=1
        ).detach()
        bs = memory.shape[0]
        tgt = self.query_embed.weight.unsqueeze(0).tile([bs, 1, 1])

        # Contrastive denoising queries go first, with a mask that hides them from the rest.
        attn_allowed, dn_meta = None, None
        if self.training and self.num_denoising > 0 and gt_labels is not None:
            dn_content, dn_ref_unact, attn_blocked, dn_meta = build_cdn_queries(
                gt_labels,
                gt_boxes,
                self.label_enc,
                num_queries=self.num_queries,
                num_classes=self.num_classes,
                dn_number=self.num_denoising,
                label_noise_ratio=self.label_noise_ratio,
                box_noise_scale=self.box_noise_scale,
                noise=dn_noise,
            )
            if dn_meta["pad_size"] > 0:
                tgt = paddle.concat([dn_content, tgt], axis=1)
                ref_unact = paddle.concat([dn_ref_unact, ref_unact], axis=1)
                attn_allowed = attn_allowed_from_blocked(attn_blocked)
        extras = {
            "enc_logits": enc_logits,
            "enc_boxes": F.sigmoid(enc_coords_unact),
            "topk_indices": topk_indices,
            "dn_meta": dn_meta,
        }
        return (
            tgt,
            F.sigmoid(ref_unact),
            self.query_selection.query_pos(ref_unact),
            attn_allowed,
            extras,
        )

    def _learned_queries(self, memory):
        """Plain Deformable-DETR queries: learned (query_pos, content) pairs and fixed reference
        points [B, Q, 2] from query_pos; no proposals, no denoising."""
        bs = memory.shape[0]
        query_pos, tgt = paddle.split(self.query_embed.weight, 2, axis=1)
        query_pos = query_pos.unsqueeze(0).tile([bs, 1, 1])
        tgt = tgt.unsqueeze(0).tile([bs, 1, 1])
        init_points = F.sigmoid(self.reference_points(query_pos))
        extras = {"enc_logits": None, "enc_boxes": None, "topk_indices": None, "dn_meta": None}
        return tgt, init_points, query_pos, None, extras
