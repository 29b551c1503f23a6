"""Duplicated image ids, image files and annotation ids: refused for evaluation data with one
error naming the file and the ids, resolved for training data with one warning (first entry
kept, repeated annotation ids renumbered) so the loaded records are those of the clean file."""

import json
import os
import re
import sys

import pytest

from _data_helpers import REPO, write_coco, write_voc
from ppdet_dac.data.dataset import DACCOCODataSet
from ppdet_dac.data.duplicates import DuplicateReport, check_no_duplicates, resolve_duplicates
from ppdet_dac.data.voc import DACVOCDataSet

TRAIN_FIELDS = ["image", "gt_bbox", "gt_class", "is_crowd"]
CATS = [(3, "square"), (7, "circle")]


def _clean(root):
    """Three images (ids 1-3, files 0001.png..0003.png), one box each (annotation ids 1-3)."""
    return write_coco(
        str(root),
        [{"id": i, "width": 60, "height": 50} for i in (1, 2, 3)],
        [{"image_id": i, "category_id": 3, "bbox": [5 * i, 5, 20, 20]} for i in (1, 2, 3)],
        CATS,
    )


def _with_duplicates(anno_path):
    """The clean file plus: image id 2 listed again, 0003.png listed again as id 9 (with a box
    of its own), annotation id 1 used again for a second box of image 1."""
    with open(anno_path) as f:
        anno = json.load(f)
    anno["images"] += [dict(anno["images"][1]), dict(anno["images"][2], id=9)]
    anno["annotations"] += [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 7,
            "bbox": [30, 20, 10, 10],
            "area": 100.0,
            "iscrowd": 0,
        },
        {
            "id": 4,
            "image_id": 9,
            "category_id": 3,
            "bbox": [15, 5, 20, 20],
            "area": 400.0,
            "iscrowd": 0,
        },
    ]
    path = os.path.join(os.path.dirname(anno_path), "dups.json")
    with open(path, "w") as f:
        json.dump(anno, f)
    return path, anno


def _dataset(root, anno_name, **kwargs):
    ds = DACCOCODataSet(
        dataset_dir=str(root), image_dir="images", anno_path=f"annotations/{anno_name}", **kwargs
    )
    ds.check_or_download_dataset()
    ds.parse_dataset()
    return ds


def _boxes(ds):
    return {int(r["im_id"][0]): r["gt_bbox"].tolist() for r in ds.roidbs}


def test_report_names_each_kind():
    anno = {
        "images": [
            {"id": 1, "file_name": "a.jpg"},
            {"id": 1, "file_name": "b.jpg"},
            {"id": 2, "file_name": "./a.jpg"},
        ],
        "annotations": [{"id": 5, "image_id": 1}, {"id": 5, "image_id": 2}],
    }
    report = DuplicateReport(anno)
    assert report.image_ids == [1] and report.annotation_ids == [5]
    assert report.files == {"a.jpg": [1, 2]}
    assert not DuplicateReport(
        {"images": anno["images"][1:], "annotations": anno["annotations"][:1]}
    )


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"data_fields": TRAIN_FIELDS, "on_decode_error": "report"},
        {"data_fields": TRAIN_FIELDS, "duplicates": "refuse"},
    ],
)
def test_evaluation_data_with_duplicates_is_refused_naming_file_and_ids(tmp_path, settings):
    path, _ = _with_duplicates(_clean(tmp_path))
    with pytest.raises(ValueError) as err:
        _dataset(tmp_path, "dups.json", **settings)
    text = str(err.value)
    assert text.startswith(f"{path}: duplicated ids")
    assert "1 image ids listed more than once (2)" in text
    assert "1 image files listed under more than one id (0003.png as ids 3/9)" in text
    assert "1 annotation ids used more than once (1)" in text


def test_evaluation_data_without_duplicates_loads(tmp_path):
    _clean(tmp_path)
    assert len(_dataset(tmp_path, "instances.json").roidbs) == 3


def test_training_data_resolves_duplicates_with_one_warning(tmp_path, dataset_log):
    clean_path = _clean(tmp_path)
    clean = _dataset(tmp_path, "instances.json", data_fields=TRAIN_FIELDS)
    path, _ = _with_duplicates(clean_path)
    dataset_log.clear()
    ds = _dataset(tmp_path, "dups.json", data_fields=TRAIN_FIELDS)
    warnings = [
        r.getMessage()
        for r in dataset_log.records
        if "duplicated" in r.getMessage() or "more than once" in r.getMessage()
    ]
    assert len(warnings) == 1 and warnings[0].startswith(
        f"{path}: 1 image ids listed more than once (2)"
    )
    assert "dropped 2 repeated image entries and the 1 annotations of repeated files" in warnings[0]
    assert f"{path}: loaded 3 images" in dataset_log.text
    # image 1 keeps both of its boxes (the repeated annotation id is renumbered, not dropped);
    # images 2 and 3 are loaded once, with the boxes of the clean file
    expected = _boxes(clean)
    expected[1] = expected[1] + [[30.0, 20.0, 40.0, 30.0]]
    assert _boxes(ds) == expected


def test_resolve_renumbers_annotation_ids_above_the_largest(tmp_path):
    _, anno = _with_duplicates(_clean(tmp_path))
    resolved, report = resolve_duplicates(anno)
    assert report and not DuplicateReport(resolved)
    assert [a["id"] for a in resolved["annotations"]] == [1, 2, 3, 5]
    assert [i["id"] for i in resolved["images"]] == [1, 2, 3]
    check_no_duplicates(resolved, "resolved")
    assert len(anno["images"]) == 5  # the input is left as it was


def _voc_listed_twice(root):
    """A VOC set of images a and b whose list names a twice."""
    list_file, label_file = write_voc(
        str(root),
        [
            dict(stem=stem, width=40, height=30, objects=[("square", [2, 2, 20, 20], 0)])
            for stem in ("a", "b")
        ],
        ["square"],
    )
    with open(list_file, "a") as f:
        f.write("images/a.png xml/a.xml\n")
    return list_file, label_file


def test_voc_list_naming_an_image_twice_is_refused_for_evaluation(tmp_path):
    list_file, _ = _voc_listed_twice(tmp_path)
    ds = DACVOCDataSet(
        dataset_dir=str(tmp_path),
        image_dir="",
        anno_path="train.txt",
        label_list="label_list.txt",
        on_decode_error="report",
    )
    with pytest.raises(ValueError) as err:
        ds.parse_dataset()
    assert str(err.value).startswith(f"{list_file}: duplicated ids")
    assert "images/a.png as ids 0/2" in str(err.value)


def test_x2coco_refuses_a_list_naming_an_image_twice(tmp_path):
    list_file, label_file = _voc_listed_twice(tmp_path)
    sys.path.insert(0, os.path.join(REPO, "tools"))
    import x2coco

    with pytest.raises(
        ValueError,
        match=rf"^{re.escape(list_file)}: duplicated ids.*"
        r"images/a\.png as ids 0/2",
    ):
        x2coco.main(
            [
                "--dataset_type",
                "voc",
                "--voc_anno_dir",
                str(tmp_path),
                "--voc_anno_list",
                list_file,
                "--voc_label_list",
                label_file,
                "--output_dir",
                str(tmp_path),
            ]
        )
    assert not (tmp_path / "voc.json").exists()
