"""Sliced inference for large images (ppdet's ``--slice_infer``): overlapping tiles, each run
through the model at the model's input size, detections mapped back and merged.

A large photo resized whole to the model's input loses small objects (a 2,500 px aerial photo
read at 800 px shrinks 40 px objects to 13 px). Sliced, each tile of ``slice_size`` pixels is
resized on its own, so objects keep their scale. The tile grid is
``ppdet_dac.data.tiling.tile_windows`` (shared with the training tiles of tools/slice_image.py):
tiles start every ``slice - int(overlap_ratio * slice)`` pixels from the top-left, and the last
tile of a row or column ends at the image's edge (all tiles have one size: the slice size, or
the image's side where that is smaller). An object
cut by a tile edge is usually whole in the neighbouring tile when the overlap is larger than the
object; merging keeps one detection per object:

* ``nms``: class-wise greedy NMS over all tiles' detections (highest score first; a detection is
  dropped when its overlap with a kept one of its class is > ``match_threshold``), the overlap
  measured as ``ios`` (intersection over the smaller box: a part of an object cut by a tile edge
  is dropped for the whole one) or ``iou``;
* ``concat``: every tile's detections, unmerged.

Detections keep the scores their tile gave them. An image that fits in one tile is run whole,
without merging: its detections are exactly those of unsliced inference.

Without slicing, ``BigImageHint`` logs one line per run naming the first image the model's resize
shrinks to less than half its size (scale < ``HINT_SCALE``), with the ``--slice_infer`` flags
that read it in tiles at the model's scale.
"""

from typing import Annotated, Literal

import numpy as np
import paddle
from ppdet.utils.logger import setup_logger
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ppdet_dac.data.tiling import tile_size, tile_windows
from ppdet_dac.deploy.validation import describe_validation_error

logger = setup_logger(__name__)

COMBINE_METHODS = ("nms", "concat")
MATCH_METRICS = ("ios", "iou")
# hint at slicing when the model's resize shrinks an image to less than this fraction
HINT_SCALE = 0.5

_Pixels = Annotated[int, Field(gt=0)]
_Ratio = Annotated[float, Field(ge=0.0, lt=1.0)]


class SliceConfig(BaseModel):
    """ppdet's slice options: slice_size [h, w] pixels, overlap_ratio [h, w] in [0, 1),
    combine_method, match_threshold in [0, 1], match_metric (positional in this order, or by
    name). Frozen and comparable; a bad option is one ValueError naming it."""

    model_config = ConfigDict(frozen=True)

    slice_size: tuple[_Pixels, _Pixels] = (640, 640)
    overlap_ratio: tuple[_Ratio, _Ratio] = (0.25, 0.25)
    combine_method: Literal[COMBINE_METHODS] = "nms"
    match_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.6
    match_metric: Literal[MATCH_METRICS] = "ios"

    def __init__(
        self,
        slice_size=(640, 640),
        overlap_ratio=(0.25, 0.25),
        combine_method="nms",
        match_threshold=0.6,
        match_metric="ios",
    ):
        try:
            super().__init__(
                slice_size=slice_size,
                overlap_ratio=overlap_ratio,
                combine_method=combine_method,
                match_threshold=match_threshold,
                match_metric=match_metric,
            )
        except ValidationError as err:
            raise ValueError(describe_validation_error(err)) from None

    def tile_size(self, height, width):
        """(rows, cols) of every tile of a height x width image."""
        return tile_size(height, width, self.slice_size)

    def windows(self, height, width):
        """Tiles of a height x width image: int [T, 4] rows (x1, y1, x2, y2), row-major."""
        return tile_windows(height, width, self.slice_size, self.overlap_ratio)


def _greedy_ios(boxes, scores, labels, threshold):
    """Indices kept by class-wise greedy NMS on intersection over the smaller box, by score."""
    order = np.argsort(-scores, kind="stable")
    boxes, labels = boxes[order].astype(np.float64), labels[order]
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(
        boxes[:, 3] - boxes[:, 1], 0, None
    )
    alive = np.ones(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if not alive[i]:
            continue
        keep.append(i)
        rest = np.flatnonzero(alive[i + 1 :] & (labels[i + 1 :] == labels[i])) + i + 1
        if not len(rest):
            continue
        iw = np.clip(
            np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]),
            0,
            None,
        )
        ih = np.clip(
            np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]),
            0,
            None,
        )
        smaller = np.minimum(areas[i], areas[rest])
        with np.errstate(divide="ignore", invalid="ignore"):
            ios = np.where(smaller > 0, iw * ih / smaller, 0.0)
        alive[rest[ios > threshold]] = False
    return order[keep]


