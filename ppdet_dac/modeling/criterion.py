"""Which prediction branch gets which assignment, loss and normaliser.

Per decoder layer l (suffix '' for the last layer, '_l' for layers 0..4):
  loss_{ce,bbox,giou}{sfx}             C-decoder, one-to-many assigner, N = 3·#GT, rank weights
  loss_{ce,bbox,giou}{sfx}_one2one     O-decoder, Hungarian,            N = #GT
  loss_{ce,bbox,giou}_dn{sfx}          C-decoder denoising, by index,   N = #GT·G
  loss_{ce,bbox,giou}_dn{sfx}_one2one  O-decoder denoising, by index,   N = #GT·G
plus loss_{ce,bbox,giou}_enc: encoder proposals, class-agnostic Hungarian, N = #GT.
#GT is summed over the batch, averaged over ranks, floored at 1. Every term is returned already
weighted (ce 1, bbox 5, giou 2; ce_enc 2), with their sum under 'loss'. Without DAC only the
O-decoder, its denoising and the encoder terms remain.
"""

import numpy as np
import paddle
import paddle.distributed as dist
import paddle.nn as nn
import paddle.nn.functional as F
from ppdet.core.workspace import register

from .box_ops import box_cxcywh_to_xyxy, paired_box_iou
from .losses import giou_box_loss, ia_bce_loss, l1_box_loss, rank_weights, sigmoid_focal_loss
from .one_to_many import OneToManyAssigner

DEFAULT_WEIGHTS = {
    "ce": 1.0,
    "bbox": 5.0,
    "giou": 2.0,
    "ce_enc": 2.0,
    "bbox_enc": 5.0,
    "giou_enc": 2.0,
}


def average_num_boxes(gt_labels):
    """Σ#GT over the batch, averaged over ranks, floored at 1 (a Python float).

    The count comes from the shapes (host values); only with several ranks is it all-reduced
    and copied back to the host (one copy per step, as the official code does)."""
    count = float(sum(int(l.shape[0]) for l in gt_labels))
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return max(count, 1.0)
    total = paddle.to_tensor([count], dtype="float32")
    dist.all_reduce(total)
    total = total / dist.get_world_size()
    return max(float(total.item()), 1.0)


def _flatten_indices(indices, gt_labels, gt_boxes):
    """Per-image (query_idx, gt_idx) -> batch_idx [K], query_idx [K] (NumPy int64), labels [K],
    boxes [K, 4] (tensors), group_ids [K] (NumPy int64, one id per (image, GT) pair). The index
    vectors stay on the host: they come from the host-side matching."""
    batch, query, labels, boxes, groups = [], [], [], [], []
    offset = 0
    for i, (q, g) in enumerate(indices):
        n = int(gt_labels[i].shape[0])
        if len(q) > 0:
            g_t = paddle.to_tensor(np.asarray(g, dtype="int64"))
            batch.append(np.full(len(q), i, dtype="int64"))
            query.append(np.asarray(q, dtype="int64"))
            labels.append(paddle.gather(gt_labels[i], g_t))
            boxes.append(paddle.gather(gt_boxes[i], g_t))
            groups.append(np.asarray(g, dtype="int64") + offset)
        offset += n
    if not batch:
        return None
    return (
        np.concatenate(batch),
        np.concatenate(query),
        paddle.concat(labels),
        paddle.concat(boxes),
        np.concatenate(groups),
    )


