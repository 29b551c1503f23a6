"""Training on tiles of large images (``tools/slice_image.py``): the tile grid, shared with sliced
inference, and a COCO set of tile images written from a COCO file or Pascal-VOC folders.

**Grid** (``tile_windows``; ``ppdet_dac.deploy.slicing`` runs ``--slice_infer`` on the same
grid): tiles of ``slice_size`` [h, w] pixels start every ``side - int(overlap_ratio * side)``
pixels from the top-left, and the last tile of a row or column is shifted inward to end at the
image's edge, so every tile has the full slice size. An image side shorter than the slice gives
one tile of that side: an image smaller than a tile stays one tile, unpadded.

**Boxes** (``clip_boxes``): the boxes of an image are first read with the readers' rules
(``ppdet_dac.data.annotations``: clamped to the image; malformed boxes and boxes without area
are skipped and logged), then clipped to each tile. A clipped box is kept when it has area and
keeps at least ``min_area_ratio`` of the box's area (default 0.5: a tile keeps an object of
which at least half is inside; a smaller piece is usually whole in a neighbouring tile when the
overlap is larger than the object, and sliced inference's merge prefers the whole one).
Annotations keep their ``category_id``, ``iscrowd`` and ``difficult``; segmentations are not
carried over (DETR trains on boxes).

**Tiles without boxes** are left out unless ``keep_empty``: in large photos with sparse objects
they can outnumber the others several times over, and they hold background the model also sees
around the objects of the other tiles. Kept, they are trained on where the dataset has
``allow_empty: true`` (the COCO recipe's TrainDataset; the class default drops them).

**Output** (``slice_dataset``): ``<output_dir>/images/<file_name without extension>_<x1>_<y1>_
<x2>_<y2><extension>`` per tile (the source's sub-folders kept; JPEG tiles re-encoded at
quality 95, PNG and BMP lossless, any other extension written as PNG), then
``<output_dir>/<json_name>``: ``images`` (ids 1..T; ``file_name`` relative to
``<output_dir>/images``; ``source_id``, ``source_file_name`` and ``window`` [x1, y1, x2, y2]
in the source image), ``annotations`` (ids 1..A, boxes in tile pixels) and the source's
``categories``. Every file is written atomically (``ppdet_dac.utils.atomic``), the annotation
file last. Refused before anything is written, each with one error naming the file: no images,
a missing image file, tiles that would go to a folder holding input images, an annotation file
that would replace an input; while tiling: an image that does not decode (``image_io``'s
formats and pixel limit) or whose decoded size is not the size its annotation declares.
"""

import dataclasses
import json
import os

import cv2
import numpy as np
from ppdet.utils.logger import setup_logger

from ppdet_dac.data import annotations as rules
from ppdet_dac.data.duplicates import check_no_duplicates
from ppdet_dac.data.image_io import DEFAULT_MAX_PIXELS, decode_checked
from ppdet_dac.data.voc import convert_voc
from ppdet_dac.utils.atomic import atomic_open, write_bytes

logger = setup_logger(__name__)

__all__ = [
    "DEFAULT_MIN_AREA_RATIO",
    "TILE_FOLDER",
    "TileOptions",
    "tile_size",
    "tile_starts",
    "tile_windows",
    "clip_boxes",
    "image_tiles",
    "tile_name",
    "coco_source",
    "voc_source",
    "slice_dataset",
]

DEFAULT_MIN_AREA_RATIO = 0.5
TILE_FOLDER = "images"
JPEG_QUALITY = 95
TILE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")  # written in their own format, others as PNG


def tile_size(height, width, slice_size):
    """(rows, cols) of every tile of a height x width image cut in ``slice_size`` [h, w]."""
    return min(slice_size[0], height), min(slice_size[1], width)


def tile_starts(length, tile, ratio):
    """Tile starts along one side: every ``tile - int(ratio * tile)`` pixels, the last one at
    ``length - tile``."""
    step = max(tile - int(ratio * tile), 1)
    return list(range(0, length - tile, step)) + [length - tile]


def tile_windows(height, width, slice_size, overlap_ratio):
    """Tiles of a height x width image: int64 [T, 4] rows (x1, y1, x2, y2), row-major."""
    rows, cols = tile_size(height, width, slice_size)
    ys = tile_starts(height, rows, overlap_ratio[0])
    xs = tile_starts(width, cols, overlap_ratio[1])
    return np.array([(x, y, x + cols, y + rows) for y in ys for x in xs], dtype=np.int64)


def _pair(value, name, kind):
    values = [value, value] if np.isscalar(value) else list(value)
    if len(values) != 2 or not all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{name} must be one {kind.__name__} or two [h, w], got {value!r}")
    return tuple(values)


