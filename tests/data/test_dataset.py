"""DACCOCODataSet: annotation rules (docs/algorithm.md#10-data-recipe) and one clear message per
kind of bad input.

These build the dataset object directly (no ppdet global config involved)."""

import json
import os

import numpy as np
import pytest
from ppdet.data.reader import Compose
from ppdet.data.source.category import get_categories
from ppdet.data.source.coco import COCODataSet

from _data_helpers import write_coco
from ppdet_dac.data.dataset import DACCOCODataSet
from ppdet_dac.data.decode_errors import UnreadableDatasetError
from ppdet_dac.data.transforms import ImageDecodeError

FIELDS = ["image", "gt_bbox", "gt_class", "is_crowd"]
CATS = [(3, "square"), (7, "circle")]


def _dataset(root, **kwargs):
    kwargs.setdefault("data_fields", FIELDS)
    ds = DACCOCODataSet(
        dataset_dir=str(root), image_dir="images", anno_path="annotations/instances.json", **kwargs
    )
    ds.check_or_download_dataset()
    ds.parse_dataset()
    return ds


def _by_id(ds):
    return {int(r["im_id"][0]): r for r in ds.roidbs}


def test_missing_annotation_file_is_one_file_not_found_error(tmp_path):
    ds = DACCOCODataSet(
        dataset_dir=str(tmp_path), image_dir="images", anno_path="annotations/nope.json"
    )
    expected = os.path.join(str(tmp_path), "annotations/nope.json")
    with pytest.raises(FileNotFoundError, match=f"annotation file not found: {expected}"):
        ds.check_or_download_dataset()
    with pytest.raises(FileNotFoundError, match=f"annotation file not found: {expected}"):
        ds.parse_dataset()


def test_missing_image_directory_is_named(tmp_path):
    write_coco(str(tmp_path), [{"id": 1, "width": 50, "height": 40}], [], CATS)
    ds = DACCOCODataSet(
        dataset_dir=str(tmp_path), image_dir="train2017", anno_path="annotations/instances.json"
    )
    with pytest.raises(FileNotFoundError, match="image directory not found: .*train2017"):
        ds.check_or_download_dataset()


def test_invalid_json_is_named(tmp_path):
    write_coco(str(tmp_path), [{"id": 1, "width": 50, "height": 40}], [], CATS)
    with open(tmp_path / "annotations" / "instances.json", "w") as f:
        f.write("{not json")
    with pytest.raises(ValueError, match="instances.json is not valid JSON"):
        _dataset(tmp_path)


def test_boxes_are_clamped_and_classes_follow_the_categories_order(tmp_path):
    write_coco(
        str(tmp_path),
        [{"id": 4, "width": 100, "height": 80}],
        [
            {"image_id": 4, "category_id": 7, "bbox": [-10, 5, 40, 20]},  # left edge out
            {"image_id": 4, "category_id": 3, "bbox": [70, 60, 50, 50]},
        ],  # corner out
        CATS,
    )
    ds = _dataset(tmp_path)
    assert ds.catid2clsid == {3: 0, 7: 1}
    rec = ds.roidbs[0]
    np.testing.assert_allclose(rec["gt_bbox"], [[0, 5, 30, 25], [70, 60, 100, 80]])
    np.testing.assert_array_equal(rec["gt_class"], [[1], [0]])
    assert rec["gt_bbox"].dtype == np.float32 and rec["gt_class"].dtype == np.int32
    assert [rec["h"], rec["w"]] == [80.0, 100.0]


def test_class_order_matches_ppdet_metric_mapping(tmp_path):
    """The COCO metric maps class ids back with get_categories; both must agree."""
    cats = [(9, "c"), (2, "a"), (5, "b")]  # deliberately unsorted
    anno = write_coco(
        str(tmp_path),
        [{"id": 1, "width": 50, "height": 50}],
        [{"image_id": 1, "category_id": 5, "bbox": [1, 1, 10, 10]}],
        cats,
    )
    ds = _dataset(tmp_path)
    clsid2catid, _ = get_categories("COCO", anno)
    assert {catid: clsid for clsid, catid in clsid2catid.items()} == ds.catid2clsid


