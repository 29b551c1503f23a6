"""Pascal-VOC datasets in ppdet's layout, read with DACCOCODataSet's rules; their COCO form.

Layout and keys are those of ppdet's ``VOCDataSet``: ``dataset_dir/anno_path`` is a list file
with one sample per line, ``<image path> <xml path>``, both relative to
``dataset_dir/image_dir`` (``image_dir`` may be left out); ``dataset_dir/label_list`` names one
class per line, class k (0-based) being line k; without ``label_list``, Pascal VOC's 20 classes
in ppdet's order. Each XML file gives ``<size><width>/<height>`` and per ``<object>`` a
``<name>``, an optional ``<difficult>`` (0/1) and ``<bndbox>`` with ``xmin ymin xmax ymax``.

**Boxes.** VOC coordinates are 1-based pixel indices, both corners inclusive (the Pascal VOC
devkit's definition): a box over the 0-based pixel columns c0..c1 has xmin = c0 + 1 and
xmax = c1 + 1. In the continuous 0-based coordinates of COCO (and of training) it is therefore
``[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]`` (x, y, w, h), so integer pixel boxes
convert exactly, both ways. (ppdet's ``x2coco.py`` and ``VOCDataSet`` take ``xmin`` as the left
edge and ``xmax - xmin`` as the width: one pixel to the right/below and one pixel smaller.)

**Rules** (the COCO reader's, through the same code, ``ppdet_dac.data.annotations``): boxes are
clamped to the image; skipped with a log line each and one summary naming the list file: an
image whose file is missing or empty, an image whose ``<size>`` is not two numbers > 0, a
``<bndbox>`` whose four values are not finite numbers (missing, text, nan, inf), a box without
area inside the image; an image left without boxes is kept only with ``allow_empty``. Errors
naming the file: a missing list, label or XML file, a list line that is not two paths, invalid
XML, an object whose ``<name>`` is not in the label list (nor in ``label_map``, which renames,
merges or leaves out names: ``ppdet_dac.data.label_map``), a ``<difficult>`` other than 0/1, and
a training set without any usable box. ``difficult`` objects are trained on (as ppdet does);
ppdet's VOC metric leaves them out of its mAP.

Image ids are the 0-based positions of the samples in the list file (blank lines not
counted), as ppdet's ``x2coco.py`` numbers them; category ids are 1..K in label-list order.
"""

import hashlib
import json
import math
import os
import tempfile
from collections import Counter

import ppdet.data.source as ppdet_source
from ppdet.core.workspace import register, serializable
from ppdet.data.source.voc import pascalvoc_label
from ppdet.utils.logger import setup_logger

from ppdet_dac.data.annotations import checked_image_size, clean_boxes, is_number, new_skip_logs
from ppdet_dac.data.dataset import DACCOCODataSet
from ppdet_dac.data.label_map import IGNORE, LabelMap, parse_label_map
from ppdet_dac.data.voc_files import (
    number_or_text,
    parse_voc_xml,
    read_label_list,
    read_voc_list,
    voc_box_to_xywh,
)
from ppdet_dac.utils.atomic import write_text

logger = setup_logger(__name__)


# where DACVOCDataSet.get_anno() writes the COCO form of a loaded VOC set (content-addressed)
COCO_CACHE_DIR = os.path.join(tempfile.gettempdir(), "ppdet_dac_voc_as_coco")


class VOCNames:
    """How messages name the images and boxes of a VOC set: by XML file and object."""

    image_ids, box_ids = "annotation files", "objects"

    def __init__(self, list_file):
        self.list_file = list_file
        self.xml_of_image = {}  # image id -> (xml path as listed, full path)
        self.object_of_box = {}  # annotation id -> (object number, name, bndbox texts)

    def image(self, img):
        return self.xml_of_image[img["id"]][1]

    def image_key(self, img):
        return self.xml_of_image[img["id"]][0]

    def size_source(self, img):
        return "its <size>"

    def box(self, ann):
        number, name, _ = self.object_of_box[ann["id"]]
        return f"object {number} ({name!r})"

    def box_key(self, ann):
        return f"{self.xml_of_image[ann['image_id']][0]} object {self.object_of_box[ann['id']][0]}"

    def box_value(self, ann, well_formed):
        return f"bndbox [xmin, ymin, xmax, ymax] = {self.object_of_box[ann['id']][2]}"