@dataclasses.dataclass(frozen=True)
class TileOptions:
    """How images are cut: ``slice_size`` [h, w] pixels (or one int), ``overlap_ratio`` [h, w]
    in [0, 1) (or one number), ``min_area_ratio`` in [0, 1], ``keep_empty``. A bad value is one
    ValueError naming the option."""

    slice_size: tuple = (640, 640)
    overlap_ratio: tuple = (0.25, 0.25)
    min_area_ratio: float = DEFAULT_MIN_AREA_RATIO
    keep_empty: bool = False

    def __post_init__(self):
        size = _pair(self.slice_size, "slice_size", int)
        if min(size) < 1:
            raise ValueError(f"slice_size must be positive pixel counts, got {list(size)}")
        ratio = tuple(float(v) for v in _pair(self.overlap_ratio, "overlap_ratio", (int, float)))
        if not all(0.0 <= v < 1.0 for v in ratio):
            raise ValueError(f"overlap_ratio must be in [0, 1), got {list(ratio)}")
        if not 0.0 <= float(self.min_area_ratio) <= 1.0:
            raise ValueError(f"min_area_ratio must be in [0, 1], got {self.min_area_ratio!r}")
        object.__setattr__(self, "slice_size", size)
        object.__setattr__(self, "overlap_ratio", ratio)
        object.__setattr__(self, "min_area_ratio", float(self.min_area_ratio))