def test_same_records_as_ppdet_on_clean_data(tmp_path):
    write_coco(
        str(tmp_path),
        [{"id": 1, "width": 60, "height": 50}, {"id": 2, "width": 70, "height": 40}],
        [
            {"image_id": 1, "category_id": 7, "bbox": [1, 2, 30.5, 20]},
            {"image_id": 2, "category_id": 3, "bbox": [10, 5, 20, 30]},
            {"image_id": 2, "category_id": 7, "bbox": [0, 0, 70, 40]},
        ],
        CATS,
    )
    ours = _dataset(tmp_path)
    theirs = COCODataSet(
        dataset_dir=str(tmp_path),
        image_dir="images",
        anno_path="annotations/instances.json",
        data_fields=FIELDS,
    )
    theirs.parse_dataset()
    assert len(ours.roidbs) == len(theirs.roidbs) == 2
    for a, b in zip(ours.roidbs, theirs.roidbs):
        assert a["im_file"] == b["im_file"] and a["im_id"] == b["im_id"]
        for key in ("gt_bbox", "gt_class", "is_crowd"):
            np.testing.assert_allclose(a[key], b[key], err_msg=key)


def test_crowd_annotations_are_dropped_unless_asked_for(tmp_path):
    write_coco(
        str(tmp_path),
        [{"id": 1, "width": 50, "height": 50}],
        [
            {"image_id": 1, "category_id": 3, "bbox": [1, 1, 10, 10]},
            {"image_id": 1, "category_id": 7, "bbox": [20, 20, 10, 10], "iscrowd": 1},
        ],
        CATS,
    )
    assert len(_dataset(tmp_path).roidbs[0]["gt_bbox"]) == 1
    rec = _dataset(tmp_path, load_crowd=True).roidbs[0]
    np.testing.assert_array_equal(rec["is_crowd"], [[0], [1]])


def test_degenerate_boxes_are_skipped_with_image_id_and_box(tmp_path, dataset_log):
    write_coco(
        str(tmp_path),
        [{"id": 11, "width": 100, "height": 80}],
        [
            {"image_id": 11, "category_id": 3, "bbox": [10, 10, 20, 20]},
            {"image_id": 11, "category_id": 3, "bbox": [120, 10, 15, 15]},  # right of image
            {"image_id": 11, "category_id": 7, "bbox": [5, 5, 0, 12]},  # zero width
            {"image_id": 11, "category_id": 7, "bbox": [5, 5, 4]},
        ],
        CATS,
    )  # malformed
    ds = _dataset(tmp_path)
    np.testing.assert_allclose(ds.roidbs[0]["gt_bbox"], [[10, 10, 30, 30]])
    text = dataset_log.text
    assert (
        "degenerate box of image id 11 (annotation id 2): bbox [x, y, w, h] = [120, 10, 15, 15]"
        in text
    )
    assert (
        "degenerate box of image id 11 (annotation id 3): bbox [x, y, w, h] = [5, 5, 0, 12]" in text
    )
    assert "annotation id 4 of image id 11: bbox [5, 5, 4] is not [x, y, w, h]" in text
    anno = str(tmp_path / "annotations" / "instances.json")
    assert (
        f"{anno}: skipped 2 degenerate boxes (no area inside the image; annotation ids 2, 3)"
        in text
    )
    assert (
        f"{anno}: skipped 1 malformed boxes (bbox not 4 finite numbers; annotation ids 4)" in text
    )


def _add_annotations(anno, annotations):
    """Append raw annotation dicts to a written COCO file (write_coco paints boxes, so values
    it cannot paint go in afterwards)."""
    with open(anno) as f:
        content = json.load(f)
    content["annotations"] += annotations
    with open(anno, "w") as f:
        json.dump(content, f)


