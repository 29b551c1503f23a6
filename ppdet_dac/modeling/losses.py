"""Loss terms of DAC-DETR: sigmoid focal loss, Align-DETR's IoU-aware BCE (IA-BCE), rank weights,
and the (optionally weighted) L1 / GIoU box losses.

Every loss returns a scalar already divided by the normaliser ``num_boxes`` (a Python number or a
0-d tensor); the caller decides which normaliser a branch uses (#GT, 3·#GT, #GT·G).
Matched entries are described by flat index vectors of length K: ``batch_idx`` (image),
``query_idx`` (query within the image) and ``labels`` (class channel).
"""

import numpy as np
import paddle
import paddle.nn.functional as F

from .box_ops import box_cxcywh_to_xyxy, paired_generalized_box_iou
from .debug_checks import host_ints

__all__ = ["sigmoid_focal_loss", "ia_bce_loss", "rank_weights", "l1_box_loss", "giou_box_loss"]


def _as_tensor(x):
    return x if isinstance(x, paddle.Tensor) else paddle.to_tensor(np.asarray(x))


def _index_tensor(name, values, high):
    """int64 tensor [K] of an index argument (tensor, array or list). Host values are checked to
    lie in [0, high) here; a tensor's values only with the debug checks on (debug_checks.py)."""
    host = host_ints(values)
    if host is not None and len(host) and (host.min() < 0 or host.max() >= high):
        raise ValueError(f"{name} out of range [0, {high}): min {host.min()}, max {host.max()}")
    if isinstance(values, paddle.Tensor):
        return values.reshape([-1]).astype("int64")
    return paddle.to_tensor(host)


def _num_entries(values):
    """Number of entries of a tensor, array or list (its shape; no host copy)."""
    shape = values.shape if isinstance(values, paddle.Tensor) else np.shape(values)
    return int(np.prod(shape))


def _last_occurrence(flat):
    """bool [K]: entry k of the int64 vector ``flat`` is the last one with its value."""
    order = paddle.argsort(flat, stable=True)  # equal values keep their input order
    ordered = paddle.gather(flat, order)
    last = paddle.concat([ordered[1:] != ordered[:-1], paddle.ones([1], dtype="bool")])
    return paddle.scatter(paddle.zeros_like(flat), order, last.astype("int64")) > 0


def sigmoid_focal_loss(logits, targets, num_boxes, alpha=0.25, gamma=2.0):
    """RetinaNet focal loss, summed over every element and divided by ``num_boxes``.

    logits: [B, Q, C] raw scores; targets: [B, Q, C] float in [0, 1] (one-hot for positives).
    alpha < 0 switches the alpha balancing off. Equals the official ``mean(1).sum() / N`` times Q.
    Returns a 0-d tensor.
    """
    prob = F.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.sum() / num_boxes


def ia_bce_loss(
    logits, batch_idx, query_idx, labels, ious, num_boxes, rank_weights=None, alpha=0.25, gamma=2.0
):
    """Align-DETR IoU-aware BCE over every (image, query, class) entry, divided by ``num_boxes``.

    logits: [B, Q, C]; batch_idx, query_idx, labels: int64 [K], the matched entries;
    ious: [K] IoU of each matched predicted box with its GT (treated as a constant);
    rank_weights: [K] or None (= 1), the DAC rank weight w of each match.

    With p = sigmoid(logits):
      t  = clamp(p[b,q,c]^alpha · IoU^(1-alpha), min=0.01), detached;  t' = t · w
      positive weight: t' at matched entries, 0 elsewhere;
      negative weight: 1 - t' at matched entries, p^gamma elsewhere (NOT detached: the gradient
      also flows through p^gamma, as in the official code, while 1 - t' is a constant);
      loss = Σ [ -pos_w · log p - neg_w · log(1 - p) ] / num_boxes,
    with log p = log_sigmoid(x) and log(1 - p) = log_sigmoid(-x) for stability.
    If the same (b, q, c) entry is matched twice (possible one-to-many, two GTs of one class),
    the later entry wins, as the official indexed assignment does on CPU.
    K = 0 gives the all-negative loss Σ -p^gamma · log(1 - p) / num_boxes.
    """
    if logits.ndim != 3:
        raise ValueError(f"logits must be [B, Q, C], got shape {list(logits.shape)}")
    num_b, num_q, num_c = logits.shape
    lengths = [_num_entries(v) for v in (batch_idx, query_idx, labels, ious)]
    if len(set(lengths)) != 1:
        raise ValueError(
            f"batch_idx/query_idx/labels/ious lengths differ: "
            f"{lengths[0]}, {lengths[1]}, {lengths[2]}, {list(_as_tensor(ious).shape)}"
        )
    b = _index_tensor("batch_idx", batch_idx, num_b)
    q = _index_tensor("query_idx", query_idx, num_q)
    c = _index_tensor("labels", labels, num_c)
    ious = _as_tensor(ious)

    flat_logits = logits.reshape([-1])
    prob = F.sigmoid(flat_logits)
    neg_w = prob**gamma
    if lengths[0] == 0:
        loss = -(neg_w * F.log_sigmoid(-flat_logits))
        return loss.sum() / num_boxes

    flat_t = (b * num_q + q) * num_c + c
    with paddle.no_grad():
        p_pos = paddle.gather(prob.detach(), flat_t)
        t = p_pos**alpha * ious.detach().astype(p_pos.dtype).reshape([-1]) ** (1 - alpha)
        t = t.clip(min=0.01)
        if rank_weights is not None:
            t = t * _as_tensor(rank_weights).detach().astype(t.dtype).reshape([-1])
        # keep the last occurrence of each duplicated entry: the others add exact zeros
        t = paddle.where(_last_occurrence(flat_t), t, paddle.zeros_like(t))
        zeros = paddle.zeros_like(flat_logits)
        pos_w = paddle.scatter(zeros, flat_t, t, overwrite=False)
        matched = paddle.scatter(zeros, flat_t, paddle.ones_like(t), overwrite=False) > 0
    neg_w = paddle.where(matched, 1 - pos_w, neg_w)
    loss = -pos_w * F.log_sigmoid(flat_logits) - neg_w * F.log_sigmoid(-flat_logits)
    return loss.sum() / num_boxes