def clip_boxes(boxes, window, min_area_ratio):
    """Boxes float [N, 4] (x1, y1, x2, y2, image pixels) clipped to ``window`` (x1, y1, x2, y2):
    (indices of the boxes kept, float64 [K, 4] their clipped boxes in tile pixels). A box is
    kept when its clipped part has area > 0 and >= ``min_area_ratio`` x its own area."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = (float(v) for v in window)
    clipped = np.clip(boxes, [x1, y1, x1, y1], [x2, y2, x2, y2])
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = np.flatnonzero((inside > 0) & (inside >= min_area_ratio * area))
    return keep, clipped[keep] - np.array([x1, y1, x1, y1])


def image_tiles(boxes, height, width, options):
    """The tiles of one height x width image with ``boxes`` [N, 4] (x1, y1, x2, y2):
    [(window, indices of the boxes kept, their boxes in tile pixels)] in grid order, empty
    tiles left out unless ``options.keep_empty``; and the number of box parts (a box's
    intersection with a tile, of area > 0) dropped for ``min_area_ratio``."""
    tiles, dropped = [], 0
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    for window in tile_windows(height, width, options.slice_size, options.overlap_ratio):
        keep, clipped = clip_boxes(boxes, window, options.min_area_ratio)
        touching, _ = clip_boxes(boxes, window, 0.0)
        dropped += len(touching) - len(keep)
        if len(keep) or options.keep_empty:
            tiles.append(([int(v) for v in window], keep, clipped))
    return tiles, dropped


def tile_name(file_name, window):
    """The tile's path relative to the tile folder: ``file_name``'s path without extension,
    ``_x1_y1_x2_y2``, the extension (``.png`` appended to other extensions). ValueError for a
    ``file_name`` that leaves the image folder."""
    name = os.path.normpath(file_name)
    if os.path.isabs(name) or name.split(os.sep)[0] == os.pardir:
        raise ValueError(
            f"file_name {file_name!r} is not inside the image folder; its tiles would land "
            "outside the output folder"
        )
    root, ext = os.path.splitext(name)
    if ext.lower() not in TILE_EXTS:
        root, ext = name, ".png"
    return "{}_{}_{}_{}_{}{}".format(root, *window, ext).replace(os.sep, "/")


def coco_source(json_path):
    """The checked dict of a COCO annotation file (structure, category ids, no duplicated ids);
    FileNotFoundError / ValueError name the file."""
    anno = rules.read_coco_json(json_path)
    check_no_duplicates(anno, json_path)
    rules.annotations_by_image(json_path, anno, rules.class_ids(json_path, anno)[0])
    return anno


def voc_source(anno_dir, anno_list, label_list, label_map=None):
    """The COCO dict of a Pascal-VOC set (``ppdet_dac.data.voc.convert_voc``: x2coco's form,
    ``label_map`` as x2coco's ``--label_map``)."""
    anno = convert_voc(anno_dir, anno_list, label_list, label_map)
    check_no_duplicates(anno, anno_list)
    return anno


def _encode(tile, ext, what):
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if ext in (".jpg", ".jpeg") else []
    ok, data = cv2.imencode(ext, tile, params)
    if not ok:
        raise ValueError(f"cannot encode {what} as {ext}")
    return data.tobytes()


def _check_outputs(plan, image_dir, tile_dir, json_out, inputs):
    """ValueError when the tiles would go to a folder that holds input images, or the
    annotation file would replace an input file; FileNotFoundError naming missing images."""
    missing = [path for _, path, _ in plan if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(plan)} image files not found (under --image_dir "
            f"{image_dir}): {rules.first_few(missing)}"
        )
    image_folders = {os.path.realpath(os.path.dirname(path)) for _, path, _ in plan}
    for img, path, _ in plan:
        folder = os.path.dirname(os.path.join(tile_dir, tile_name(img["file_name"], (0,) * 4)))
        if os.path.realpath(folder) in image_folders:
            raise ValueError(
                f"--output_dir: the tiles of {path} would be written to {folder}, which holds "
                "input images; give an output folder apart from the images"
            )
    if os.path.realpath(json_out) in {os.path.realpath(p) for p in inputs}:
        raise ValueError(f"the tile annotation file {json_out} would replace an input file")


def _plan(anno, source, image_dir):
    """[(image entry, image path, [(annotation, [x1, y1, x2, y2])])] of the images whose size
    is usable, boxes read with the readers' rules (skips logged with one summary per kind)."""
    names = rules.CocoNames(source)
    skips = rules.new_skip_logs(names)
    by_image = rules.annotations_by_image(source, anno, rules.class_ids(source, anno)[0])
    plan = []
    for img in anno["images"]:
        path = os.path.join(image_dir, img["file_name"])
        size = rules.checked_image_size(img, names, skips, path)
        if size is not None:
            kept = rules.clean_boxes(img, *size, by_image.get(img["id"], []), names, skips, True)
            plan.append((img, path, kept))
    for kind in ("size", "malformed", "degenerate"):
        skips[kind].summary(source, len(anno["images"]) if kind == "size" else None)
    if not plan:
        raise ValueError(f"{source}: no image to slice ({len(anno['images'])} image entries)")
    return plan


def _tile_entries(img, kept, tiles, first_id):
    """COCO image and annotation entries of one image's ``tiles`` (``image_tiles``), the tiles
    numbered from ``first_id``."""
    images, annotations = [], []
    for tile_id, (window, keep, clipped) in enumerate(tiles, first_id):
        images.append(
            {
                "id": tile_id,
                "file_name": tile_name(img["file_name"], window),
                "width": window[2] - window[0],
                "height": window[3] - window[1],
                "source_id": img["id"],
                "source_file_name": img["file_name"],
                "window": window,
            }
        )
        for k, (x1, y1, x2, y2) in zip(keep, clipped.tolist()):
            ann = kept[k][0]
            annotations.append(
                {
                    "id": len(annotations) + 1,  # renumbered over the whole set by the caller
                    "image_id": tile_id,
                    "category_id": ann["category_id"],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(ann.get("iscrowd", 0) or 0),
                    **({"difficult": ann["difficult"]} if "difficult" in ann else {}),
                }
            )
    return images, annotations


def slice_dataset(
    anno,
    source,
    image_dir,
    output_dir,
    options=None,
    max_pixels=DEFAULT_MAX_PIXELS,
    json_name="annotations.json",
    inputs=(),
):
    """Cut the images of the COCO dict ``anno`` (read from ``source``; ``file_name`` relative to
    ``image_dir``) into tiles and write the COCO set of tiles under ``output_dir`` (module
    docstring). ``inputs``: the input annotation files, never replaced. Returns (path of the
    annotation file, {'images', 'tiles', 'empty_tiles', 'boxes', 'dropped'}: source images,
    tiles written, tiles without boxes left out, boxes kept, box parts dropped)."""
    options = options or TileOptions()
    plan = _plan(anno, source, image_dir)
    tile_dir = os.path.join(output_dir, TILE_FOLDER)
    json_out = os.path.join(output_dir, json_name)
    _check_outputs(plan, image_dir, tile_dir, json_out, inputs)
    images, annotations = [], []
    stats = {"images": len(plan), "tiles": 0, "empty_tiles": 0, "boxes": 0, "dropped": 0}
    for img, path, kept in plan:
        im = decode_checked(np.fromfile(path, dtype=np.uint8), max_pixels, f"image file {path}")
        declared = (float(img["height"]), float(img["width"]))
        if im.shape[:2] != declared:
            raise ValueError(
                f"image file {path} is {im.shape[1]} x {im.shape[0]} pixels, but {source} "
                f"declares {img['width']} x {img['height']} (image id {img['id']}); its boxes "
                "would be cut at the wrong places"
            )
        boxes = [box for _, box in kept]
        tiles, dropped = image_tiles(boxes, im.shape[0], im.shape[1], options)
        every = len(tile_windows(*im.shape[:2], options.slice_size, options.overlap_ratio))
        stats["empty_tiles"] += every - len(tiles)
        stats["dropped"] += dropped
        new_images, new_annotations = _tile_entries(img, kept, tiles, len(images) + 1)
        for entry, (window, _, _) in zip(new_images, tiles):
            out = os.path.join(tile_dir, entry["file_name"])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            x1, y1, x2, y2 = window
            ext = os.path.splitext(out)[1].lower()
            write_bytes(out, _encode(np.ascontiguousarray(im[y1:y2, x1:x2]), ext, out))
        images += new_images
        annotations += new_annotations
    if not images:
        raise ValueError(
            f"{source}: no tile keeps a box ({stats['dropped']} box parts under "
            f"min_area_ratio {options.min_area_ratio}); lower --min_area_ratio, or keep the "
            "empty tiles (--keep_empty)"
        )
    for k, ann in enumerate(annotations, 1):
        ann["id"] = k
    stats.update(tiles=len(images), boxes=len(annotations))
    with atomic_open(json_out, "w") as handle:
        json.dump(
            {"images": images, "annotations": annotations, "categories": anno["categories"]}, handle
        )
    return json_out, stats
