"""DACCOCODataSet: ppdet's COCODataSet with DETR's annotation rules and clear errors.

Differences from ``ppdet.data.source.COCODataSet`` (2.6.0):

* **Annotation rules (spec §4.2, DETR's ``ConvertCocoPolysToMask``):** ``iscrowd`` annotations
  are dropped (unless ``load_crowd``), boxes are clamped to the image, and boxes whose width or
  height is <= 0 after clamping are skipped with a log line naming the image id and the box.
  The ``area`` field is not used for filtering (ppdet drops boxes with ``area <= 0``; DETR
  does not look at it).
* **Bad input:** a missing annotation file raises one FileNotFoundError naming the path (ppdet
  would try to download "coco" from the internet); an annotation whose ``category_id`` is not
  in ``categories`` raises one ValueError naming the file, the annotation id and the category
  id (ppdet raises a bare KeyError); an image file that is missing or empty is skipped with a
  log line naming it and counted in one summary warning.
* **Undecodable images** (present but corrupt) are found only when read. With the reader op
  ``DACDecode`` they raise ``ImageDecodeError``; with ``on_decode_error: skip`` (default) this
  dataset logs the file once and serves the next decodable image instead, so a training run
  keeps going; with ``on_decode_error: raise`` (use it for evaluation, where a substitute image
  would distort the metric) the error propagates.
* **No pycocotools** at parse time (it prints to stdout); the JSON is read directly. Class ids
  follow the order of the file's ``categories`` list, exactly as ppdet's ``get_categories``
  (used by the COCO metric) numbers them.

Empty images: the official code (torchvision ``CocoDetection``) trains on every image id in
instances_train2017.json, including the ~1k without annotations, so the COCO config sets
``allow_empty: true`` for TrainDataset; the class default stays ppdet's ``False``.
"""
import json
import os
import random

import numpy as np
import ppdet.data.source as ppdet_source
from ppdet.core.workspace import register, serializable
from ppdet.data.source.coco import COCODataSet
from ppdet.utils.logger import setup_logger

from ppdet_dac.data.transforms import ImageDecodeError

logger = setup_logger(__name__)

# at most this many individual skip lines per kind of problem; the summary gives the total
MAX_SKIP_LINES = 20
DECODE_ERROR_MODES = ("skip", "raise")


class _SkipLog:
    """Counts skipped items of one kind, logging the first MAX_SKIP_LINES of them."""

    def __init__(self, what):
        self.what = what
        self.count = 0

    def add(self, message):
        self.count += 1
        if self.count <= MAX_SKIP_LINES:
            logger.warning(message)
        elif self.count == MAX_SKIP_LINES + 1:
            logger.warning(f"more {self.what} follow; only their number is reported below")


