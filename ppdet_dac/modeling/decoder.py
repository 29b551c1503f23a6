"""The decoder, where DAC lives: one set of layers runs two streams.

O-stream (the ordinary DETR decoder, one-to-one supervised):
    self-attention -> cross-attention -> FFN                in every layer.
C-stream (DAC's auxiliary decoder, one-to-many supervised):
    cross-attention -> FFN                                  with the SAME modules, no self-attention.

Layer 0 of the C-stream starts from the O-stream's post-self-attention state of layer 0, so the
two streams' layer-0 outputs are identical; from layer 1 on the C-stream feeds on its own output.
It has its own chain of reference boxes (refined by the same per-layer box heads, detached between
layers) and shares query_pos, the initial references and the encoder memory. Nothing is detached
between the streams: the C-stream's gradients train the shared cross-attention, FFN and heads.
With no self-attention, queries cannot see each other, so the C-stream cannot learn to suppress
duplicates; it therefore gathers many queries around each object ("divide and conquer"). The
C-stream costs no parameters and is only computed in training.
"""

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .box_ops import inverse_sigmoid
from .encoder import DeformableLayer
from . import init


class DACDecoderLayer(DeformableLayer):
    """The modules of one decoder layer. Post-norm, as in Deformable-DETR: self-attention (made
    first), then the deformable cross-attention and the FFN (``DeformableLayer``)."""

    DEFORMABLE_NAMES = ("cross_attn", "dropout_ca", "norm_ca")

    def __init__(self, d_model=256, num_heads=8, **kwargs):
        super().__init__(d_model, num_heads, **kwargs)
        # q/k/v as one packed [3C, C] projection would be initialised (xavier) with fan_out 3C.
        for proj in (self.self_attn.q_proj, self.self_attn.k_proj, self.self_attn.v_proj):
            init.xavier_(proj.weight, fan_in=d_model, fan_out=3 * d_model)
            init.constant_(proj.bias, 0.0)
        init.xavier_(self.self_attn.out_proj.weight)
        init.constant_(self.self_attn.out_proj.bias, 0.0)

    def _modules_first(self, d_model, num_heads, dropout):
        self.self_attn = nn.MultiHeadAttention(d_model, num_heads, dropout=dropout)
        self.dropout_sa = nn.Dropout(dropout)
        self.norm_sa = nn.LayerNorm(d_model)

    def self_attention(self, tgt, query_pos, attn_allowed=None):
        """tgt, query_pos: [B, Q, C]; attn_allowed: [Q, Q] bool, True = may attend. -> [B, Q, C]."""
        q = k = tgt + query_pos
        out = self.self_attn(q, k, tgt, attn_mask=attn_allowed)
        return self.norm_sa(tgt + self.dropout_sa(out))

    def cross_attention_ffn(
        self, tgt, query_pos, ref_input, memory, spatial_shapes, level_start_index, memory_padding
    ):
        """Cross-attention into the encoder memory, then the FFN. ref_input: [B, Q, L, 4];
        memory_padding: [B, S] bool, True = padding."""
        out = self.cross_attn(
            tgt + query_pos, ref_input, memory, spatial_shapes, level_start_index, memory_padding
        )
        return self.ffn(self.norm_ca(tgt + self.dropout_ca(out)))


class _BoxChain:
    """Iterative box refinement with look-forward-twice for one stream.

    Layer l refines the detached reference of layer l-1 (that is what the next layer attends
    with), while the box it *predicts* adds the same delta to the non-detached reference of
    layer l-1, so the loss of layer l also trains layer l-1's box head.
    """

    def __init__(self, init_ref):
        self.reference = init_ref  # detached, fed to the next layer
        self.previous = init_ref  # non-detached, for the predicted box

    def step(self, delta):
        refined = F.sigmoid(delta + inverse_sigmoid(self.reference))
        predicted = F.sigmoid(delta + inverse_sigmoid(self.previous))
        self.previous = refined
        self.reference = refined.detach()
        return predicted