def test_non_finite_and_non_numeric_boxes_are_skipped_naming_file_and_ids(tmp_path, dataset_log):
    anno = write_coco(
        str(tmp_path),
        [{"id": 5, "width": 100, "height": 80}],
        [{"image_id": 5, "category_id": 3, "bbox": [10, 10, 20, 20]}],
        CATS,
    )
    bad = [
        [float("nan"), 10, 20, 20],
        [10, "a", 20, 20],
        [10, 10, float("inf"), 20],
        [float("-inf"), 10, 20, 20],
        [True, 10, 20, 20],
        [None, 10, 20, 20],
        [10, 10, "20", 20],
    ]
    _add_annotations(
        anno,
        [
            {"id": 100 + k, "image_id": 5, "category_id": 7, "bbox": box, "iscrowd": 0}
            for k, box in enumerate(bad)
        ],
    )
    ds = _dataset(tmp_path)  # no exception
    np.testing.assert_allclose(ds.roidbs[0]["gt_bbox"], [[10, 10, 30, 30]])
    np.testing.assert_array_equal(ds.roidbs[0]["gt_class"], [[0]])
    text = dataset_log.text
    assert (
        "skipping annotation id 100 of image id 5: bbox [nan, 10, 20, 20] has a non-finite value"
    ) in text
    assert (
        "skipping annotation id 101 of image id 5: bbox [10, 'a', 20, 20] has a value that "
        "is not a number"
    ) in text
    assert (
        "annotation id 104 of image id 5: bbox [True, 10, 20, 20] has a value that is not a number"
    ) in text
    assert (
        f"{anno}: skipped 7 malformed boxes (bbox not 4 finite numbers; annotation ids "
        "100, 101, 102, 103, 104 and 2 more)"
    ) in text


def test_bad_image_size_is_skipped_naming_file(tmp_path, dataset_log):
    anno = write_coco(
        str(tmp_path),
        [{"id": 1, "width": 50, "height": 40}, {"id": 2, "width": 50, "height": 40}],
        [{"image_id": i, "category_id": 3, "bbox": [1, 1, 10, 10]} for i in (1, 2)],
        CATS,
    )
    with open(anno) as f:
        content = json.load(f)
    content["images"][1]["width"] = "fifty"
    with open(anno, "w") as f:
        json.dump(content, f)
    assert sorted(_by_id(_dataset(tmp_path))) == [1]
    assert f"width 'fifty' / height 40 in {anno} must be numbers > 0" in dataset_log.text
    assert (
        f"{anno}: skipped 1 of 2 images (width/height not a number > 0; image ids 2)"
        in dataset_log.text
    )


@pytest.mark.parametrize(
    "entry, what",
    [
        ({"file_name": "a.png"}, "{'file_name': 'a.png'}"),
        ({"id": "7", "file_name": "a.png"}, "'id': '7'"),
        ({"id": 7}, "{'id': 7}"),
    ],
)
def test_image_entry_without_id_or_file_name_is_named(tmp_path, entry, what):
    anno = write_coco(str(tmp_path), [{"id": 1, "width": 50, "height": 40}], [], CATS)
    with open(anno) as f:
        content = json.load(f)
    content["images"].append(entry)
    with open(anno, "w") as f:
        json.dump(content, f)
    with pytest.raises(ValueError) as info:
        _dataset(tmp_path)
    assert str(info.value).startswith(
        f"{anno}: images[1] needs an integer 'id' and a 'file_name' string, got {{"
    )
    assert what in str(info.value)