def rank_weights(quality, group_ids, tau=1.5):
    """DAC rank weights exp(-rank / tau) -> float [K] tensor (dtype of ``quality``, no gradient).

    quality: [K] match quality (the IA-BCE t); group_ids: int64 [K], one id per (image, GT) pair.
    rank is the 0-based position of an entry among the entries of its group sorted by quality,
    descending, as the official ``get_local_rank_o2m``. Ties (e.g. several t clamped to 0.01) keep
    their input order: the earlier entry gets the lower rank (the official unstable sort leaves
    this unspecified).

    Computed on the device (no host copy): rank_k = #{j in k's group: q_j > q_k, or q_j = q_k
    and j < k}, and the weight looked up in the table exp(-r / tau), r = 0..K-1, made on the host.
    """
    if isinstance(quality, paddle.Tensor):
        dtype, qual = quality.dtype, quality.reshape([-1])
    else:
        dtype = paddle.float32
        qual = paddle.to_tensor(np.asarray(quality, dtype=np.float64).reshape([-1]))
    groups = _as_tensor(group_ids).reshape([-1]).astype("int64")
    num, num_groups = _num_entries(qual), _num_entries(groups)
    if num != num_groups:
        raise ValueError(f"quality has {num} entries but group_ids has {num_groups}")
    if num == 0:
        return paddle.zeros([0], dtype=dtype)
    with paddle.no_grad():
        qual = qual.detach()
        idx = paddle.arange(num, dtype="int64")
        # ahead[k, j]: entry j comes before entry k in its group's order
        ahead = paddle.logical_or(
            qual.unsqueeze(0) > qual.unsqueeze(1),
            paddle.logical_and(
                qual.unsqueeze(0) == qual.unsqueeze(1), idx.unsqueeze(0) < idx.unsqueeze(1)
            ),
        )
        ahead = paddle.logical_and(ahead, groups.unsqueeze(0) == groups.unsqueeze(1))
        rank = ahead.astype("int64").sum(axis=1)
        table = paddle.to_tensor(np.exp(-np.arange(num, dtype=np.int64) / tau)).astype(dtype)
        return paddle.gather(table, rank)


def _weighted_sum(per_box, weights):
    if weights is not None:
        per_box = per_box * weights.astype(per_box.dtype).reshape([-1])
    return per_box.sum()


def l1_box_loss(src, tgt, num_boxes, weights=None):
    """Σ_i w_i · ||src_i - tgt_i||_1 / num_boxes.  src, tgt: [K, 4] cxcywh; weights: [K] or None.

    K = 0 gives a zero that still depends on ``src``.
    """
    if src.shape[0] == 0:
        return src.sum() * 0.0 / num_boxes
    return _weighted_sum((src - tgt).abs().sum(-1), weights) / num_boxes


def giou_box_loss(src, tgt, num_boxes, weights=None):
    """Σ_i w_i · (1 - GIoU(src_i, tgt_i)) / num_boxes.  src, tgt: [K, 4] cxcywh; weights: [K] or None.

    K = 0 gives a zero that still depends on ``src``.
    """
    if src.shape[0] == 0:
        return src.sum() * 0.0 / num_boxes
    giou = paired_generalized_box_iou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt))
    return _weighted_sum(1 - giou, weights) / num_boxes
