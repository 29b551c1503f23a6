"""The annotation rules of the dataset readers, shared by COCO (``DACCOCODataSet``), Pascal VOC
(``DACVOCDataSet``) and ``tools/x2coco.py`` (``ppdet_dac.data.voc.convert_voc``).

DETR's rules (its ``ConvertCocoPolysToMask``; docs: ``ppdet_dac.data.dataset``'s module
docstring): ``ignore`` annotations, and ``iscrowd`` ones unless crowds are loaded, are left
out; boxes are clamped to the image; skipped with a log line each (the first
``MAX_SKIP_LINES`` of a kind) and one summary per kind naming the file and the first ids: an
image whose width/height is not a finite number > 0, a bbox that is not 4 finite numbers
(NaN, inf, a string, a boolean, null) and a box without area inside the image. ``area`` is not
looked at. ``read_coco_json``, ``class_ids`` and ``annotations_by_image`` check the structure of
a COCO file and raise one ValueError naming the file and the entry at fault.

How messages name images and boxes is the caller's: ``CocoNames`` (image and annotation ids);
VOC's ``VOCNames`` names the XML files and objects.
"""

import json
import math
import os

import numpy as np
from ppdet.utils.logger import setup_logger

logger = setup_logger(__name__)

__all__ = [
    "MAX_SKIP_LINES",
    "NAMED_IN_SUMMARY",
    "is_number",
    "box_problem",
    "first_few",
    "SkipLog",
    "CocoNames",
    "new_skip_logs",
    "checked_image_size",
    "clean_boxes",
    "read_coco_json",
    "class_ids",
    "annotations_by_image",
]

# at most this many individual skip lines per kind of problem; the summary gives the total
MAX_SKIP_LINES = 20
# ids / files named in a summary or an error
NAMED_IN_SUMMARY = 5