class _FixedPoints:
    """Plain Deformable-DETR (no box refinement): every layer attends with the same reference
    points [B, Q, 2]; a layer's box is its head's delta with (cx, cy) offset by the point."""

    def __init__(self, init_points):
        self.reference = init_points

    def step(self, delta):
        centre = delta[..., :2] + inverse_sigmoid(self.reference)
        return F.sigmoid(paddle.concat([centre, delta[..., 2:]], axis=-1))


class DACDecoder(nn.Layer):
    def __init__(self, num_layers=6, **layer_kwargs):
        super().__init__()
        self.layers = nn.LayerList([DACDecoderLayer(**layer_kwargs) for _ in range(num_layers)])
        self.num_layers = num_layers

    def forward(
        self,
        tgt,
        init_ref,
        query_pos,
        levels,
        class_heads,
        box_heads,
        attn_allowed=None,
        run_c_stream=False,
        all_layers=True,
    ):
        """
        tgt: [B, Q, C] content queries (DN queries first in training); query_pos: [B, Q, C].
        init_ref: [B, Q, 4] sigmoid-space (cx, cy, w, h) initial reference boxes (no gradient),
          refined layer by layer; or [B, Q, 2] (x, y) reference points, kept by every layer
          (one-stage Deformable-DETR without box refinement).
        levels: the encoder output as a ``FlatLevels`` (transformer.py): ``tokens`` the memory
          [B, S, C], ``token_padding`` [B, S] bool (True = padding), ``spatial_shapes``,
          ``level_start_index`` and ``valid_ratios`` [B, L, 2] of its levels.
        class_heads / box_heads: per-layer heads, shared by both streams.
        attn_allowed: [Q, Q] bool, True = may attend (None = full attention).
        run_c_stream: also run DAC's C-stream (training only).
        all_layers: predict logits for every layer (training) or only the last (inference).

        Returns a dict of per-layer predictions, stacked on axis 0:
          'logits' [L', B, Q, K], 'boxes' [L', B, Q, 4] for the O-stream (L' = L or 1), and with
          run_c_stream also 'logits_c', 'boxes_c' [L, B, Q, ...] for the C-stream.
        """
        valid_ratios = levels.valid_ratios
        cross_args = (
            levels.tokens,
            levels.spatial_shapes,
            levels.level_start_index,
            levels.token_padding,
        )
        if init_ref.shape[-1] == 2:
            ratios = valid_ratios.unsqueeze(1)  # [B,1,L,2]
            chain_o, chain_c = _FixedPoints(init_ref), _FixedPoints(init_ref)
        else:
            ratios = paddle.concat([valid_ratios, valid_ratios], axis=-1).unsqueeze(1)  # [B,1,L,4]
            chain_o, chain_c = _BoxChain(init_ref), _BoxChain(init_ref)
        out_o, out_c = tgt, None
        logits_o, boxes_o, logits_c, boxes_c = [], [], [], []
        for lid, layer in enumerate(self.layers):
            last = lid == self.num_layers - 1

            after_self_attn = layer.self_attention(out_o, query_pos, attn_allowed)
            out_o = layer.cross_attention_ffn(
                after_self_attn, query_pos, chain_o.reference.unsqueeze(2) * ratios, *cross_args
            )
            box = chain_o.step(box_heads[lid](out_o))
            if all_layers or last:
                boxes_o.append(box)
                logits_o.append(class_heads[lid](out_o))

            if run_c_stream:
                c_input = after_self_attn if lid == 0 else out_c
                out_c = layer.cross_attention_ffn(
                    c_input, query_pos, chain_c.reference.unsqueeze(2) * ratios, *cross_args
                )
                boxes_c.append(chain_c.step(box_heads[lid](out_c)))
                logits_c.append(class_heads[lid](out_c))

        outputs = {"logits": paddle.stack(logits_o), "boxes": paddle.stack(boxes_o)}
        if run_c_stream:
            outputs["logits_c"] = paddle.stack(logits_c)
            outputs["boxes_c"] = paddle.stack(boxes_c)
        return outputs