def test_training_set_without_any_box_is_an_error(tmp_path):
    """An empty annotation list (or only unusable boxes): nothing to train on, even with
    allow_empty; an evaluation-style dataset (no gt_bbox field) still loads."""
    anno = write_coco(
        str(tmp_path), [{"id": i, "width": 50, "height": 40} for i in (1, 2)], [], CATS
    )
    with pytest.raises(ValueError) as info:
        _dataset(tmp_path, allow_empty=True)
    assert str(info.value) == (
        f"{anno}: no image has a usable box, nothing to train on (of the 2 images listed: 0 "
        f"missing or empty under {tmp_path / 'images'}, 0 with a bad width/height, 2 without a "
        "usable box; 0 annotations, 0 malformed and 0 degenerate boxes skipped)"
    )
    with pytest.raises(
        ValueError, match="no usable image .*2 without a usable box, allow_empty: false"
    ):
        _dataset(tmp_path)
    assert len(_dataset(tmp_path, allow_empty=True, data_fields=["image"]).roidbs) == 2
    _add_annotations(
        anno,
        [{"id": 9, "image_id": 1, "category_id": 3, "iscrowd": 0, "bbox": [float("nan"), 1, 5, 5]}],
    )
    with pytest.raises(ValueError, match="1 annotations, 1 malformed and 0 degenerate"):
        _dataset(tmp_path, allow_empty=True)


def test_unknown_category_is_one_value_error_naming_file_annotation_and_id(tmp_path):
    anno = write_coco(
        str(tmp_path),
        [{"id": 1, "width": 50, "height": 50}],
        [
            {"image_id": 1, "category_id": 3, "bbox": [1, 1, 10, 10]},
            {"id": 42, "image_id": 1, "category_id": 8, "bbox": [1, 1, 10, 10]},
        ],
        CATS,
    )
    with pytest.raises(ValueError) as info:
        _dataset(tmp_path)
    message = str(info.value)
    assert anno in message and "annotation id 42" in message and "category_id 8" in message


def test_missing_and_empty_image_files_are_skipped_and_counted(tmp_path, dataset_log):
    write_coco(
        str(tmp_path),
        [
            {"id": 1, "width": 50, "height": 50},
            {"id": 2, "width": 50, "height": 50, "paint": False, "file_name": "gone.png"},
            {"id": 3, "width": 50, "height": 50, "file_name": "zero.png"},
        ],
        [{"image_id": i, "category_id": 3, "bbox": [1, 1, 10, 10]} for i in (1, 2, 3)],
        CATS,
    )
    open(tmp_path / "images" / "zero.png", "wb").close()
    ds = _dataset(tmp_path)
    assert sorted(_by_id(ds)) == [1]
    text = dataset_log.text
    assert "skipping image id 2: file " in text and "gone.png is missing" in text
    assert "zero.png is empty or not a file" in text
    summaries = [r for r in dataset_log.records if "skipped 2 of 3 images" in r.getMessage()]
    assert len(summaries) == 1 and summaries[0].levelname == "WARNING"


def test_image_without_boxes_kept_only_with_allow_empty(tmp_path, dataset_log):
    write_coco(
        str(tmp_path),
        [
            {"id": 1, "width": 50, "height": 50},
            {"id": 2, "width": 50, "height": 50},
            {"id": 3, "width": 50, "height": 50},
        ],
        [
            {"image_id": 1, "category_id": 3, "bbox": [1, 1, 10, 10]},
            {"image_id": 3, "category_id": 3, "bbox": [1, 1, 10, 10], "iscrowd": 1},
        ],
        CATS,
    )
    assert sorted(_by_id(_dataset(tmp_path))) == [1]
    kept = _by_id(_dataset(tmp_path, allow_empty=True))
    assert sorted(kept) == [1, 2, 3]  # 3 has only a crowd box: empty for training
    assert kept[2]["gt_bbox"].shape == (0, 4) and kept[2]["gt_class"].shape == (0, 1)
    assert "2 without boxes: 2 of them kept (allow_empty)" in dataset_log.text


def test_no_usable_image_is_an_error(tmp_path):
    write_coco(str(tmp_path), [{"id": 1, "width": 50, "height": 50, "paint": False}], [], CATS)
    with pytest.raises(ValueError, match="instances.json: no usable image"):
        _dataset(tmp_path, allow_empty=True)


def test_bad_on_decode_error_value():
    with pytest.raises(ValueError, match="on_decode_error must be one of"):
        DACCOCODataSet(on_decode_error="ignore")