@register
class DACCriterion(nn.Layer):
    """Losses of DAC-DETR (and of the baseline with ``use_dac: false``).

    loss_class_type: 'ia_bce' (Align-DETR's IoU-aware BCE, the ``_ice`` configs) or 'focal'.
    o2m_box_source: 'o' scores the one-to-many assignment with O-decoder boxes (as the official
    code does) or 'c' with the C-decoder's own boxes; the class term always uses C-decoder logits.
    """

    __shared__ = ["num_classes", "use_dac"]
    __inject__ = ["matcher"]

    def __init__(
        self,
        matcher="DACHungarianMatcher",
        num_classes=91,
        use_dac=True,
        loss_class_type="ia_bce",
        loss_weights=None,
        o2m_box_source="o",
        o2m_max_k=6,
        o2m_threshold=0.4,
        o2m_num_queries_cap=300,
        o2m_normalizer=3.0,
        rank_tau=1.5,
        seed=None,
    ):
        super().__init__()
        if loss_class_type not in ("ia_bce", "focal"):
            raise ValueError(
                f"loss_class_type must be 'ia_bce' or 'focal', got {loss_class_type!r}"
            )
        if o2m_box_source not in ("o", "c"):
            raise ValueError(f"o2m_box_source must be 'o' or 'c', got {o2m_box_source!r}")
        unknown = set(loss_weights or {}) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(
                f"unknown loss_weights keys {sorted(unknown)}; known: {sorted(DEFAULT_WEIGHTS)}"
            )
        self.matcher, self.num_classes, self.use_dac = matcher, num_classes, use_dac
        self.loss_class_type, self.o2m_box_source = loss_class_type, o2m_box_source
        self.weights = dict(DEFAULT_WEIGHTS, **(loss_weights or {}))
        self.assigner = OneToManyAssigner(
            num_queries_cap=o2m_num_queries_cap, max_k=o2m_max_k, threshold=o2m_threshold
        )
        self.o2m_normalizer, self.rank_tau = o2m_normalizer, rank_tau
        self.rng = np.random.default_rng(seed)

    # -- one branch ---------------------------------------------------------------------------
    def _branch_losses(self, logits, boxes, indices, gt_labels, gt_boxes, num_boxes, ranked):
        """logits [B, Q, K], boxes [B, Q, 4], indices per image -> (ce, bbox, giou) unweighted."""
        flat = _flatten_indices(indices, gt_labels, gt_boxes)
        if flat is None:  # no positives: every query is a negative; box losses are zero
            zero = (boxes * 0.0).sum()
            empty = paddle.zeros([0], dtype="int64")
            if self.loss_class_type == "ia_bce":
                ce = ia_bce_loss(logits, empty, empty, empty, paddle.zeros([0]), num_boxes, None)
            else:
                ce = sigmoid_focal_loss(logits, paddle.zeros_like(logits), num_boxes)
            return ce, zero, zero
        batch_idx, query_idx, labels, tgt_boxes, groups = flat
        pos = paddle.to_tensor(np.stack([batch_idx, query_idx], axis=1))
        src_boxes = paddle.gather_nd(boxes, pos)
        weights = None
        if self.loss_class_type == "ia_bce" or ranked:
            ious = paired_box_iou(box_cxcywh_to_xyxy(src_boxes), box_cxcywh_to_xyxy(tgt_boxes))[0]
            ious = ious.detach()
        if ranked:
            prob = F.sigmoid(paddle.gather_nd(logits, paddle.concat([pos, labels.unsqueeze(1)], 1)))
            quality = (prob.detach() ** 0.25 * ious**0.75).clip(min=0.01)
            weights = rank_weights(quality, groups, tau=self.rank_tau)
        if self.loss_class_type == "ia_bce":
            ce = ia_bce_loss(logits, batch_idx, query_idx, labels, ious, num_boxes, weights)
        else:
            onehot = paddle.zeros_like(logits)
            onehot = paddle.scatter_nd_add(
                onehot,
                paddle.concat([pos, labels.unsqueeze(1)], 1),
                paddle.ones([pos.shape[0]], dtype=logits.dtype),
            )
            ce = sigmoid_focal_loss(logits, onehot.clip(max=1.0), num_boxes)
        return (
            ce,
            l1_box_loss(src_boxes, tgt_boxes, num_boxes, weights),
            giou_box_loss(src_boxes, tgt_boxes, num_boxes, weights),
        )

    def _put(self, losses, ce_bbox_giou, middle, suffix):
        for name, value in zip(("ce", "bbox", "giou"), ce_bbox_giou):
            weight_key = name + ("_enc" if middle == "_enc" else "")
            losses[f"loss_{name}{middle}{suffix}"] = value * self.weights[weight_key]

    # -- all branches -------------------------------------------------------------------------
    def forward(self, outputs, gt_labels, gt_boxes):
        """
        outputs: the transformer's training dict ('logits' [L, B, pad+Q, K], 'boxes', and with
          DAC 'logits_c', 'boxes_c'; 'enc_logits' [B, S, K], 'enc_boxes'; 'dn_meta').
        gt_labels: per image int64 [n] model class ids; gt_boxes: per image [n, 4] cxcywh.
        Returns {name: weighted loss} with the total under 'loss'.
        """
        num_boxes = average_num_boxes(gt_labels)
        dn_meta = outputs.get("dn_meta")
        pad = dn_meta["pad_size"] if dn_meta is not None else 0
        with_dn = dn_meta is not None
        streams = [("_one2one", outputs["logits"], outputs["boxes"])]
        if self.use_dac:
            streams.append(("", outputs["logits_c"], outputs["boxes_c"]))
        num_layers = outputs["logits"].shape[0]
        losses = {}
        for lid in range(num_layers):
            layer_sfx = "" if lid == num_layers - 1 else f"_{lid}"
            o_boxes = outputs["boxes"][lid, :, pad:]
            for branch_sfx, all_logits, all_boxes in streams:
                logits, boxes = all_logits[lid, :, pad:], all_boxes[lid, :, pad:]
                if branch_sfx == "_one2one":
                    indices = self.matcher(logits, boxes, gt_labels, gt_boxes)
                    values = self._branch_losses(
                        logits, boxes, indices, gt_labels, gt_boxes, num_boxes, ranked=False
                    )
                else:
                    source = o_boxes if self.o2m_box_source == "o" else boxes
                    indices = self.assigner(
                        source.detach(), logits.detach(), gt_boxes, gt_labels, self.rng
                    )
                    values = self._branch_losses(
                        logits,
                        boxes,
                        indices,
                        gt_labels,
                        gt_boxes,
                        self.o2m_normalizer * num_boxes,
                        ranked=True,
                    )
                self._put(losses, values, "", layer_sfx + branch_sfx)
                if with_dn:
                    self._put(
                        losses,
                        self._dn_losses(
                            all_logits[lid], all_boxes[lid], dn_meta, gt_labels, gt_boxes, num_boxes
                        ),
                        "_dn",
                        layer_sfx + branch_sfx,
                    )
        if outputs.get("enc_logits") is not None:  # two-stage models only
            self._put(
                losses, self._encoder_losses(outputs, gt_labels, gt_boxes, num_boxes), "_enc", ""
            )
        losses["loss"] = paddle.add_n(list(losses.values()))
        return losses

    def _dn_losses(self, logits, boxes, dn_meta, gt_labels, gt_boxes, num_boxes):
        """Denoising part of one layer: positive DN slot i is matched to its source GT by index."""
        pad = dn_meta["pad_size"]
        if pad == 0:  # no GT anywhere in the batch: keep the graph, contribute nothing
            zero = logits.sum() * 0.0
            return zero, zero, zero
        indices = list(zip(dn_meta["positive_idx"], dn_meta["gt_idx"]))
        return self._branch_losses(
            logits[:, :pad],
            boxes[:, :pad],
            indices,
            gt_labels,
            gt_boxes,
            num_boxes * dn_meta["num_dn_group"],
            ranked=False,
        )

    def _encoder_losses(self, outputs, gt_labels, gt_boxes, num_boxes):
        """Class-agnostic: every GT is class 0, matched one-to-one over all encoder tokens."""
        logits, boxes = outputs["enc_logits"], outputs["enc_boxes"]
        zero_labels = [paddle.zeros_like(l) for l in gt_labels]
        indices = self.matcher(logits, boxes, zero_labels, gt_boxes)
        flat = _flatten_indices(indices, zero_labels, gt_boxes)
        targets = paddle.zeros_like(logits)
        if flat is None:
            zero = (boxes * 0.0).sum()
            return sigmoid_focal_loss(logits, targets, num_boxes), zero, zero
        batch_idx, query_idx, labels, tgt_boxes, _ = flat
        pos = paddle.stack(
            [paddle.to_tensor(batch_idx), paddle.to_tensor(query_idx), labels], axis=1
        )
        targets = paddle.scatter_nd_add(targets, pos, paddle.ones([pos.shape[0]], logits.dtype))
        src_boxes = paddle.gather_nd(boxes, pos[:, :2])
        return (
            sigmoid_focal_loss(logits, targets.clip(max=1.0), num_boxes),
            l1_box_loss(src_boxes, tgt_boxes, num_boxes, None),
            giou_box_loss(src_boxes, tgt_boxes, num_boxes, None),
        )
