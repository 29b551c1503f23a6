"""DAC-DETR's post-processor: top-k candidates, class-wise NMS, top detections.

The official code (``NMSPostProcess`` in ``models/deformable_detr.py``) does, per image:
sigmoid over all (query, class) pairs, keep the 10000 best, class-wise ``batched_nms`` at IoU
0.8, keep the first 300 (sorted by score), boxes as xyxy scaled by the original image size.
It is not a plain top-k like ppdet's ``DETRPostProcess``.

Implementation notes (what is exact and why):

* The class-wise NMS is Paddle's ``multiclass_nms3`` op, fed the per-query boxes [B, Q, 4] and
  the scores [B, C, Q] where every (query, class) pair outside the image's top candidates is
  set to -1 and filtered by a score threshold of -0.5. Per class it runs the same greedy NMS as
  torchvision's ``nms``: candidates in descending score order, a box is dropped when its IoU with
  an already kept box of its class is > the threshold; the IoU is computed in float32 as
  ``inter / (area1 + area2 - inter)`` with no +1 (``normalized=True``), on pixel boxes, as the
  official code does. The float32 IoU is compared with float32(0.8), which is what
  torchvision's CUDA kernel does (the official evaluation ran on GPU); torchvision's CPU kernel
  compares with the double 0.8, which differs only for an IoU exactly equal to float32(0.8).
* With ``nms_top_k=-1`` and ``keep_top_k=-1`` Paddle's GPU ``multiclass_nms3`` kernel falls
  back to its CPU kernel, so results are the same on every device, dygraph and exported.
* torchvision's ``batched_nms`` is exact class-wise NMS from torchvision 0.10 on for this many
  boxes (>4000 coordinates: per-class loop). torchvision 0.9 (the README's torch 1.8.0) always
  used the "coordinate offset" trick, which shifts boxes by label * (max_coord + 1) in float32
  and so rounds coordinates slightly; that rounding is not reproduced.
* Ties (equal float32 scores), which the official code leaves to torch's unspecified sort order,
  are broken here by the flattened index ``query * C + class`` (lower first), both for the
  candidate ranking inside a class and for the final order and the top-300 cut. Which of several
  tied pairs enter the top-10000 is left to ``paddle.topk``.
* Boxes are not clipped to the image (the official code does not clip); the deployment outputs
  clip them (``ppdet_dac.deploy.predictor``), the evaluation keeps them as they are.
"""

import paddle
import paddle.nn.functional as F

from ppdet.core.workspace import register

from .box_ops import box_cxcywh_to_xyxy

__all__ = ['DACNMSPostProcess']

# scores of (query, class) pairs that are not among an image's top candidates
_DROPPED_SCORE = -1.0
_SCORE_THRESHOLD = -0.5


