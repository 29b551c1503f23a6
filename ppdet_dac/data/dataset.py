"""DACCOCODataSet: ppdet's COCODataSet with DETR's annotation rules and clear errors.

Differences from ``ppdet.data.source.COCODataSet`` (2.6.0):

* **Annotation rules (docs/algorithm.md#10-data-recipe, DETR's ``ConvertCocoPolysToMask``):**
  ``iscrowd`` annotations
  are dropped (unless ``load_crowd``), boxes are clamped to the image, and boxes whose width or
  height is <= 0 after clamping are skipped with a log line naming the image id and the box.
  The ``area`` field is not used for filtering (ppdet drops boxes with ``area <= 0``; DETR
  does not look at it).
* **Bad input:** a missing annotation file raises one FileNotFoundError naming the path (ppdet
  would try to download "coco" from the internet); invalid JSON, an image entry without an
  integer ``id`` or a ``file_name``, and an annotation whose ``category_id`` is not in
  ``categories`` raise one ValueError naming the file (and the entry or annotation id; ppdet
  raises a bare KeyError for an unknown category). Skipped with a log line each and one summary warning naming the file
  and the first ids: an image whose file is missing or empty, an image whose width/height is
  not a positive number, a bbox that is not 4 finite numbers (NaN, inf, a string, a boolean,
  null) and a box without area inside the image. A training dataset (``gt_bbox`` among the
  ``data_fields``) in which no image is left with a box is a ValueError.
* **Undecodable images** (present but corrupt): skipped, raised or reported as
  ``on_decode_error`` says (``ppdet_dac.data.decode_errors``).
* **Duplicated ids** (``ppdet_dac.data.duplicates``): an image id or image file listed twice,
  or an annotation id used twice, is refused with one ValueError naming the file and the ids
  when evaluating, and resolved with one warning when training (the first entry of an image id
  or file is kept, a later entry of the same file is dropped with its annotations, repeated
  annotation ids are renumbered). ``duplicates: auto`` (default) resolves for a training
  dataset (``gt_bbox`` among the ``data_fields`` and ``on_decode_error`` not ``report``) and
  refuses otherwise; ``refuse`` / ``resolve`` choose explicitly.
* **No pycocotools** at parse time (it prints to stdout); the JSON is read directly. Class ids
  follow the order of the file's ``categories`` list, exactly as ppdet's ``get_categories``
  (used by the COCO metric) numbers them.

The rules live in ``ppdet_dac.data.annotations`` (``checked_image_size``, ``clean_boxes``,
``new_skip_logs``, the structure checks of ``read_coco_json``, ``class_ids`` and
``annotations_by_image``), which ``DACVOCDataSet`` (``ppdet_dac.data.voc``) and
``tools/x2coco.py`` share.

Empty images: the official code (torchvision ``CocoDetection``) trains on every image id in
instances_train2017.json, including the ~1k without annotations, so the COCO config sets
``allow_empty: true`` for TrainDataset; the class default stays ppdet's ``False``.
"""

import os
import random

import numpy as np
import ppdet.data.source as ppdet_source
from ppdet.core.workspace import register, serializable
from ppdet.data.source.coco import COCODataSet
from ppdet.utils.logger import setup_logger

from ppdet_dac.data.annotations import (
    CocoNames,
    annotations_by_image,
    checked_image_size,
    class_ids,
    clean_boxes,
    new_skip_logs,
    read_coco_json,
)
from ppdet_dac.data.decode_errors import (
    DEFAULT_MAX_CONSECUTIVE_DECODE_ERRORS,
    DecodeErrorHandling,
)
from ppdet_dac.data.duplicates import check_no_duplicates, resolution_note, resolve_duplicates
from ppdet_dac.data.transforms import QuietDecodeCompose

logger = setup_logger(__name__)

DUPLICATE_MODES = ("auto", "refuse", "resolve")


