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

__all__ = ["sigmoid_focal_loss", "ia_bce_loss", "rank_weights", "l1_box_loss", "giou_box_loss"]


def _as_numpy(x, dtype):
    if isinstance(x, paddle.Tensor):
        x = x.numpy()
    return np.asarray(x, dtype=dtype).reshape([-1])


def _as_tensor(x):
    return x if isinstance(x, paddle.Tensor) else paddle.to_tensor(np.asarray(x))


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
    b = _as_numpy(batch_idx, np.int64)
    q = _as_numpy(query_idx, np.int64)
    c = _as_numpy(labels, np.int64)
    ious = _as_tensor(ious)
    if not (len(b) == len(q) == len(c) == int(np.prod(ious.shape))):
        raise ValueError(
            f"batch_idx/query_idx/labels/ious lengths differ: "
            f"{len(b)}, {len(q)}, {len(c)}, {list(ious.shape)}"
        )
    for name, v, hi in (("batch_idx", b, num_b), ("query_idx", q, num_q), ("labels", c, num_c)):
        if len(v) and (v.min() < 0 or v.max() >= hi):
            raise ValueError(f"{name} out of range [0, {hi}): min {v.min()}, max {v.max()}")

    flat_logits = logits.reshape([-1])
    prob = F.sigmoid(flat_logits)
    neg_w = prob**gamma
    if len(b) == 0:
        loss = -(neg_w * F.log_sigmoid(-flat_logits))
        return loss.sum() / num_boxes

    flat = (b * num_q + q) * num_c + c
    flat_t = paddle.to_tensor(flat)
    with paddle.no_grad():
        p_pos = paddle.gather(prob.detach(), flat_t)
        t = p_pos**alpha * ious.detach().astype(p_pos.dtype).reshape([-1]) ** (1 - alpha)
        t = t.clip(min=0.01)
        if rank_weights is not None:
            t = t * _as_tensor(rank_weights).detach().astype(t.dtype).reshape([-1])
        # keep the last occurrence of each duplicated entry
        _, last_rev = np.unique(flat[::-1], return_index=True)
        keep = len(flat) - 1 - last_rev
        keep_t = paddle.to_tensor(keep)
        uniq = paddle.to_tensor(flat[keep])
        zeros = paddle.zeros_like(flat_logits)
        pos_w = paddle.scatter(zeros, uniq, paddle.gather(t, keep_t), overwrite=True)
        matched = (
            paddle.scatter(zeros, uniq, paddle.ones([len(keep)], zeros.dtype), overwrite=True) > 0
        )
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
    """
    dtype = quality.dtype if isinstance(quality, paddle.Tensor) else paddle.float32
    qual = _as_numpy(quality, np.float64)
    groups = _as_numpy(group_ids, np.int64)
    if len(qual) != len(groups):
        raise ValueError(f"quality has {len(qual)} entries but group_ids has {len(groups)}")
    num = len(qual)
    if num == 0:
        return paddle.zeros([0], dtype=dtype)
    order = np.lexsort((np.arange(num), -qual, groups))
    sorted_groups = groups[order]
    run_start = np.ones(num, dtype=bool)
    run_start[1:] = sorted_groups[1:] != sorted_groups[:-1]
    start_pos = np.maximum.accumulate(np.where(run_start, np.arange(num), 0))
    rank = np.empty(num, dtype=np.int64)
    rank[order] = np.arange(num) - start_pos
    return paddle.to_tensor(np.exp(-rank / tau)).astype(dtype)


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