def is_number(value):
    """A JSON number (int or float; not a boolean, a string or null)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def box_problem(box):
    """None when ``box`` is [x, y, w, h] of finite numbers, else what is wrong with it."""
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        return "is not [x, y, w, h]"
    if not all(is_number(v) for v in box):
        return "has a value that is not a number"
    if not all(math.isfinite(v) for v in box):
        return "has a non-finite value"
    return None


def first_few(items):
    """'a, b, c' for at most NAMED_IN_SUMMARY items, then ' and N more'."""
    items = list(items)
    text = ", ".join(str(i) for i in items[:NAMED_IN_SUMMARY])
    if len(items) > NAMED_IN_SUMMARY:
        text += f" and {len(items) - NAMED_IN_SUMMARY} more"
    return text


class SkipLog:
    """Counts skipped items of one kind (remembering their ids), logging the first
    MAX_SKIP_LINES of them."""

    def __init__(self, what, why, id_name):
        self.what, self.why, self.id_name = what, why, id_name
        self.ids = []

    @property
    def count(self):
        return len(self.ids)

    def add(self, item_id, message):
        self.ids.append(item_id)
        if self.count <= MAX_SKIP_LINES:
            logger.warning(message)
        elif self.count == MAX_SKIP_LINES + 1:
            logger.warning(
                f"more skipped {self.what} ({self.why}) follow; only their number is reported below"
            )

    def summary(self, anno_file, total=None):
        """One warning naming the file, the count (of ``total``) and the first ids (nothing
        when empty)."""
        if self.ids:
            of = "" if total is None else f" of {total}"
            logger.warning(
                f"{anno_file}: skipped {self.count}{of} {self.what} ({self.why}; "
                f"{self.id_name} {first_few(self.ids)})"
            )


class CocoNames:
    """How messages name the images and boxes of a COCO annotation file: by image id and
    annotation id (``DACVOCDataSet`` names its XML files and objects instead)."""

    image_ids, box_ids = "image ids", "annotation ids"

    def __init__(self, anno_file):
        self.anno_file = anno_file

    def image(self, img):
        return f"image id {img['id']}"

    def image_key(self, img):
        return img["id"]

    def size_source(self, img):
        return self.anno_file

    def box(self, ann):
        return f"annotation id {ann.get('id')}"

    def box_key(self, ann):
        return ann.get("id")

    def box_value(self, ann, well_formed):
        box = ann.get("bbox")
        return f"bbox [x, y, w, h] = {list(box)}" if well_formed else f"bbox {box!r}"


def new_skip_logs(names):
    """The skip counters of one annotation file, by kind: 'missing', 'size', 'malformed',
    'degenerate'."""
    return {
        "missing": SkipLog("images", "file missing or empty", names.image_ids),
        "size": SkipLog("images", "width/height not a number > 0", names.image_ids),
        "malformed": SkipLog("malformed boxes", "bbox not 4 finite numbers", names.box_ids),
        "degenerate": SkipLog("degenerate boxes", "no area inside the image", names.box_ids),
    }


def checked_image_size(img, names, skips, im_path):
    """(width, height) of image entry ``img`` as floats, or None after logging a skip to
    ``skips['size']`` when either is not a finite number > 0."""
    im_w, im_h = img.get("width"), img.get("height")
    if not all(is_number(v) and math.isfinite(v) and v > 0 for v in (im_w, im_h)):
        skips["size"].add(
            names.image_key(img),
            f"skipping {names.image(img)} ({im_path}): "
            f"width {im_w!r} / height {im_h!r} in {names.size_source(img)} must "
            "be numbers > 0",
        )
        return None
    return float(im_w), float(im_h)


def clean_boxes(img, im_w, im_h, annotations, names, skips, load_crowd=False):
    """[(annotation, [x1, y1, x2, y2] clamped to the image)] of the non-ignored (and, unless
    ``load_crowd``, non-crowd) ``annotations`` of ``img``; a bbox that is not 4 finite
    numbers goes to ``skips['malformed']``, one without area inside the image to
    ``skips['degenerate']``, each with a log line."""
    kept = []
    for ann in annotations:
        if ann.get("ignore", False) or (ann.get("iscrowd", 0) and not load_crowd):
            continue
        box = ann.get("bbox")
        problem = box_problem(box)
        if problem:
            skips["malformed"].add(
                names.box_key(ann),
                f"skipping {names.box(ann)} of "
                f"{names.image(img)}: {names.box_value(ann, False)} "
                f"{problem}",
            )
            continue
        x, y, w, h = (float(v) for v in box)
        x1, y1 = min(max(x, 0.0), im_w), min(max(y, 0.0), im_h)
        x2, y2 = min(max(x + w, 0.0), im_w), min(max(y + h, 0.0), im_h)
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            skips["degenerate"].add(
                names.box_key(ann),
                f"skipping degenerate box of "
                f"{names.image(img)} ({names.box(ann)}): "
                f"{names.box_value(ann, True)} has no area inside the "
                f"{im_w:g}x{im_h:g} image",
            )
            continue
        kept.append((ann, [x1, y1, x2, y2]))
    return kept


def read_coco_json(anno_file):
    """The dict of the COCO annotation file ``anno_file``, its structure checked: a JSON object
    with lists 'images' and 'categories' (and 'annotations' when present), every image with
    an integer 'id' and a 'file_name' string. FileNotFoundError / ValueError name the file."""
    if not os.path.isfile(anno_file):
        raise FileNotFoundError(f"annotation file not found: {anno_file}")
    try:
        with open(anno_file) as f:
            anno = json.load(f)
    except ValueError as err:
        raise ValueError(f"{anno_file} is not valid JSON: {err}") from err
    if not isinstance(anno, dict):
        raise ValueError(f"{anno_file}: the top level is not a JSON object")
    for key in ("images", "categories"):
        if not isinstance(anno.get(key), list):
            raise ValueError(f"{anno_file}: missing or non-list '{key}'")
    if not isinstance(anno.get("annotations", []), list):
        raise ValueError(f"{anno_file}: 'annotations' is not a list")
    for k, img in enumerate(anno["images"]):
        if (
            not isinstance(img, dict)
            or not isinstance(img.get("id"), int)
            or isinstance(img.get("id"), bool)
            or not isinstance(img.get("file_name"), str)
        ):
            raise ValueError(
                f"{anno_file}: images[{k}] needs an integer 'id' and a "
                f"'file_name' string, got {str(img)[:200]}"
            )
    return anno


def class_ids(anno_file, anno):
    """({category id: class id}, {category name: class id}): class ids 0..K-1 in the order of
    ``anno['categories']`` (as ppdet's ``get_categories`` numbers them); ValueError naming
    ``anno_file`` for a category without 'id' or a repeated id."""
    cat_ids = []
    for cat in anno["categories"]:
        if "id" not in cat:
            raise ValueError(f"{anno_file}: a category has no 'id': {cat}")
        cat_ids.append(cat["id"])
    if len(set(cat_ids)) != len(cat_ids):
        raise ValueError(f"{anno_file}: duplicate category ids in {cat_ids}")
    catid2clsid = {cid: i for i, cid in enumerate(cat_ids)}
    cname2cid = {
        cat.get("name", str(cat["id"])): catid2clsid[cat["id"]] for cat in anno["categories"]
    }
    return catid2clsid, cname2cid


def annotations_by_image(anno_file, anno, catid2clsid):
    """image id -> its annotations; raises ValueError naming ``anno_file`` on the first
    annotation that is not an object or whose category id is not in ``catid2clsid``."""
    by_image = {}
    for k, ann in enumerate(anno.get("annotations", [])):
        if not isinstance(ann, dict):
            raise ValueError(f"{anno_file}: annotations[{k}] is not an object: {str(ann)[:200]}")
        if ann.get("category_id") not in catid2clsid:
            raise ValueError(
                f"{anno_file}: annotation id {ann.get('id')} (image id {ann.get('image_id')})"
                f" has category_id {ann.get('category_id')!r}, which is not in 'categories' "
                f"(known ids: {sorted(catid2clsid)})"
            )
        by_image.setdefault(ann.get("image_id"), []).append(ann)
    return by_image