def voc_to_coco(samples, labels, base_dir, list_file, label_source, label_map=None):
    """The COCO form of the VOC ``samples`` (from ``read_voc_list``; paths relative to
    ``base_dir``) with class names ``labels``: (COCO dict, VOCNames for messages).

    Image ``file_name`` is the sample's image path, else the XML's ``<filename>``; values that
    are not numbers are kept as text, for the caller's checks to skip. ``label_map`` (a
    ``ppdet_dac.data.label_map.LabelMap``) renames, merges or leaves out objects by their
    ``<name>`` (those left out counted in one log line). Raises FileNotFoundError naming a
    missing XML file, ValueError naming the XML file and object for an unknown class or a bad
    ``<difficult>``, and one without a file name, or naming the label map's entry whose
    target is not a class."""
    label_map = label_map or LabelMap()
    label_map.check_targets(labels, label_source)
    names = VOCNames(list_file)
    class_of = {name: k for k, name in enumerate(labels)}
    images, annotations, ignored = [], [], Counter()
    for image_id, (line, image_rel, xml_rel) in enumerate(samples):
        xml_path = os.path.join(base_dir, xml_rel)
        if not os.path.isfile(xml_path):
            raise FileNotFoundError(
                f"annotation file not found: {xml_path} (listed on line {line} of {list_file})"
            )
        parsed = parse_voc_xml(xml_path)
        file_name = image_rel or parsed["filename"]
        if file_name is None:
            raise ValueError(
                f"{xml_path}: no <filename>, and line {line} of {list_file} names no image"
            )
        names.xml_of_image[image_id] = (xml_rel, xml_path)
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "width": number_or_text(parsed["width"]),
                "height": number_or_text(parsed["height"]),
            }
        )
        for number, obj in enumerate(parsed["objects"], 1):
            class_name = label_map.class_name(obj["name"])
            if class_name == IGNORE:
                ignored[obj["name"]] += 1
                continue
            if class_name not in class_of:
                raise ValueError(
                    f"{xml_path}: object {number} is labelled {obj['name']!r}, "
                    f"which is not in {label_source} (classes: {labels})"
                    f"{label_map.unknown_hint()}"
                )
            if obj["difficult"] not in (None, "0", "1"):
                raise ValueError(
                    f"{xml_path}: object {number} has <difficult> "
                    f"{obj['difficult']!r}; it must be 0 or 1"
                )
            box = voc_box_to_xywh([number_or_text(v) for v in obj["bndbox"]])
            area = box[2] * box[3] if all(is_number(v) for v in box) else 0.0
            ann_id = len(annotations) + 1
            names.object_of_box[ann_id] = (number, obj["name"], obj["bndbox"])
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": class_of[class_name] + 1,
                    "bbox": box,
                    "area": area if math.isfinite(area) else 0.0,
                    "iscrowd": 0,
                    "difficult": int(obj["difficult"] or 0),
                }
            )
    label_map.log_ignored(ignored, list_file)
    categories = [
        {"id": k + 1, "name": name, "supercategory": "none"} for k, name in enumerate(labels)
    ]
    return {"images": images, "annotations": annotations, "categories": categories}, names


def default_labels():
    """Pascal VOC's 20 class names in ppdet's class order."""
    return [name for name, _ in sorted(pascalvoc_label().items(), key=lambda item: item[1])]