@register
@serializable
class DACCOCODataSet(COCODataSet):
    """COCO-format detection dataset for DAC-DETR (see the module docstring for the rules).

    Args (as COCODataSet, plus):
        on_decode_error (str): 'skip' -- an image that cannot be decoded at load time is logged
            and replaced by the next decodable one; 'raise' -- the ImageDecodeError propagates.

    Records hold 'im_file', 'im_id' [1], 'h', 'w', 'gt_bbox' float32 [n, 4] (pixel xyxy,
    clamped), 'gt_class' int32 [n, 1] (0..K-1 in ``categories`` order), 'is_crowd' int32 [n, 1]
    and, when asked for, 'gt_poly' (the raw segmentation of each kept box).
    """

    def __init__(self, dataset_dir=None, image_dir=None, anno_path=None, data_fields=("image",),
                 sample_num=-1, load_crowd=False, allow_empty=False, empty_ratio=1.,
                 repeat=1, on_decode_error="skip"):
        super().__init__(dataset_dir=dataset_dir, image_dir=image_dir, anno_path=anno_path,
                         data_fields=data_fields, sample_num=sample_num, load_crowd=load_crowd,
                         allow_empty=allow_empty, empty_ratio=empty_ratio, repeat=repeat)
        if on_decode_error not in DECODE_ERROR_MODES:
            raise ValueError(f"on_decode_error must be one of {DECODE_ERROR_MODES}, "
                             f"got {on_decode_error!r}")
        self.on_decode_error = on_decode_error
        self._undecodable = set()

    # -- locating files --------------------------------------------------------------------
    def _anno_file(self):
        return os.path.join(self.dataset_dir, self.anno_path or "")

    def _image_root(self):
        return os.path.join(self.dataset_dir, self.image_dir) if self.image_dir else self.dataset_dir

    def check_or_download_dataset(self):
        """Check the files are there; never download (ppdet would fetch COCO from the web)."""
        anno_file = self._anno_file()
        if not self.anno_path or not os.path.isfile(anno_file):
            raise FileNotFoundError(f"annotation file not found: {anno_file} "
                                    f"(dataset_dir={self.dataset_dir!r}, anno_path={self.anno_path!r})")
        image_root = self._image_root()
        if image_root and not os.path.isdir(image_root):
            raise FileNotFoundError(f"image directory not found: {image_root} "
                                    f"(dataset_dir={self.dataset_dir!r}, image_dir={self.image_dir!r})")

    # -- parsing ---------------------------------------------------------------------------
    def _load_json(self):
        anno_file = self._anno_file()
        if not os.path.isfile(anno_file):
            raise FileNotFoundError(f"annotation file not found: {anno_file}")
        try:
            with open(anno_file) as f:
                anno = json.load(f)
        except ValueError as err:
            raise ValueError(f"{anno_file} is not valid JSON: {err}") from err
        for key in ("images", "categories"):
            if not isinstance(anno.get(key), list):
                raise ValueError(f"{anno_file}: missing or non-list '{key}'")
        return anno_file, anno

    def _categories(self, anno_file, anno):
        cat_ids = []
        for cat in anno["categories"]:
            if "id" not in cat:
                raise ValueError(f"{anno_file}: a category has no 'id': {cat}")
            cat_ids.append(cat["id"])
        if len(set(cat_ids)) != len(cat_ids):
            raise ValueError(f"{anno_file}: duplicate category ids in {cat_ids}")
        self.catid2clsid = {cid: i for i, cid in enumerate(cat_ids)}
        self.cname2cid = {cat.get("name", str(cat["id"])): self.catid2clsid[cat["id"]]
                          for cat in anno["categories"]}

    def _annotations_by_image(self, anno_file, anno):
        """image id -> its annotations; raises ValueError on the first unknown category id."""
        by_image = {}
        for ann in anno.get("annotations", []):
            if ann.get("category_id") not in self.catid2clsid:
                raise ValueError(
                    f"{anno_file}: annotation id {ann.get('id')} (image id {ann.get('image_id')})"
                    f" has category_id {ann.get('category_id')!r}, which is not in 'categories' "
                    f"(known ids: {sorted(self.catid2clsid)})")
            by_image.setdefault(ann.get("image_id"), []).append(ann)
        return by_image

    def _clean_boxes(self, img_id, im_w, im_h, annotations, bad_boxes):
        """Keep non-ignored (and, unless load_crowd, non-crowd) boxes, clamped to the image."""
        kept = []
        for ann in annotations:
            if ann.get("ignore", False) or (ann.get("iscrowd", 0) and not self.load_crowd):
                continue
            box = ann.get("bbox")
            if not isinstance(box, (list, tuple)) or len(box) != 4:
                bad_boxes.add(f"skipping annotation id {ann.get('id')} of image id {img_id}: "
                              f"bbox {box!r} is not [x, y, w, h]")
                continue
            x, y, w, h = (float(v) for v in box)
            x1, y1 = min(max(x, 0.0), im_w), min(max(y, 0.0), im_h)
            x2, y2 = min(max(x + w, 0.0), im_w), min(max(y + h, 0.0), im_h)
            if x2 - x1 <= 0 or y2 - y1 <= 0:
                bad_boxes.add(f"skipping degenerate box of image id {img_id} (annotation id "
                              f"{ann.get('id')}): bbox [x, y, w, h] = {list(box)} has no area "
                              f"inside the {im_w:g}x{im_h:g} image")
                continue
            kept.append((ann, [x1, y1, x2, y2]))
        return kept

    def _record(self, img, im_path, kept):
        rec = {"im_file": im_path, "im_id": np.array([img["id"]]),
               "h": float(img["height"]), "w": float(img["width"])}
        if self.load_image_only:
            return rec
        n = len(kept)
        gt = {
            "gt_bbox": np.array([box for _, box in kept], dtype=np.float32).reshape(n, 4),
            "gt_class": np.array([self.catid2clsid[a["category_id"]] for a, _ in kept],
                                 dtype=np.int32).reshape(n, 1),
            "is_crowd": np.array([int(a.get("iscrowd", 0)) for a, _ in kept],
                                 dtype=np.int32).reshape(n, 1),
            "gt_poly": [a.get("segmentation") for a, _ in kept],
        }
        rec.update({k: v for k, v in gt.items() if k in self.data_fields})
        return rec

    def parse_dataset(self):
        """Build ``self.roidbs`` from the annotation file (rules in the module docstring)."""
        anno_file, anno = self._load_json()
        self._categories(anno_file, anno)
        self.load_image_only = "annotations" not in anno
        if self.load_image_only:
            logger.warning(f"{anno_file} has no 'annotations': loading images only")
        by_image = self._annotations_by_image(anno_file, anno)
        image_root = self._image_root()
        missing, bad_size, bad_boxes = (_SkipLog("missing images"), _SkipLog("bad image sizes"),
                                        _SkipLog("degenerate boxes"))
        records, empty_records = [], []
        num_no_boxes = 0
        for img in sorted(anno["images"], key=lambda im: im["id"]):
            im_path = os.path.join(image_root, img["file_name"])
            if not os.path.isfile(im_path) or os.path.getsize(im_path) == 0:
                reason = "missing" if not os.path.exists(im_path) else "empty or not a file"
                missing.add(f"skipping image id {img['id']}: file {im_path} is {reason}")
                continue
            im_w, im_h = float(img.get("width", 0)), float(img.get("height", 0))
            if im_w <= 0 or im_h <= 0:
                bad_size.add(f"skipping image id {img['id']} ({im_path}): width {im_w:g} / "
                             f"height {im_h:g} in {anno_file} must be > 0")
                continue
            kept = self._clean_boxes(img["id"], im_w, im_h, by_image.get(img["id"], []),
                                     bad_boxes)
            if not kept and not self.load_image_only:
                num_no_boxes += 1
                if not self.allow_empty:
                    continue
                empty_records.append(self._record(img, im_path, kept))
            else:
                records.append(self._record(img, im_path, kept))
            if 0 < self.sample_num <= len(records) + len(empty_records):
                break
        if self.allow_empty and empty_records:
            empty_records = self._sample_empty(empty_records, len(records))
        self.roidbs = records + empty_records
        self._summarise(anno_file, len(anno["images"]), missing, bad_size, bad_boxes,
                        num_no_boxes, len(empty_records))
        if not self.roidbs:
            raise ValueError(f"{anno_file}: no usable image (checked {len(anno['images'])} "
                             f"entries against {image_root})")

    def _summarise(self, anno_file, num_listed, missing, bad_size, bad_boxes, num_no_boxes,
                   num_empty_kept):
        if missing.count:
            logger.warning(f"{anno_file}: skipped {missing.count} of {num_listed} images whose "
                           f"file is missing or empty")
        if bad_size.count:
            logger.warning(f"{anno_file}: skipped {bad_size.count} images with a bad width/height")
        if bad_boxes.count:
            logger.warning(f"{anno_file}: skipped {bad_boxes.count} degenerate or malformed boxes")
        empty_note = (f"{num_empty_kept} of them kept (allow_empty)" if self.allow_empty
                      else "dropped (allow_empty: false)")
        logger.info(f"{anno_file}: loaded {len(self.roidbs)} images "
                    f"({num_no_boxes} without boxes: {empty_note})")

    # -- reading ---------------------------------------------------------------------------
    def set_sample_seed(self, seed):
        """Make the random augmentation of a sample a function of (seed, epoch, index) alone.

        ppdet's transforms draw from Python's and NumPy's global generators, so which random
        numbers a sample gets would otherwise depend on loader threads/workers and on what was
        read before: a resumed run could not reproduce the augmentation of an uninterrupted one.
        ``None`` (the default) leaves the global generators alone, as ppdet does."""
        self._sample_seed = None if seed is None else int(seed)

    def _seed_sample(self, idx):
        seed = getattr(self, "_sample_seed", None)
        if seed is not None:
            state = np.random.SeedSequence([seed, self._epoch, idx]).generate_state(2)
            random.seed(int(state[0]))
            np.random.seed(int(state[1]))

    def __getitem__(self, idx):
        """ppdet's sample for ``idx``; with on_decode_error='skip' an undecodable image is
        replaced by the next decodable one (each bad file is logged once per process)."""
        n = len(self.roidbs)
        idx %= n
        self._seed_sample(idx)
        for offset in range(n):
            candidate = (idx + offset) % n
            if candidate in self._undecodable:
                continue
            try:
                return super().__getitem__(candidate)
            except ImageDecodeError as err:
                if self.on_decode_error == "raise":
                    raise
                self._undecodable.add(candidate)
                logger.warning(f"skipping undecodable image: {err}; training continues with "
                               f"the next image ({len(self._undecodable)} undecodable so far)")
        raise ImageDecodeError(f"{self._anno_file()}: none of the {n} images can be decoded")


# ppdet's TrainDataset/EvalDataset wrappers resolve `name:` with getattr(ppdet.data.source, name)
setattr(ppdet_source, DACCOCODataSet.__name__, DACCOCODataSet)
