"""Category-id bookkeeping between a COCO-style annotation file, ppdet and the model.

Three id spaces meet here:

* **raw ids** -- the ``category_id`` values written in the annotation file (COCO: 80 ids in
  1..90 with gaps; the demo set: a few small ids that do not start at 0);
* **dataset class ids** -- what ppdet's ``COCODataSet`` puts in ``gt_class``: the position of the
  category in the file's ``categories`` list, 0..K-1 (``catid2clsid``);
* **model class ids** -- the classifier's output index. With ``class_id_mode='contiguous'`` it
  is the dataset class id (``num_classes = K``); with ``class_id_mode='coco_raw'`` it is the raw
  id itself (``num_classes = max raw id + 1``, i.e. 91 for COCO), as in the official DAC-DETR
  checkpoints.

Every table is a plain ``np.int64`` array indexed by the source id; ``-1`` marks an index that
has no counterpart.
"""

import numpy as np

# The 80 category ids used by COCO 2017 detection, in ascending order (12, 26, 29, 30, 45, 66,
# 68, 69, 71 and 83 are unused).
COCO_RAW_CATEGORY_IDS = (
    list(range(1, 12))
    + list(range(13, 26))
    + [27, 28]
    + list(range(31, 45))
    + list(range(46, 66))
    + [67, 70]
    + list(range(72, 83))
    + list(range(84, 91))
)
# Classifier size when the model predicts raw COCO ids (index 0 and the gaps are never targets).
COCO_RAW_NUM_CLASSES = 91

CLASS_ID_MODES = ("contiguous", "coco_raw")


def _as_cat_ids(cat_ids):
    """Validate a sequence of raw category ids: non-empty, integral, non-negative, unique."""
    ids = np.asarray(list(cat_ids))
    if ids.size == 0:
        raise ValueError("cat_ids is empty: a dataset needs at least one category")
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"cat_ids must be a flat sequence of integers, got {list(cat_ids)!r}")
    if ids.min() < 0:
        raise ValueError(f"cat_ids must be >= 0, got {int(ids.min())}")
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"cat_ids has duplicates: {unique[counts > 1].tolist()}")
    return ids.astype("int64")


def cat_ids_from_catid2clsid(catid2clsid):
    """Raw category ids ordered by dataset class id, from ppdet's ``dataset.catid2clsid``.

    Raises ValueError when the class ids are not exactly 0..K-1.
    """
    clsids = sorted(catid2clsid.values())
    if clsids != list(range(len(clsids))):
        raise ValueError(f"catid2clsid values must be 0..{len(clsids) - 1}, got {clsids}")
    by_clsid = sorted(catid2clsid.items(), key=lambda item: item[1])
    return [int(catid) for catid, _ in by_clsid]


def contiguous_to_raw_table(cat_ids):
    """Table ``t`` with ``t[k] = cat_ids[k]``: dataset class id -> raw category id.

    cat_ids: the raw ids in dataset class order (``COCO_RAW_CATEGORY_IDS`` for COCO).
    Returns np.int64 [K].
    """
    return _as_cat_ids(cat_ids).copy()


def raw_to_contiguous_table(cat_ids, num_classes):
    """Table ``t`` of length ``num_classes``: raw category id -> dataset class id, -1 if unused.

    Raises ValueError when a raw id does not fit (``cat_id >= num_classes``).
    Returns np.int64 [num_classes].
    """
    ids = _as_cat_ids(cat_ids)
    if int(ids.max()) >= num_classes:
        raise ValueError(
            f"category id {int(ids.max())} does not fit num_classes={num_classes}; "
            f"raw ids need num_classes >= {int(ids.max()) + 1}"
        )
    table = np.full(num_classes, -1, dtype="int64")
    table[ids] = np.arange(len(ids), dtype="int64")
    return table


def coco_contiguous_to_raw(cls_ids):
    """Map ppdet COCO class ids (0..79) to raw COCO category ids; any array shape.

    Raises ValueError naming the first id outside 0..79.
    """
    cls_ids = np.asarray(cls_ids, dtype="int64")
    bad = (cls_ids < 0) | (cls_ids >= len(COCO_RAW_CATEGORY_IDS))
    if bad.any():
        raise ValueError(f"COCO class id {int(cls_ids[bad].flat[0])} is outside 0..79")
    return contiguous_to_raw_table(COCO_RAW_CATEGORY_IDS)[cls_ids]


def coco_raw_to_contiguous(raw_ids):
    """Map raw COCO category ids (1..90) to ppdet COCO class ids (0..79); any array shape.

    Raises ValueError naming the first id that is not one of the 80 COCO categories.
    """
    raw_ids = np.asarray(raw_ids, dtype="int64")
    table = raw_to_contiguous_table(COCO_RAW_CATEGORY_IDS, COCO_RAW_NUM_CLASSES)
    in_range = (raw_ids >= 0) & (raw_ids < COCO_RAW_NUM_CLASSES)
    mapped = np.where(in_range, table[np.clip(raw_ids, 0, COCO_RAW_NUM_CLASSES - 1)], -1)
    if (mapped < 0).any():
        raise ValueError(f"{int(raw_ids[mapped < 0].flat[0])} is not a COCO category id")
    return mapped


def model_class_tables(catid2clsid, class_id_mode, num_classes):
    """Lookup tables between a dataset's class ids and the model's classifier indices.

    catid2clsid: ppdet's ``dataset.catid2clsid`` (raw category id -> dataset class id 0..K-1).
    class_id_mode: 'contiguous' (model class = dataset class, needs ``num_classes >= K``) or
        'coco_raw' (model class = raw category id, needs ``num_classes > max raw id``; 91 for COCO).
    Returns ``(to_model, to_dataset)``: np.int64 [K] mapping dataset class -> model class, and
    np.int64 [num_classes] mapping model class -> dataset class with -1 for classifier slots the
    dataset does not use.
    """
    if class_id_mode not in CLASS_ID_MODES:
        raise ValueError(f"class_id_mode must be one of {CLASS_ID_MODES}, got {class_id_mode!r}")
    cat_ids = cat_ids_from_catid2clsid(catid2clsid)
    if class_id_mode == "coco_raw":
        return contiguous_to_raw_table(cat_ids), raw_to_contiguous_table(cat_ids, num_classes)
    if len(cat_ids) > num_classes:
        raise ValueError(
            f"the dataset has {len(cat_ids)} categories but num_classes={num_classes}"
            " (class_id_mode 'contiguous' needs num_classes >= #categories)"
        )
    to_dataset = np.full(num_classes, -1, dtype="int64")
    to_dataset[: len(cat_ids)] = np.arange(len(cat_ids), dtype="int64")
    return np.arange(len(cat_ids), dtype="int64"), to_dataset