def convert_voc(anno_dir, anno_list, label_list, label_map=None):
    """The COCO dict of a VOC set, as ``tools/x2coco.py --dataset_type voc`` writes it.

    ``anno_list`` lines are '<image path> <xml path>' or '<xml path or id>' (``read_voc_list``),
    XML paths relative to ``anno_dir``; ``file_name`` is the line's image path (relative to
    the folder the list's paths are relative to), else the XML's ``<filename>``. The rules of
    the readers apply (module docstring): images with a bad ``<size>`` and boxes that are not
    4 finite numbers or have no area inside the image are left out, each logged, with one
    summary per kind; boxes are converted (module docstring) but not clamped, as the COCO
    reader clamps them when it loads them. Image files are not opened. ``label_map``: a
    ``ppdet_dac.data.label_map.parse_label_map`` spec (a file path relative to the current
    folder), applied as by ``DACVOCDataSet``.
    """
    labels = read_label_list(label_list)
    label_map = parse_label_map(label_map, source="--label_map")
    samples = read_voc_list(anno_list, need_image=False)
    anno, names = voc_to_coco(
        samples, labels, anno_dir, anno_list, f"the label list {label_list}", label_map
    )
    skips = new_skip_logs(names)
    by_image = {}
    for ann in anno["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    images, annotations = [], []
    for img in anno["images"]:
        size = checked_image_size(img, names, skips, img["file_name"])
        if size is None:
            continue
        images.append(img)
        annotations += [
            ann
            for ann, _ in clean_boxes(
                img, *size, by_image.get(img["id"], []), names, skips, load_crowd=True
            )
        ]
    for kind in ("size", "malformed", "degenerate"):
        skips[kind].summary(anno_list, len(anno["images"]) if kind == "size" else None)
    for k, ann in enumerate(annotations, 1):
        ann["id"] = k
    return {"images": images, "annotations": annotations, "categories": anno["categories"]}


@register
@serializable
class DACVOCDataSet(DACCOCODataSet):
    """Pascal-VOC detection dataset for DAC-DETR: ppdet's ``VOCDataSet`` layout and keys, the
    rules of ``DACCOCODataSet`` (see the module docstring).

    Args: ``label_list`` = the label file, and ``label_map`` (``ppdet_dac.data.label_map``:
        e.g. ``{Dead: Tree, Alive: Tree}``, a file relative to ``dataset_dir``; ``null`` leaves
        a name out);
        the rest (keywords) as DACCOCODataSet's, except ``load_crowd``: ``dataset_dir``,
        ``image_dir``, ``anno_path`` = the list file, ``data_fields``, ``sample_num``,
        ``allow_empty``, ``empty_ratio``, ``repeat``, ``on_decode_error``,
        ``max_consecutive_decode_errors`` and ``duplicates`` (an XML listed twice is an image
        file listed twice).

    Records as DACCOCODataSet's, plus 'difficult' int32 [n, 1] when in ``data_fields``.
    ``get_anno()`` is the COCO form of the loaded images and boxes (for ``metric: COCO``);
    ``get_label_list()`` the label file (for ppdet's ``metric: VOC``).
    """

    # the config-key check (engine/config_names.init_args) follows **coco_options to the base
    forwards_kwargs_to_base = True

    def __init__(self, label_list=None, label_map=None, **coco_options):
        if "load_crowd" in coco_options:
            raise TypeError("DACVOCDataSet has no load_crowd: VOC files mark no crowd boxes")
        super().__init__(load_crowd=False, **coco_options)
        self.label_list = label_list
        self.label_map = label_map
        self._boxes_of_image = {}
        self._coco_categories = None
        self._coco_file = None

    def _label_file(self):
        return os.path.join(self.dataset_dir, self.label_list) if self.label_list else None

    def get_label_list(self):
        """The label list file (ppdet's VOC metric reads the class names from it)."""
        return self._label_file()

    def check_or_download_dataset(self):
        """Check the list file, image folder and label file are there; never download."""
        image_root = self._image_root()
        if self.image_dir and not os.path.isdir(image_root):
            raise FileNotFoundError(
                f"image directory not found: {image_root} (dataset_dir="
                f"{self.dataset_dir!r}, image_dir={self.image_dir!r}); the "
                "list's paths are relative to dataset_dir/image_dir "
                "(image_dir: '' when they start at dataset_dir)"
            )
        super().check_or_download_dataset()
        label_file = self._label_file()
        if label_file and not os.path.isfile(label_file):
            raise FileNotFoundError(
                f"label list file not found: {label_file} "
                f"(dataset_dir={self.dataset_dir!r}, "
                f"label_list={self.label_list!r})"
            )

    def _load_annotations(self):
        list_file = self._anno_file()
        label_file = self._label_file()
        if label_file:
            labels, label_source = read_label_list(label_file), f"the label list {label_file}"
        else:
            labels, label_source = default_labels(), "Pascal VOC's 20 classes (no label_list)"
        label_map = parse_label_map(self.label_map, self.dataset_dir)
        samples = read_voc_list(list_file)
        anno, names = voc_to_coco(
            samples, labels, self._image_root(), list_file, label_source, label_map
        )
        self._boxes_of_image = {}
        self._coco_categories = anno["categories"]
        self._coco_file = None
        return list_file, anno, names

    def _record(self, img, im_path, kept):
        self._boxes_of_image[img["id"]] = (img, im_path, kept)
        return super()._record(img, im_path, kept)

    def get_anno(self):
        """A COCO annotation file of the loaded images and their boxes (clamped, as trained;
        category ids 1..K), written once under COCO_CACHE_DIR; the dataset is parsed first
        when it was not yet."""
        if self._coco_file is not None:
            return self._coco_file
        if self.roidbs is None:
            self.parse_dataset()
        images, annotations = [], []
        root = self._image_root()
        for rec in self.roidbs:
            img, im_path, kept = self._boxes_of_image[int(rec["im_id"][0])]
            images.append(
                {
                    "id": img["id"],
                    "file_name": os.path.relpath(im_path, root),
                    "width": rec["w"],
                    "height": rec["h"],
                }
            )
            for ann, (x1, y1, x2, y2) in kept:
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": img["id"],
                        "category_id": ann["category_id"],
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": (x2 - x1) * (y2 - y1),
                        "iscrowd": 0,
                        "difficult": ann["difficult"],
                    }
                )
        text = json.dumps(
            {"images": images, "annotations": annotations, "categories": self._coco_categories}
        )
        digest = hashlib.sha1(text.encode()).hexdigest()[:16]
        stem = os.path.splitext(os.path.basename(self._anno_file()))[0]
        path = os.path.join(COCO_CACHE_DIR, f"{stem}-{digest}.json")
        if not os.path.isfile(path):
            os.makedirs(COCO_CACHE_DIR, exist_ok=True)
            write_text(path, text)
        logger.info(
            f"{self._anno_file()}: its {len(images)} loaded images and "
            f"{len(annotations)} boxes in COCO form: {path}"
        )
        self._coco_file = path
        return path


# ppdet's TrainDataset/EvalDataset wrappers resolve `name:` with getattr(ppdet.data.source, name)
setattr(ppdet_source, DACVOCDataSet.__name__, DACVOCDataSet)
