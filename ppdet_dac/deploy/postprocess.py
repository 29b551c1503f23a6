"""Post-processing of the exported model's outputs for deployment: the class-wise NMS re-run at
another IoU threshold (``reselect``), the score filter, boxes clipped to their image, per-image
splits and the JSON records of detections. Detections are float32 rows (label, score, x1, y1, x2,
y2) in original-image pixels; ``bbox_num`` [B] counts the rows of each image.
"""

import threading

import numpy as np
import paddle


_SELECT_LOCK = threading.Lock()  # dygraph calls from the service's predictor threads, one at a time


def reselect(nms_boxes, nms_scores, nms, nms_threshold):
    """The exported selection re-run at ``nms_threshold`` on the graph's candidates
    (``DACNMSPostProcess.select`` in dygraph on the CPU, the kernels the graph runs; then
    infer_cfg.yml's ``label_map``, as the model maps labels after its selection): the
    (bbox, bbox_num) an export at that threshold outputs."""
    from ppdet_dac.modeling.post_process import DACNMSPostProcess

    post = DACNMSPostProcess(int(nms["nms_top_k"]), float(nms_threshold), int(nms["keep_top_k"]))
    cpu = paddle.CPUPlace()
    with _SELECT_LOCK, paddle.no_grad():
        bbox, bbox_num = post.select(
            paddle.to_tensor(np.asarray(nms_boxes, np.float32), place=cpu),
            paddle.to_tensor(np.asarray(nms_scores, np.float32), place=cpu),
        )
        bbox, bbox_num = bbox.numpy().reshape(-1, 6), bbox_num.numpy().reshape(-1)
    label_map = nms.get("label_map")
    if label_map is None:
        return bbox, bbox_num.astype(np.int32)
    labels = np.asarray(label_map, np.int64)[bbox[:, 0].astype(np.int64)]
    keep = labels >= 0
    image = np.repeat(np.arange(len(bbox_num)), bbox_num)
    bbox = np.concatenate([labels[:, None].astype(np.float32), bbox[:, 1:]], axis=1)[keep]
    return bbox, np.bincount(image[keep], minlength=len(bbox_num)).astype(np.int32)


def filter_scores(bbox, bbox_num, threshold):
    """(bbox, bbox_num) without the rows scoring below ``threshold``."""
    bbox = np.asarray(bbox, dtype=np.float32).reshape(-1, 6)
    bbox_num = np.asarray(bbox_num).reshape(-1)
    keep = bbox[:, 1] >= threshold
    if keep.all():
        return bbox, bbox_num
    image = np.repeat(np.arange(len(bbox_num)), bbox_num.astype(np.int64))
    return bbox[keep], np.bincount(image[keep], minlength=len(bbox_num)).astype(bbox_num.dtype)


def image_sizes(feeds):
    """[B, 2] (height, width) of the original images of a feed dict, as the post-processor
    computes it: floor(im_shape / scale_factor + 0.5) in float32."""
    return np.floor(
        np.asarray(feeds["im_shape"], np.float32) / np.asarray(feeds["scale_factor"], np.float32)
        + np.float32(0.5)
    )


def clip_detections(bbox, bbox_num, sizes):
    """A copy of the rows with x clipped to [0, width] and y to [0, height] of their image
    (``sizes``: [B, 2] height, width)."""
    bbox = np.array(bbox, dtype=np.float32).reshape(-1, 6)
    sizes = np.asarray(sizes, np.float32).reshape(-1, 2)
    per_row = np.repeat(sizes, np.asarray(bbox_num).reshape(-1).astype(np.int64), axis=0)
    height, width = per_row[:, :1], per_row[:, 1:]
    bbox[:, [2, 4]] = np.clip(bbox[:, [2, 4]], 0, width)
    bbox[:, [3, 5]] = np.clip(bbox[:, [3, 5]], 0, height)
    return bbox


def split_detections(bbox, bbox_num):
    """[ΣN, 6] rows + per-image counts -> list of per-image [N_i, 6] float32 arrays."""
    bbox = np.asarray(bbox, dtype=np.float32).reshape(-1, 6)
    ends = np.cumsum(np.asarray(bbox_num).reshape(-1).astype(np.int64))
    return [bbox[s:e] for s, e in zip(np.concatenate([[0], ends[:-1]]), ends)]


COORDINATE_DECIMALS = 2  # pixel coordinates on the console: 2 decimals


def format_box(box):
    """'[x1, y1, x2, y2]' with ``COORDINATE_DECIMALS`` decimals: the coordinates of every console
    line of the tools (the JSON files keep full precision)."""
    return "[" + ", ".join(f"{float(v):.{COORDINATE_DECIMALS}f}" for v in box) + "]"


def detection_records(detections, label_list=None, threshold=0.0):
    """[N, 6] rows -> JSON-ready dicts {class_id, label, score, bbox [x1, y1, x2, y2]} with
    score >= threshold, highest score first."""
    rows = np.asarray(detections, dtype=np.float64).reshape(-1, 6)
    rows = rows[np.argsort(-rows[:, 1], kind="stable")]
    records = []
    for label, score, x1, y1, x2, y2 in rows:
        if score < threshold:
            continue
        cid = int(label)
        name = label_list[cid] if label_list and 0 <= cid < len(label_list) else str(cid)
        records.append(
            {
                "class_id": cid,
                "label": name,
                "score": float(score),
                "bbox": [float(x1), float(y1), float(x2), float(y2)],
            }
        )
    return records