def _class_nms_iou(boxes, scores, labels, threshold):
    """Indices kept by class-wise NMS on IoU (paddle.vision.ops.nms), by score."""
    categories = [int(c) for c in np.unique(labels)]
    with paddle.no_grad():
        keep = paddle.vision.ops.nms(
            paddle.to_tensor(boxes, dtype="float32", place=paddle.CPUPlace()),
            float(threshold),
            scores=paddle.to_tensor(scores, dtype="float32", place=paddle.CPUPlace()),
            category_idxs=paddle.to_tensor(labels, dtype="int64", place=paddle.CPUPlace()),
            categories=categories,
        )
    return keep.numpy().reshape(-1)


def merge_detections(detections, config):
    """Rows (label, score, x1, y1, x2, y2) of every tile, in image pixels -> the merged rows,
    highest score first (``config.combine_method``)."""
    dets = np.asarray(detections, dtype=np.float32).reshape(-1, 6)
    if config.combine_method == "concat" or len(dets) < 2:
        return dets[np.argsort(-dets[:, 1], kind="stable")]
    labels = dets[:, 0].astype(np.int64)
    if config.match_metric == "ios":
        keep = _greedy_ios(dets[:, 2:], dets[:, 1], labels, config.match_threshold)
    else:
        keep = _class_nms_iou(dets[:, 2:], dets[:, 1], labels, config.match_threshold)
    kept = dets[keep]
    return kept[np.argsort(-kept[:, 1], kind="stable")]


def sliced_detections(image, config, detect, batch_size=1):
    """Detections of one RGB uint8 [H, W, 3] image, sliced by ``config``.

    detect: list of RGB tile arrays -> list of float32 [N_i, 6] detections in tile pixels (rows
    label, score, x1, y1, x2, y2, clipped to the tile); called with ``batch_size`` tiles at a
    time. Returns float32 [N, 6] rows in image pixels, merged, highest score first; an image
    that fits in one tile is run whole and its detections returned as ``detect`` gives them
    (no merge: unsliced inference's result).
    """
    height, width = image.shape[:2]
    windows = config.windows(height, width)
    if len(windows) == 1:
        return np.array(detect([image])[0], dtype=np.float32).reshape(-1, 6)
    step = max(int(batch_size), 1)
    found = [np.zeros((0, 6), np.float32)]
    for start in range(0, len(windows), step):
        batch = windows[start : start + step]
        tiles = [np.ascontiguousarray(image[y1:y2, x1:x2]) for x1, y1, x2, y2 in batch]
        for (x1, y1, _, _), dets in zip(batch, detect(tiles)):
            dets = np.array(dets, dtype=np.float32).reshape(-1, 6)
            dets[:, 2:] += np.array([x1, y1, x1, y1], dtype=np.float32)
            found.append(dets)
    return merge_detections(np.concatenate(found), config)


class BigImageHint:
    """The one-line hint of a run without slicing (``check`` logs it for the first image only):
    an image the model's resize (``preprocessor``'s Resize steps) shrinks to less than
    ``HINT_SCALE`` of its size loses its small objects; ``--slice_infer`` with tiles of the
    model's input short side reads it at the model's own scale."""

    def __init__(self, preprocessor):
        self.preprocessor = preprocessor
        self.given = False

    def check(self, height, width, what="an image"):
        """Log the hint (once) when a height x width image is shrunk below HINT_SCALE; the line
        logged, or None."""
        if self.given:
            return None
        scale = self.preprocessor.resize_scale(height, width)
        side = self.preprocessor.input_short_side()
        if scale >= HINT_SCALE or side is None:
            return None
        self.given = True
        line = (
            f"{what} is {width} x {height} pixels and the model reads it resized by "
            f"{scale:.2f}, so its small objects shrink with it: --slice_infer --slice_size "
            f"{side} {side} runs it in tiles at the model's scale (this hint: once per run)"
        )
        logger.warning(line)
        return line