@pytest.mark.parametrize("value", [0, -1, True, "5", 2.5])
def test_bad_max_consecutive_decode_errors(value):
    with pytest.raises(ValueError) as info:
        DACCOCODataSet(max_consecutive_decode_errors=value)
    assert str(info.value) == (
        f"DACCOCODataSet.max_consecutive_decode_errors must be an integer >= 1, got {value!r}"
    )


def _corrupt_dataset(tmp_path, **kwargs):
    write_coco(
        str(tmp_path),
        [{"id": i, "width": 40 + i, "height": 30} for i in (1, 2, 3)],
        [{"image_id": i, "category_id": 7, "bbox": [2, 2, 10, 10]} for i in (1, 2, 3)],
        CATS,
    )
    with open(tmp_path / "images" / "0002.png", "wb") as f:
        f.write(b"this is not an image")
    ds = _dataset(tmp_path, **kwargs)
    ds.set_kwargs()
    ds.set_transform(Compose([{"DACDecode": {}}]))
    return ds


def test_undecodable_image_is_skipped_in_training(tmp_path, dataset_log):
    ds = _corrupt_dataset(tmp_path)
    sample = ds[1]  # index 1 is image id 2, the corrupt one
    assert int(sample["im_id"][0]) == 3 and sample["image"].shape == (30, 43, 3)
    warnings = [
        r.getMessage()
        for r in dataset_log.records
        if r.name == "ppdet_dac.data.decode_errors" and "skipping undecodable" in r.getMessage()
    ]
    assert len(warnings) == 1 and "0002.png" in warnings[0]
    assert "training continues" in warnings[0]
    # the bad file is remembered: no second warning, same substitute
    assert int(ds[1]["im_id"][0]) == 3
    assert len([r for r in dataset_log.records if "skipping undecodable" in r.getMessage()]) == 1
    assert [int(ds[i]["im_id"][0]) for i in (0, 2)] == [1, 3]


def test_undecodable_image_raises_when_asked(tmp_path):
    ds = _corrupt_dataset(tmp_path, on_decode_error="raise")
    with pytest.raises(
        ImageDecodeError, match=r"cannot decode image file .*0002\.png \(20 bytes\)"
    ):
        ds[1]


def _reading_dataset(tmp_path, num, corrupt, **kwargs):
    """``num`` images with ids 1..num; those in ``corrupt`` are junk bytes."""
    anno = write_coco(
        str(tmp_path),
        [
            {"id": i, "width": 40, "height": 30, "paint": i not in corrupt}
            for i in range(1, num + 1)
        ],
        [{"image_id": i, "category_id": 7, "bbox": [2, 2, 10, 10]} for i in range(1, num + 1)],
        CATS,
    )
    for i in corrupt:
        with open(tmp_path / "images" / f"{i:04d}.png", "wb") as f:
            f.write(b"junk")
    ds = _dataset(tmp_path, **kwargs)
    ds.set_kwargs()
    ds.set_transform(Compose([{"DACDecode": {}}]))
    return ds, anno


def test_all_images_undecodable_is_an_error(tmp_path):
    ds, anno = _reading_dataset(tmp_path, 2, corrupt=(1, 2))
    with pytest.raises(UnreadableDatasetError) as info:
        ds[0]
    assert str(info.value) == (
        f"{tmp_path / 'images'}: none of the 2 images listed in {anno} can be decoded; "
        "undecodable files include 0001.png, 0002.png (2 in all); check that the images are "
        "JPEG/PNG/BMP/TIFF files that open"
    )
    with pytest.raises(UnreadableDatasetError, match="none of the 2 images"):
        ds[1]  # known bad: no second search


