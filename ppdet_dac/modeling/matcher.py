"""One-to-one Hungarian matching (O-decoder, denoising-free queries, encoder proposals).

Cost of assigning query q to GT g (official ``models/matcher.py``):
  C = cost_bbox · ||b_q - b_g||_1 + cost_class · focal(q, label_g) + cost_giou · (-GIoU(b_q, b_g))
  focal = alpha (1-p)^gamma (-log(p + 1e-8)) - (1-alpha) p^gamma (-log(1 - p + 1e-8)),  p = σ(logit)
solved per image with scipy's ``linear_sum_assignment``.
"""

import numpy as np
import paddle
import paddle.nn.functional as F
from ppdet.core.workspace import register, serializable
from scipy.optimize import linear_sum_assignment

from .box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from .debug_checks import check_class_ids

__all__ = ["DACHungarianMatcher", "NonFiniteCostError"]


class NonFiniteCostError(ValueError):
    """A matching cost (or one-to-many score) with NaN/inf entries.

    ``image`` is the index of the image in the batch; DACDETR re-raises it with the batch's
    ``im_id`` values so that the sample can be found."""

    def __init__(self, message, image):
        super().__init__(message)
        self.image = image


def non_finite_error(what, values, image, gt_boxes):
    """NonFiniteCostError for batch image ``image`` whose ``what`` matrix ``values`` (numpy) has
    NaN/inf entries, saying whether its ground-truth boxes (a tensor) are the cause."""
    gt_ok = bool(np.isfinite(gt_boxes.numpy()).all())
    cause = (
        "the predicted logits or boxes are NaN/inf (diverged training?)"
        if gt_ok
        else "its ground-truth boxes are NaN/inf"
    )
    return NonFiniteCostError(
        f"image {image} of the batch: {what} has "
        f"{(~np.isfinite(values)).sum()} non-finite entries: {cause}",
        image,
    )


def empty_pair():
    """(query_idx, gt_idx) of an image without matches: two empty int64 arrays."""
    return np.zeros([0], dtype=np.int64), np.zeros([0], dtype=np.int64)


def solve_per_image(num_queries, gt_labels, gt_boxes, what, matrix, solve):
    """[solve(matrix(i)) for every batch image i]: ``matrix(i)`` the image's [Q, n] NumPy
    matrix (its one host copy), ``solve`` -> (query_idx, gt_idx). An image without GT (or
    ``num_queries`` 0) gives ``empty_pair()``; a matrix with NaN/inf entries raises
    NonFiniteCostError naming the image and ``what``."""
    indices = []
    for i in range(len(gt_labels)):
        if int(gt_labels[i].shape[0]) == 0 or num_queries == 0:
            indices.append(empty_pair())
            continue
        values = matrix(i)
        if not np.isfinite(values).all():
            raise non_finite_error(what, values, i, gt_boxes[i])
        indices.append(solve(values))
    return indices


def _hungarian(cost):
    rows, cols = linear_sum_assignment(cost)
    return rows.astype(np.int64), cols.astype(np.int64)


@register
@serializable
class DACHungarianMatcher(object):
    """Hungarian matcher with the focal class cost of Deformable-DETR / DAC-DETR.

    Works for any label set: the encoder loss calls it with every label set to 0 (class-agnostic).
    No gradient flows through it.
    """

    def __init__(self, cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, alpha=0.25, gamma=2.0):
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError(
                "cost_class, cost_bbox and cost_giou are all 0; at least one must not be"
            )
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.alpha, self.gamma = alpha, gamma

    def cost_matrix(self, logits, boxes, gt_labels, gt_boxes):
        """Cost of one image -> numpy [Q, n].

        logits: [Q, C]; boxes: [Q, 4] cxcywh; gt_labels: int64 [n] in [0, C); gt_boxes: [n, 4] cxcywh.
        """
        check_class_ids(gt_labels, logits.shape[-1])  # a host copy only with debug checks
        with paddle.no_grad():
            prob = paddle.index_select(F.sigmoid(logits), gt_labels.reshape([-1]), axis=1)
            eps, alpha, gamma = 1e-8, self.alpha, self.gamma
            pos = alpha * (1 - prob) ** gamma * (-paddle.log(prob + eps))
            neg = (1 - alpha) * prob**gamma * (-paddle.log(1 - prob + eps))
            cost_class = pos - neg
            gt_boxes = gt_boxes.astype(boxes.dtype)
            cost_bbox = paddle.cdist(boxes, gt_boxes, p=1.0)
            cost_giou = -generalized_box_iou(
                box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(gt_boxes)
            )
            cost = (
                self.cost_bbox * cost_bbox
                + self.cost_class * cost_class
                + self.cost_giou * cost_giou
            )
        return cost.numpy()

    def __call__(self, logits, boxes, gt_labels, gt_boxes):
        """Match every image of the batch.

        logits: [B, Q, C] class logits; boxes: [B, Q, 4] normalised cxcywh;
        gt_labels: list of B int64 tensors [n_i]; gt_boxes: list of B tensors [n_i, 4] cxcywh.
        Returns a list of B tuples (query_idx np.int64 [k_i], gt_idx np.int64 [k_i]) with
        k_i = min(Q, n_i), query_idx ascending. An image without GT gives two empty arrays.
        """
        if logits.ndim != 3 or boxes.ndim != 3:
            raise ValueError(
                f"logits and boxes must be [B, Q, C] and [B, Q, 4], got "
                f"{list(logits.shape)} and {list(boxes.shape)}"
            )
        if len(gt_labels) != logits.shape[0] or len(gt_boxes) != logits.shape[0]:
            raise ValueError(
                f"batch size {logits.shape[0]} but {len(gt_labels)} gt_labels and "
                f"{len(gt_boxes)} gt_boxes entries"
            )

        def cost(i):
            return self.cost_matrix(logits[i], boxes[i], gt_labels[i], gt_boxes[i])

        return solve_per_image(
            logits.shape[1], gt_labels, gt_boxes, "matching cost", cost, _hungarian
        )