@register
@serializable
class DACCOCODataSet(DecodeErrorHandling, COCODataSet):
    """COCO-format detection dataset for DAC-DETR (see the module docstring for the rules).

    Args (as COCODataSet, plus):
        on_decode_error (str): 'skip' -- an image that cannot be decoded at load time is logged
            and replaced by the next decodable one; 'raise' -- the ImageDecodeError propagates;
            'report' -- every image is decoded once in ``parse_dataset`` and the undecodable
            ones are left out of the dataset, named in the log (for evaluation).
        max_consecutive_decode_errors (int): with 'skip', this many undecodable images met in a
            row by one loader process stop the run with UnreadableDatasetError (default 50).
        duplicates (str): duplicated image ids / image files / annotation ids are 'refuse'd
            (one ValueError) or 'resolve'd (one warning; first entry kept, module docstring);
            'auto' (default): resolve for training data, refuse for evaluation data.

    Records hold 'im_file', 'im_id' [1], 'h', 'w', 'gt_bbox' float32 [n, 4] (pixel xyxy,
    clamped), 'gt_class' int32 [n, 1] (0..K-1 in ``categories`` order), 'is_crowd' int32 [n, 1]
    and, when asked for, 'gt_poly' (the raw segmentation of each kept box) and 'difficult'
    int32 [n, 1] (an annotation's ``difficult`` flag, 0 when absent).
    """

    def __init__(
        self,
        dataset_dir=None,
        image_dir=None,
        anno_path=None,
        data_fields=("image",),
        sample_num=-1,
        load_crowd=False,
        allow_empty=False,
        empty_ratio=1.0,
        repeat=1,
        on_decode_error="skip",
        max_consecutive_decode_errors=DEFAULT_MAX_CONSECUTIVE_DECODE_ERRORS,
        duplicates="auto",
    ):
        super().__init__(
            dataset_dir=dataset_dir,
            image_dir=image_dir,
            anno_path=anno_path,
            data_fields=data_fields,
            sample_num=sample_num,
            load_crowd=load_crowd,
            allow_empty=allow_empty,
            empty_ratio=empty_ratio,
            repeat=repeat,
        )
        self._init_decode_errors(on_decode_error, max_consecutive_decode_errors)
        if duplicates not in DUPLICATE_MODES:
            raise ValueError(f"duplicates must be one of {DUPLICATE_MODES}, got {duplicates!r}")
        self.duplicates = duplicates

    # -- locating files --------------------------------------------------------------------
    def _anno_file(self):
        return os.path.join(self.dataset_dir, self.anno_path or "")

    def _image_root(self):
        return (
            os.path.join(self.dataset_dir, self.image_dir) if self.image_dir else self.dataset_dir
        )

    def check_or_download_dataset(self):
        """Check the files are there; never download (ppdet would fetch COCO from the web)."""
        anno_file = self._anno_file()
        if not self.anno_path or not os.path.isfile(anno_file):
            raise FileNotFoundError(
                f"annotation file not found: {anno_file} "
                f"(dataset_dir={self.dataset_dir!r}, anno_path={self.anno_path!r})"
            )
        image_root = self._image_root()
        if image_root and not os.path.isdir(image_root):
            raise FileNotFoundError(
                f"image directory not found: {image_root} "
                f"(dataset_dir={self.dataset_dir!r}, image_dir={self.image_dir!r})"
            )

    # -- parsing ---------------------------------------------------------------------------
    def _load_json(self):
        anno_file = self._anno_file()
        return anno_file, read_coco_json(anno_file)

    def _categories(self, anno_file, anno):
        self.catid2clsid, self.cname2cid = class_ids(anno_file, anno)

    def _annotations_by_image(self, anno_file, anno):
        """image id -> its annotations; raises ValueError on the first unknown category id."""
        return annotations_by_image(anno_file, anno, self.catid2clsid)

    def _record(self, img, im_path, kept):
        rec = {
            "im_file": im_path,
            "im_id": np.array([img["id"]]),
            "h": float(img["height"]),
            "w": float(img["width"]),
        }
        if self.load_image_only:
            return rec
        n = len(kept)
        gt = {
            "gt_bbox": np.array([box for _, box in kept], dtype=np.float32).reshape(n, 4),
            "gt_class": np.array(
                [self.catid2clsid[a["category_id"]] for a, _ in kept], dtype=np.int32
            ).reshape(n, 1),
            "is_crowd": np.array(
                [int(a.get("iscrowd", 0)) for a, _ in kept], dtype=np.int32
            ).reshape(n, 1),
            "gt_poly": [a.get("segmentation") for a, _ in kept],
            "difficult": np.array(
                [int(a.get("difficult", 0)) for a, _ in kept], dtype=np.int32
            ).reshape(n, 1),
        }
        rec.update({k: v for k, v in gt.items() if k in self.data_fields})
        return rec

    def _load_annotations(self):
        """(file named in messages, the annotations as a COCO dict, their CocoNames)."""
        anno_file, anno = self._load_json()
        return anno_file, anno, CocoNames(anno_file)

    def _without_duplicates(self, anno_file, anno):
        """``anno`` refused or resolved by ``self.duplicates`` (module docstring)."""
        mode = self.duplicates
        if mode == "auto":
            training = "gt_bbox" in self.data_fields and self.on_decode_error != "report"
            mode = "resolve" if training else "refuse"
        if mode == "refuse":
            check_no_duplicates(anno, anno_file)
            return anno
        resolved, report = resolve_duplicates(anno)
        if report:
            logger.warning(resolution_note(report, anno, resolved, anno_file))
        return resolved

    def parse_dataset(self):
        """Build ``self.roidbs`` from the annotation file (rules in the module docstring)."""
        anno_file, anno, names = self._load_annotations()
        anno = self._without_duplicates(anno_file, anno)
        self._categories(anno_file, anno)
        self.load_image_only = "annotations" not in anno
        if self.load_image_only:
            logger.warning(f"{anno_file} has no 'annotations': loading images only")
        by_image = self._annotations_by_image(anno_file, anno)
        image_root = self._image_root()
        skips = new_skip_logs(names)
        records, empty_records = [], []
        num_no_boxes = 0
        for img in sorted(anno["images"], key=lambda im: im["id"]):
            im_path = os.path.join(image_root, img["file_name"])
            if not os.path.isfile(im_path) or os.path.getsize(im_path) == 0:
                reason = "missing" if not os.path.exists(im_path) else "empty or not a file"
                skips["missing"].add(
                    names.image_key(img), f"skipping {names.image(img)}: file {im_path} is {reason}"
                )
                continue
            size = checked_image_size(img, names, skips, im_path)
            if size is None:
                continue
            kept = clean_boxes(
                img, *size, by_image.get(img["id"], []), names, skips, self.load_crowd
            )
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
        if self.on_decode_error == "report":
            self.roidbs = self._decodable(anno_file, self.roidbs)
        self._summarise(anno_file, len(anno["images"]), skips, num_no_boxes, len(empty_records))
        listed = (
            f"of the {len(anno['images'])} images listed: {skips['missing'].count} missing"
            f" or empty under {image_root}, {skips['size'].count} with a bad width/height, "
            f"{num_no_boxes} without a usable box"
        )
        if not self.roidbs:
            raise ValueError(
                f"{anno_file}: no usable image ({listed}"
                f"{'' if self.allow_empty else ', allow_empty: false'})"
            )
        if not records and not self.load_image_only and "gt_bbox" in self.data_fields:
            raise ValueError(
                f"{anno_file}: no image has a usable box, nothing to train on "
                f"({listed}; {len(anno.get('annotations', []))} annotations, "
                f"{skips['malformed'].count} malformed and "
                f"{skips['degenerate'].count} degenerate boxes skipped)"
            )

    def _summarise(self, anno_file, num_listed, skips, num_no_boxes, num_empty_kept):
        for kind, skip_log in skips.items():
            skip_log.summary(anno_file, num_listed if kind in ("missing", "size") else None)
        empty_note = (
            f"{num_empty_kept} of them kept (allow_empty)"
            if self.allow_empty
            else "dropped (allow_empty: false)"
        )
        logger.info(
            f"{anno_file}: loaded {len(self.roidbs)} images "
            f"({num_no_boxes} without boxes: {empty_note})"
        )

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

    def set_transform(self, transform):
        """As ppdet's, with ppdet's ``Compose`` kept from logging an ImageDecodeError with a
        traceback (``QuietDecodeCompose``)."""
        super().set_transform(QuietDecodeCompose(transform))


# ppdet's TrainDataset/EvalDataset wrappers resolve `name:` with getattr(ppdet.data.source, name)
setattr(ppdet_source, DACCOCODataSet.__name__, DACCOCODataSet)
