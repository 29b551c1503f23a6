"""tools/x2coco.py --dataset_type voc: ppdet's command line, VOC's 1-based inclusive boxes as
COCO [x, y, w, h], the readers' rules for bad entries, one-line errors."""

import json
import os
import subprocess
import sys

import pytest

from _data_helpers import REPO, write_voc
from ppdet_dac.data.demo_data import make_demo_data, write_voc_split

sys.path.insert(0, os.path.join(REPO, "tools"))
import x2coco  # noqa: E402

LABELS = ["tree", "car"]
TIMEOUT_S = 120


def _convert(tmp_path, anno_dir, anno_list, label_list, out="coco/out.json"):
    path = x2coco.main(
        [
            "--dataset_type",
            "voc",
            "--voc_anno_dir",
            str(anno_dir),
            "--voc_anno_list",
            str(anno_list),
            "--voc_label_list",
            str(label_list),
            "--voc_out_name",
            out,
            "--output_dir",
            str(tmp_path),
        ]
    )
    assert path == os.path.join(str(tmp_path), out)
    with open(path) as f:
        return json.load(f)


def test_boxes_images_and_categories_hand_computed(tmp_path, dataset_log):
    list_file, label_file = write_voc(
        str(tmp_path),
        [
            dict(
                stem="a",
                width=100,
                height=80,
                objects=[
                    ("car", [11, 21, 40, 50], 0),  # -> [10, 20, 30, 30]
                    ("tree", [10.5, 20.5, 30.5, 40.5], 1),  # -> [9.5, 19.5, 21, 21]
                    ("car", [90, 70, 130, 95], 0),  # -> [89, 69, 41, 26], not clamped
                    ("car", [50, 10, 40, 30], 0),  # xmax < xmin: left out
                    ("car", ["x", 1, 2, 3], 0),
                ],
            ),  # not a number: left out
            dict(
                stem="b",
                width=100,
                height=80,
                xml_size=("fifty", 80),
                objects=[("car", [1, 1, 9, 9], 0)],
            ),  # bad <size>: image left out
            dict(stem="c", width=30, height=20, objects=[("tree", [1, 1, 1, 1], 0)]),
        ],  # 1 pixel
        LABELS,
    )
    coco = _convert(tmp_path, tmp_path, list_file, label_file)
    assert coco["images"] == [
        {"id": 0, "file_name": "images/a.png", "width": 100, "height": 80},
        {"id": 2, "file_name": "images/c.png", "width": 30, "height": 20},
    ]
    assert coco["annotations"] == [
        {
            "id": 1,
            "image_id": 0,
            "category_id": 2,
            "bbox": [10, 20, 30, 30],
            "area": 900,
            "iscrowd": 0,
            "difficult": 0,
        },
        {
            "id": 2,
            "image_id": 0,
            "category_id": 1,
            "bbox": [9.5, 19.5, 21.0, 21.0],
            "area": 441.0,
            "iscrowd": 0,
            "difficult": 1,
        },
        {
            "id": 3,
            "image_id": 0,
            "category_id": 2,
            "bbox": [89, 69, 41, 26],
            "area": 1066,
            "iscrowd": 0,
            "difficult": 0,
        },
        {
            "id": 4,
            "image_id": 2,
            "category_id": 1,
            "bbox": [0, 0, 1, 1],
            "area": 1,
            "iscrowd": 0,
            "difficult": 0,
        },
    ]
    assert coco["categories"] == [
        {"id": 1, "name": "tree", "supercategory": "none"},
        {"id": 2, "name": "car", "supercategory": "none"},
    ]
    text = dataset_log.text
    assert (
        f"{list_file}: skipped 1 of 3 images (width/height not a number > 0; annotation "
        "files xml/b.xml)" in text
    )
    assert (
        f"{list_file}: skipped 1 malformed boxes (bbox not 4 finite numbers; objects "
        "xml/a.xml object 5)" in text
    )
    assert (
        f"{list_file}: skipped 1 degenerate boxes (no area inside the image; objects "
        "xml/a.xml object 4)" in text
    )