@register
class DACNMSPostProcess(object):
    """Official DAC-DETR post-processing (``NMSPostProcess``), exportable.

    Args:
        num_top_candidates (int): (query, class) pairs kept per image before NMS (10000).
        nms_iou_threshold (float): class-wise NMS IoU threshold; a box is suppressed when its
            IoU with a kept box of the same class is greater than this (0.8).
        max_detections (int): detections kept per image after NMS (300).
    """

    def __init__(self, num_top_candidates=10000, nms_iou_threshold=0.8, max_detections=300):
        if int(num_top_candidates) != num_top_candidates or num_top_candidates < 1:
            raise ValueError(
                "num_top_candidates must be a positive integer, got {}".format(num_top_candidates)
            )
        if int(max_detections) != max_detections or max_detections < 1:
            raise ValueError(
                "max_detections must be a positive integer, got {}".format(max_detections)
            )
        if not 0.0 <= nms_iou_threshold <= 1.0:
            raise ValueError(
                "nms_iou_threshold must be in [0, 1], got {}".format(nms_iou_threshold)
            )
        self.num_top_candidates = int(num_top_candidates)
        self.nms_iou_threshold = float(nms_iou_threshold)
        self.max_detections = int(max_detections)

    def __call__(self, logits, boxes, im_shape, scale_factor):
        """Turn the last decoder layer's predictions into detections.

        Args:
            logits: [B, Q, C] float32 class logits (sigmoid scores, no background class).
            boxes: [B, Q, 4] float32 normalised (cx, cy, w, h).
            im_shape: [B, 2] float32 (h, w) of the resized network input.
            scale_factor: [B, 2] float32 (scale_y, scale_x) from original to resized image.

        Returns:
            bbox: [N, 6] float32 rows (label, score, x1, y1, x2, y2); label is the raw class
                index (0..C-1), boxes in pixels of the original image, whose size is
                ``floor(im_shape / scale_factor + 0.5)``. Rows are grouped by image (in batch
                order) and sorted by descending score inside an image.
            bbox_num: [B] int32, rows per image (at most ``max_detections``).

        Q and C must be static (known when tracing for export); B may be dynamic.
        ``candidates`` then ``select``: the exported graph also outputs the candidates, so
        that a deployment can re-run ``select`` at another NMS threshold.
        """
        return self.select(*self.candidates(logits, boxes, im_shape, scale_factor))

    def candidates(self, logits, boxes, im_shape, scale_factor):
        """The NMS input: (boxes_px [B, Q, 4] xyxy in original-image pixels, scores [B, C, Q]
        sigmoid scores, -1 for the (query, class) pairs outside an image's
        ``num_top_candidates``). Arguments as for ``__call__``."""
        if logits.ndim != 3 or boxes.ndim != 3 or boxes.shape[-1] != 4:
            raise ValueError(
                "logits must be [B, Q, C] and boxes [B, Q, 4], got {} and {}".format(
                    list(logits.shape), list(boxes.shape)
                )
            )
        num_queries, num_classes = int(logits.shape[1]), int(logits.shape[2])
        if num_queries < 0 or num_classes < 0:
            raise ValueError(
                "DACNMSPostProcess needs a static number of queries and classes, got logits "
                "shape {}".format(list(logits.shape))
            )
        if int(boxes.shape[1]) != num_queries:
            raise ValueError(
                "boxes has {} queries but logits has {}".format(boxes.shape[1], num_queries)
            )
        num_pairs = num_queries * num_classes

        prob = F.sigmoid(logits.astype('float32'))
        flat = prob.reshape([-1, num_pairs])  # [B, Q*C], index = query * C + class
        num_keep = min(self.num_top_candidates, num_pairs)
        if num_keep < num_pairs:
            _, top_idx = paddle.topk(flat, num_keep, axis=1)
            chosen = paddle.put_along_axis(
                paddle.zeros_like(flat), top_idx, paddle.ones_like(top_idx, dtype='float32'), axis=1
            )
            flat = paddle.where(chosen > 0, flat, paddle.full_like(flat, _DROPPED_SCORE))
        scores = flat.reshape([-1, num_queries, num_classes]).transpose([0, 2, 1])  # [B, C, Q]

        origin = paddle.floor(im_shape.astype('float32') / scale_factor.astype('float32') + 0.5)
        img_h, img_w = origin[:, 0], origin[:, 1]
        scale = paddle.stack([img_w, img_h, img_w, img_h], axis=-1).unsqueeze(1)  # [B, 1, 4]
        boxes_px = box_cxcywh_to_xyxy(boxes.astype('float32')) * scale  # [B, Q, 4]
        return boxes_px, scores

    def select(self, boxes_px, scores):
        """Class-wise NMS at ``nms_iou_threshold`` over ``candidates``' output, rows ordered
        and cut to ``max_detections`` per image: (bbox [N, 6], bbox_num [B] int32) as
        ``__call__`` returns them."""
        num_queries = int(scores.shape[2])
        num_classes = int(scores.shape[1])
        # out: [M, 6] (class, score, x1, y1, x2, y2), image-major then class-major;
        # index: [M, 1] = image * Q + query; num: [B]
        out, index, num = paddle._C_ops.multiclass_nms3(
            boxes_px, scores, None, _SCORE_THRESHOLD, -1, -1, self.nms_iou_threshold, True, 1.0, -1
        )

        index = index.reshape([-1]).astype('int64')
        image = index // num_queries
        pair = (index % num_queries) * num_classes + out[:, 0].astype('int64')
        score = out[:, 1]
        # order rows by (image asc, score desc, pair index asc): stable sorts, last key first
        order = paddle.argsort(pair, stable=True)
        order = paddle.gather(
            order, paddle.argsort(paddle.gather(score, order), descending=True, stable=True)
        )
        order = paddle.gather(order, paddle.argsort(paddle.gather(image, order), stable=True))

        # keep the first max_detections rows of every image
        sorted_image = paddle.gather(image, order)
        position = paddle.cumsum(paddle.ones_like(sorted_image)) - 1
        num64 = num.astype('int64')
        start = paddle.cumsum(num64) - num64
        rank = position - paddle.gather(start, sorted_image)
        keep = paddle.nonzero(rank < self.max_detections).reshape([-1])
        bbox = paddle.gather(out, paddle.gather(order, keep))
        bbox_num = paddle.minimum(num, paddle.full_like(num, self.max_detections))
        return bbox, bbox_num.astype('int32')
