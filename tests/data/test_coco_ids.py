"""Category-id tables: COCO raw ids <-> ppdet class ids, and the generic model lookup."""

import numpy as np
import pytest

from ppdet_dac.data.coco_ids import (
    COCO_RAW_CATEGORY_IDS,
    COCO_RAW_NUM_CLASSES,
    cat_ids_from_catid2clsid,
    coco_contiguous_to_raw,
    coco_raw_to_contiguous,
    contiguous_to_raw_table,
    model_class_tables,
    raw_to_contiguous_table,
)

# The ten ids between 1 and 90 that COCO 2017 detection does not use.
COCO_UNUSED_IDS = [12, 26, 29, 30, 45, 66, 68, 69, 71, 83]


def test_coco_raw_ids_are_1_to_90_without_the_unused_ones():
    expected = [i for i in range(1, 91) if i not in COCO_UNUSED_IDS]
    assert COCO_RAW_CATEGORY_IDS == expected


def test_coco_round_trip_over_all_80_classes():
    cls_ids = np.arange(80)
    raw = coco_contiguous_to_raw(cls_ids)
    np.testing.assert_array_equal(coco_raw_to_contiguous(raw), cls_ids)
    # spot checks from the COCO category list: person=1 -> 0, toothbrush=90 -> 79, stop sign=13 -> 11
    np.testing.assert_array_equal(coco_contiguous_to_raw([0, 11, 79]), [1, 13, 90])
    # shape is preserved
    assert coco_raw_to_contiguous(np.array([[1, 90], [13, 2]])).shape == (2, 2)


def test_raw_to_contiguous_table_marks_unused_slots():
    table = raw_to_contiguous_table(COCO_RAW_CATEGORY_IDS, COCO_RAW_NUM_CLASSES)
    assert table.dtype == np.int64 and table.shape == (91,)
    assert (table[[0] + COCO_UNUSED_IDS] == -1).all()
    used = table >= 0
    np.testing.assert_array_equal(np.nonzero(used)[0], COCO_RAW_CATEGORY_IDS)
    # inverse of contiguous_to_raw_table on the used slots
    to_raw = contiguous_to_raw_table(COCO_RAW_CATEGORY_IDS)
    np.testing.assert_array_equal(table[to_raw], np.arange(80))


@pytest.mark.parametrize("bad", [0, 12, 83, 91, -3])
def test_unknown_coco_raw_id_is_named(bad):
    with pytest.raises(ValueError, match=rf"^{bad} is not a COCO category id"):
        coco_raw_to_contiguous([1, bad])


def test_out_of_range_coco_class_id_is_named():
    with pytest.raises(ValueError, match="COCO class id 80 is outside 0..79"):
        coco_contiguous_to_raw([3, 80])


def test_raw_table_rejects_ids_that_do_not_fit():
    with pytest.raises(ValueError, match="category id 90 does not fit num_classes=90"):
        raw_to_contiguous_table(COCO_RAW_CATEGORY_IDS, 90)


@pytest.mark.parametrize(
    "cat_ids, message",
    [([], "empty"), ([1, 3, 1], "duplicates"), ([1, -2], ">= 0"), ([1.5, 2], "integers")],
)
def test_bad_cat_id_lists(cat_ids, message):
    with pytest.raises(ValueError, match=message):
        contiguous_to_raw_table(cat_ids)


def test_model_class_tables_for_a_gapped_dataset():
    catid2clsid = {5: 2, 1: 0, 3: 1}  # the demo set's ids, in arbitrary dict order
    assert cat_ids_from_catid2clsid(catid2clsid) == [1, 3, 5]

    to_model, to_dataset = model_class_tables(catid2clsid, "coco_raw", 6)
    np.testing.assert_array_equal(to_model, [1, 3, 5])
    np.testing.assert_array_equal(to_dataset, [-1, 0, -1, 1, -1, 2])
    np.testing.assert_array_equal(to_dataset[to_model], [0, 1, 2])

    to_model, to_dataset = model_class_tables(catid2clsid, "contiguous", 4)
    np.testing.assert_array_equal(to_model, [0, 1, 2])
    np.testing.assert_array_equal(to_dataset, [0, 1, 2, -1])


def test_model_class_tables_for_coco_matches_the_coco_helpers():
    catid2clsid = {cid: i for i, cid in enumerate(COCO_RAW_CATEGORY_IDS)}
    to_model, to_dataset = model_class_tables(catid2clsid, "coco_raw", COCO_RAW_NUM_CLASSES)
    np.testing.assert_array_equal(to_model, coco_contiguous_to_raw(np.arange(80)))
    np.testing.assert_array_equal(to_dataset[to_model], np.arange(80))


def test_model_class_tables_errors():
    with pytest.raises(ValueError, match="class_id_mode must be one of"):
        model_class_tables({1: 0}, "raw", 2)
    with pytest.raises(ValueError, match="3 categories but num_classes=2"):
        model_class_tables({1: 0, 3: 1, 5: 2}, "contiguous", 2)
    with pytest.raises(ValueError, match="does not fit num_classes=5"):
        model_class_tables({1: 0, 3: 1, 5: 2}, "coco_raw", 5)
    with pytest.raises(ValueError, match=r"catid2clsid values must be 0..1, got \[0, 2\]"):
        cat_ids_from_catid2clsid({1: 0, 3: 2})