def test_id_lists_take_the_xml_filename(tmp_path):
    """ppdet's ImageSets/Main lists: one id (or xml name) per line, relative to
    --voc_anno_dir; '.xml' is added; the image is the XML's <filename>."""
    write_voc(
        str(tmp_path),
        [dict(stem=s, width=40, height=30, objects=[("car", [2, 3, 11, 13], 0)]) for s in "ab"],
        LABELS,
    )
    ids = tmp_path / "ids.txt"
    ids.write_text("b\n\na.xml\n")
    coco = _convert(tmp_path, tmp_path / "xml", ids, tmp_path / "label_list.txt")
    assert [(im["id"], im["file_name"]) for im in coco["images"]] == [(0, "b.png"), (1, "a.png")]
    assert [a["bbox"] for a in coco["annotations"]] == [[1, 2, 10, 11]] * 2


def test_output_equals_the_coco_annotation_of_the_demo_shapes(tmp_path):
    """The demo shapes written as VOC and converted back (the command line, as a user runs
    it): the same images, sizes and boxes with their class names as the demo's COCO file."""
    make_demo_data(
        str(tmp_path),
        num_train=12,
        num_val=2,
        num_empty_train=2,
        min_size=64,
        max_size=96,
        max_objects=5,
    )
    write_voc_split(str(tmp_path), "train")
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "x2coco.py"),
            "--dataset_type",
            "voc",
            "--voc_anno_dir",
            str(tmp_path),
            "--voc_anno_list",
            "voc/train.txt",
            "--voc_label_list",
            "voc/label_list.txt",
            "--voc_out_name",
            "converted.json",
            "--output_dir",
            "out",
        ],
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "out" / "converted.json") as f:
        converted = json.load(f)
    with open(tmp_path / "annotations" / "instances_train.json") as f:
        original = json.load(f)

    def content(anno, file_name):
        names = {c["id"]: c["name"] for c in anno["categories"]}
        boxes = {}
        for ann in anno["annotations"]:
            boxes.setdefault(ann["image_id"], []).append(
                (names[ann["category_id"]], [float(v) for v in ann["bbox"]])
            )
        return {
            file_name(im): (im["width"], im["height"], sorted(boxes.get(im["id"], [])))
            for im in anno["images"]
        }

    expected = content(original, lambda im: f"train/{im['file_name']}")
    assert content(converted, lambda im: im["file_name"]) == expected
    assert len(expected) == 12 and sum(len(v[2]) for v in expected.values()) == len(
        original["annotations"]
    )
    assert (
        f"wrote 12 images, {len(original['annotations'])} boxes and 3 categories to "
        f"out/converted.json" in proc.stdout + proc.stderr
    )


def test_unknown_label_stops_with_one_line_naming_the_file(tmp_path):
    list_file, label_file = write_voc(
        str(tmp_path),
        [dict(stem="a", width=40, height=30, objects=[("dog", [2, 3, 11, 13], 0)])],
        LABELS,
    )
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "x2coco.py"),
            "--dataset_type",
            "voc",
            "--voc_anno_dir",
            str(tmp_path),
            "--voc_anno_list",
            list_file,
            "--voc_label_list",
            label_file,
        ],
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"x2coco.py: error: {tmp_path / 'xml' / 'a.xml'}: object 1 is labelled 'dog', which is "
        f"not in the label list {label_file} (classes: ['tree', 'car'])"
    )
    assert "Traceback" not in proc.stderr and not (tmp_path / "voc.json").exists()


def test_other_dataset_types_are_refused(capsys):
    with pytest.raises(SystemExit) as info:
        x2coco.parse_args(
            [
                "--dataset_type",
                "labelme",
                "--voc_anno_dir",
                "a",
                "--voc_anno_list",
                "b",
                "--voc_label_list",
                "c",
            ]
        )
    assert info.value.code == 2
    assert (
        "argument --dataset_type: invalid choice: 'labelme' (choose from 'voc')"
        in capsys.readouterr().err
    )