def test_too_many_undecodable_images_in_a_row_stop(tmp_path, dataset_log):
    """Limit 3: images 2, 3, 4 of 6 fail in a row -> stop naming the folder and the files,
    although images 5 and 6 are fine."""
    ds, _ = _reading_dataset(tmp_path, 6, corrupt=(2, 3, 4), max_consecutive_decode_errors=3)
    assert int(ds[0]["im_id"][0]) == 1
    with pytest.raises(UnreadableDatasetError) as info:
        ds[1]
    assert str(info.value) == (
        f"{tmp_path / 'images'}: 3 images in a row cannot be decoded "
        "(max_consecutive_decode_errors: 3), so training stops instead of searching the rest "
        "for a readable one; undecodable files include 0002.png, 0003.png, 0004.png (3 in all);"
        " check that the images are JPEG/PNG/BMP/TIFF files that open"
    )
    # the same files under a limit of 4 are skipped (one line each), not an error
    ds, _ = _reading_dataset(
        tmp_path / "again", 6, corrupt=(2, 3, 4), max_consecutive_decode_errors=4
    )
    assert int(ds[1]["im_id"][0]) == 5
    skipped = [
        r.getMessage() for r in dataset_log.records if "skipping undecodable" in r.getMessage()
    ]
    assert len(skipped) == 6 and all("Traceback" not in m for m in skipped)


def test_a_readable_image_resets_the_count(tmp_path):
    """Limit 3: failures 2, 3, then 4 reads, then 5 fails: never 3 in a row."""
    ds, _ = _reading_dataset(tmp_path, 6, corrupt=(2, 3, 5), max_consecutive_decode_errors=3)
    assert [int(ds[i]["im_id"][0]) for i in (1, 4)] == [4, 6]


def test_no_ppdet_traceback_for_an_undecodable_image(tmp_path, dataset_log):
    """ppdet's Compose logs every failing op with a traceback (logger 'reader'); the dataset's
    one line is all a skipped image produces."""
    import logging

    reader_log = logging.getLogger("reader")
    reader_log.addHandler(dataset_log.handler)
    try:
        ds, _ = _reading_dataset(tmp_path, 2, corrupt=(1,))
        assert int(ds[0]["im_id"][0]) == 2
        messages = [r.getMessage() for r in dataset_log.records]
        assert [m for m in messages if "skipping undecodable image" in m]
        assert not [m for m in messages if "Traceback" in m or "fail to map" in m]
        # other errors keep Compose's report and propagate
        dataset_log.clear()
        ds.transform.compose.transforms_cls.append(_Boom())
        with pytest.raises(KeyError, match="boom"):
            ds[1]
        (report,) = [r.getMessage() for r in dataset_log.records if "fail to map" in r.getMessage()]
        assert "with error: 'boom'" in report and "Traceback" in report
    finally:
        reader_log.removeHandler(dataset_log.handler)


class _Boom:
    def __call__(self, sample):
        raise KeyError("boom")


def test_decode_matches_ppdet_decode_on_a_good_image(tmp_path):
    from ppdet.data.transform import DACDecode, Decode

    write_coco(
        str(tmp_path),
        [{"id": 1, "width": 37, "height": 21}],
        [{"image_id": 1, "category_id": 7, "bbox": [2, 2, 10, 10]}],
        CATS,
    )
    path = str(tmp_path / "images" / "0001.png")
    ours = DACDecode()({"im_file": path, "h": 21.0, "w": 37.0})
    theirs = Decode()({"im_file": path, "h": 21.0, "w": 37.0})
    assert sorted(ours) == sorted(theirs)
    for key in ("image", "im_shape", "scale_factor"):
        np.testing.assert_array_equal(ours[key], theirs[key])
    # pixels are RGB: the painted box is white, the background is (40, 90, 160)
    np.testing.assert_array_equal(ours["image"][0, 0], [40, 90, 160])


def test_decode_of_missing_file_names_it(tmp_path):
    from ppdet.data.transform import DACDecode

    with pytest.raises(ImageDecodeError, match="cannot read image file .*missing.jpg"):
        DACDecode()({"im_file": str(tmp_path / "missing.jpg")})


def test_dataset_resolves_by_name_like_ppdet_configs():
    import ppdet.data.source as source
    from ppdet.core.workspace import global_config

    assert getattr(source, "DACCOCODataSet") is DACCOCODataSet
    assert "DACCOCODataSet" in global_config
