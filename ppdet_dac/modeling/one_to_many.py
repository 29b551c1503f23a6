"""DAC's one-to-many assigner for the C-decoder (official ``models/onetomany.py``, Stage2Assigner).

Per image, with score C[q, g] = iou_weight · IoU(box_q, gt_g) + score_weight · σ(logit[q, label_g]):
  1. every query takes its arg-max GT; it is positive if that maximum is >= ``threshold``;
  2. low-quality rule: each GT's top-1 query by C is forced positive, but keeps its own arg-max GT
     (which may be a different GT, so that GT can end up with no positive at all);
  3. at most int(num_queries_cap · positive_fraction) positives are kept, drawn at random;
  4. a GT g counted c_g times among the kept positives is assigned its top-min(c_g, max_k) queries
     by C. These need not be the queries that passed the threshold, and one query can be
     assigned to several GTs.
Ties are broken towards the lower index everywhere (arg-max GT, forced query, top-k order).
"""

import numpy as np
import paddle
import paddle.nn.functional as F

from .box_ops import box_cxcywh_to_xyxy, box_iou
from .debug_checks import check_class_ids
from .matcher import empty_pair, solve_per_image

__all__ = ["OneToManyAssigner"]


class OneToManyAssigner(object):
    """Stage2Assigner of DAC-DETR (no gradient; the official code hard-codes the cap 300 -> 75).

    The caller chooses the box source: the official code scores with the **O-decoder** boxes and
    the C-decoder logits (DAC-DETR issue #8); the C-decoder boxes are the alternative.
    """

    def __init__(
        self,
        num_queries_cap=300,
        positive_fraction=0.25,
        max_k=6,
        threshold=0.4,
        iou_weight=0.7,
        score_weight=0.3,
    ):
        if max_k < 1:
            raise ValueError(f"max_k must be >= 1, got {max_k}")
        if not 0 <= positive_fraction <= 1:
            raise ValueError(f"positive_fraction must lie in [0, 1], got {positive_fraction}")
        self.num_queries_cap, self.positive_fraction = num_queries_cap, positive_fraction
        self.max_k, self.threshold = max_k, threshold
        self.iou_weight, self.score_weight = iou_weight, score_weight

    @property
    def max_positives(self):
        """Positives kept per image before the top-k step: int(num_queries_cap · positive_fraction)."""
        return int(self.num_queries_cap * self.positive_fraction)

    def score_matrix(self, pred_boxes, pred_logits, gt_boxes, gt_labels):
        """Score of one image -> numpy [Q, n].

        pred_boxes: [Q, 4] cxcywh; pred_logits: [Q, C]; gt_boxes: [n, 4] cxcywh; gt_labels: int64 [n].
        """
        check_class_ids(gt_labels, pred_logits.shape[-1])  # a host copy only with debug checks
        with paddle.no_grad():
            iou = box_iou(
                box_cxcywh_to_xyxy(pred_boxes),
                box_cxcywh_to_xyxy(gt_boxes.astype(pred_boxes.dtype)),
            )[0]
            prob = paddle.index_select(F.sigmoid(pred_logits), gt_labels.reshape([-1]), axis=1)
            score = self.iou_weight * iou + self.score_weight * prob.astype(iou.dtype)
        return score.numpy()

    def assign_scores(self, score, rng):
        """Steps 1-4 on a precomputed score matrix [Q, n] (numpy) -> (query_idx, gt_idx) np.int64.

        Output is grouped by GT index ascending; within a GT, queries by score descending.
        """
        score = np.asarray(score)
        num_q, num_gt = score.shape
        if num_q == 0 or num_gt == 0:
            return empty_pair()
        if not np.isfinite(score).all():
            raise ValueError(
                f"assignment score has {(~np.isfinite(score)).sum()} non-finite entries"
            )
        matches = score.argmax(axis=1)  # each query's best GT
        positive = score[np.arange(num_q), matches] >= self.threshold
        positive[score.argmax(axis=0)] = True  # each GT's best query, forced
        pos_idx = np.flatnonzero(positive)
        if len(pos_idx) > self.max_positives:
            pos_idx = pos_idx[rng.permutation(len(pos_idx))[: self.max_positives]]
        counts = np.bincount(matches[pos_idx], minlength=num_gt)
        k = min(self.max_k, num_q)
        top = np.argsort(-score.T, axis=1, kind="stable")[:, :k]  # [n, k] best queries per GT
        keep = np.arange(k)[None, :] < counts[:, None]
        gt_idx = np.broadcast_to(np.arange(num_gt)[:, None], top.shape)[keep]
        return top[keep].astype(np.int64), gt_idx.astype(np.int64)

    def __call__(self, pred_boxes, pred_logits, gt_boxes, gt_labels, rng=None):
        """Assign every image of the batch.

        pred_boxes: [B, Q, 4] cxcywh (O- or C-decoder boxes, the caller's choice);
        pred_logits: [B, Q, C] C-decoder logits; gt_boxes: list of B tensors [n_i, 4] cxcywh;
        gt_labels: list of B int64 tensors [n_i]; rng: numpy.random.Generator for the subsampling
        (only drawn from when an image has more positives than the cap; None = a fresh generator).
        Returns a list of B tuples (query_idx np.int64 [k_i], gt_idx np.int64 [k_i]).
        """
        if pred_boxes.ndim != 3 or pred_logits.ndim != 3:
            raise ValueError(
                f"pred_boxes and pred_logits must be [B, Q, 4] and [B, Q, C], got "
                f"{list(pred_boxes.shape)} and {list(pred_logits.shape)}"
            )
        batch = pred_boxes.shape[0]
        if len(gt_boxes) != batch or len(gt_labels) != batch:
            raise ValueError(
                f"batch size {batch} but {len(gt_boxes)} gt_boxes and "
                f"{len(gt_labels)} gt_labels entries"
            )
        if rng is None:
            rng = np.random.default_rng()

        def score(i):
            return self.score_matrix(pred_boxes[i], pred_logits[i], gt_boxes[i], gt_labels[i])

        def assign(values):
            return self.assign_scores(values, rng)

        what = "one-to-many assignment score"
        return solve_per_image(pred_boxes.shape[1], gt_labels, gt_boxes, what, score, assign)
