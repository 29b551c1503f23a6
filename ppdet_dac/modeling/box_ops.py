"""Box helpers. Inside the model boxes are normalised ``cxcywh``; IoU work happens in ``xyxy``."""

import paddle


def box_cxcywh_to_xyxy(boxes):
    """boxes: [..., 4] (cx, cy, w, h) -> [..., 4] (x1, y1, x2, y2)."""
    cx, cy, w, h = paddle.unbind(boxes, axis=-1)
    return paddle.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def _area(boxes):
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1, boxes2):
    """Pairwise IoU of every box in ``boxes1`` [N, 4] with every box in ``boxes2`` [M, 4] (xyxy).

    Returns (iou [N, M], union [N, M]).
    """
    area1, area2 = _area(boxes1), _area(boxes2)
    lt = paddle.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = paddle.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clip(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return inter / union, union


def generalized_box_iou(boxes1, boxes2):
    """Pairwise generalised IoU [N, M] of xyxy boxes [N, 4] and [M, 4]."""
    iou, union = box_iou(boxes1, boxes2)
    lt = paddle.minimum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = paddle.maximum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clip(min=0)
    enclosing = wh[..., 0] * wh[..., 1]
    return iou - (enclosing - union) / enclosing


def paired_box_iou(boxes1, boxes2):
    """IoU of row i of ``boxes1`` with row i of ``boxes2`` (both [K, 4] xyxy).

    Returns (iou [K], union [K]).
    """
    lt = paddle.maximum(boxes1[:, :2], boxes2[:, :2])
    rb = paddle.minimum(boxes1[:, 2:], boxes2[:, 2:])
    wh = (rb - lt).clip(min=0)
    inter = wh[:, 0] * wh[:, 1]
    union = _area(boxes1) + _area(boxes2) - inter
    return inter / union, union


def paired_generalized_box_iou(boxes1, boxes2):
    """Generalised IoU of row i of ``boxes1`` with row i of ``boxes2`` (both [K, 4] xyxy) -> [K]."""
    iou, union = paired_box_iou(boxes1, boxes2)
    lt = paddle.minimum(boxes1[:, :2], boxes2[:, :2])
    rb = paddle.maximum(boxes1[:, 2:], boxes2[:, 2:])
    wh = (rb - lt).clip(min=0)
    enclosing = wh[:, 0] * wh[:, 1]
    return iou - (enclosing - union) / enclosing


def inverse_sigmoid(x, eps=1e-5):
    """log(x / (1 - x)) with x clamped to [0, 1] and both terms floored at ``eps`` (official eps 1e-5)."""
    x = x.clip(min=0.0, max=1.0)
    return paddle.log(x.clip(min=eps) / (1 - x).clip(min=eps))
