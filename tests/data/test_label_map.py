"""label_map (ppdet_dac.data.label_map) for the VOC reader and tools/x2coco.py: names in the XML
files renamed or merged into classes of the label list, or left out (counted in the log); a name
neither in the list nor in the map is still one error naming the XML file and the name."""

import json
import os
import sys

import numpy as np
import pytest

from _data_helpers import REPO, write_voc
from ppdet_dac.data.label_map import IGNORE, parse_label_map
from ppdet_dac.data.voc import DACVOCDataSet

sys.path.insert(0, os.path.join(REPO, "tools"))
import x2coco  # noqa: E402

MERGE = {"Dead": "Tree", "Alive": "Tree"}


def _forest(root, extra_object=None):
    """Two images labelled Dead / Alive / Tree (as one aerial set was), label list [Tree]:
    a.png holds 3 objects, b.png 2 (+ ``extra_object`` when given)."""
    b_objects = [("Alive", [5, 5, 20, 20], 0), ("Tree", [30, 10, 60, 40], 0)]
    return write_voc(
        str(root),
        [
            dict(
                stem="a",
                width=100,
                height=80,
                objects=[
                    ("Dead", [11, 21, 40, 50], 0),
                    ("Alive", [50, 10, 70, 30], 1),
                    ("Tree", [1, 1, 10, 10], 0),
                ],
            ),
            dict(stem="b", width=90, height=70, objects=b_objects + list(extra_object or [])),
        ],
        ["Tree"],
    )


def _dataset(root, label_map):
    ds = DACVOCDataSet(
        dataset_dir=str(root),
        anno_path="train.txt",
        label_list="label_list.txt",
        data_fields=["image", "gt_bbox", "gt_class", "difficult"],
        label_map=label_map,
    )
    ds.check_or_download_dataset()
    ds.parse_dataset()
    return ds


def test_dead_and_alive_merge_into_one_class(tmp_path):
    _forest(tmp_path)
    ds = _dataset(tmp_path, MERGE)
    a, b = ds.roidbs
    assert len(a["gt_bbox"]) == 3 and len(b["gt_bbox"]) == 2
    np.testing.assert_array_equal(a["gt_class"], [[0], [0], [0]])
    np.testing.assert_array_equal(b["gt_class"], [[0], [0]])
    # the boxes stay the XML's (VOC 1-based inclusive -> 0-based), in XML order
    np.testing.assert_array_equal(a["gt_bbox"], [[10, 20, 40, 50], [49, 9, 70, 30], [0, 0, 10, 10]])
    np.testing.assert_array_equal(a["difficult"], [[0], [1], [0]])
    assert ds.cname2cid == {"Tree": 0}


def test_without_the_map_the_first_unknown_name_stops_the_run(tmp_path):
    _forest(tmp_path)
    with pytest.raises(ValueError) as info:
        _dataset(tmp_path, None)
    assert str(info.value) == (
        f"{tmp_path / 'xml' / 'a.xml'}: object 1 is labelled 'Dead', which is not in the label "
        f"list {tmp_path / 'label_list.txt'} (classes: ['Tree'])"
    )


def test_ignored_names_are_left_out_and_counted(tmp_path, dataset_log):
    _forest(tmp_path)
    ds = _dataset(tmp_path, {"Dead": "Tree", "Alive": None})
    a, b = ds.roidbs
    np.testing.assert_array_equal(a["gt_bbox"], [[10, 20, 40, 50], [0, 0, 10, 10]])
    np.testing.assert_array_equal(b["gt_bbox"], [[29, 9, 60, 40]])
    assert (
        f"{tmp_path / 'train.txt'}: 2 objects left out by label_map (Alive: 2)" in dataset_log.text
    )
    # the same with the text form and __ignore__
    assert _dataset(tmp_path, f"Dead=Tree, Alive={IGNORE}").roidbs[1]["gt_bbox"].shape == (1, 4)


def test_a_name_neither_listed_nor_mapped_is_one_error_naming_xml_and_name(tmp_path):
    _forest(tmp_path, extra_object=[("Stump", [1, 1, 5, 5], 0)])
    with pytest.raises(ValueError) as info:
        _dataset(tmp_path, MERGE)
    assert str(info.value) == (
        f"{tmp_path / 'xml' / 'b.xml'}: object 3 is labelled 'Stump', which is not in the label "
        f"list {tmp_path / 'label_list.txt'} (classes: ['Tree']) nor in label_map"
    )


def test_a_target_outside_the_label_list_is_an_error_naming_the_entry(tmp_path):
    _forest(tmp_path)
    with pytest.raises(ValueError) as info:
        _dataset(tmp_path, {"Dead": "Tree", "Alive": "Tre"})
    assert str(info.value) == (
        f"label_map: 'Alive' is mapped to 'Tre', which is not in the label list "
        f"{tmp_path / 'label_list.txt'} (classes: ['Tree']); map it to a class or to {IGNORE}"
    )


@pytest.mark.parametrize("suffix", [".yml", ".json"])
def test_a_map_file_is_read_relative_to_dataset_dir(tmp_path, suffix):
    _forest(tmp_path)
    text = "Dead: Tree\nAlive: null\n" if suffix == ".yml" else '{"Dead": "Tree", "Alive": null}'
    (tmp_path / f"labels{suffix}").write_text(text)
    a, b = _dataset(tmp_path, f"labels{suffix}").roidbs
    assert (len(a["gt_bbox"]), len(b["gt_bbox"])) == (2, 1)


@pytest.mark.parametrize(
    "spec, error, pattern",
    [
        ("Dead=Tree,Alive", ValueError, r"--label_map: 'Alive' is not NAME=CLASS"),
        ("Dead=Tree,Dead=Bush", ValueError, r"--label_map: 'Dead' is mapped twice"),
        ("Dead=", ValueError, r"'Dead=' is not NAME=CLASS"),
        (["Dead"], ValueError, r"--label_map must be a mapping"),
        ({"Dead": 3}, ValueError, r"--label_map: entry 'Dead': 3 is not a name mapped"),
        ("missing.yml", FileNotFoundError, r"--label_map file not found: .*missing\.yml"),
        ("bad.yml", ValueError, r"--label_map file .*bad\.yml: entry False: 'Tree' is not"),
        ("list.json", ValueError, r"--label_map file .*list\.json must map label names"),
    ],
)
def test_bad_maps_are_refused_naming_the_entry(tmp_path, spec, error, pattern):
    (tmp_path / "bad.yml").write_text("no: Tree\n")  # YAML reads the key as False
    (tmp_path / "list.json").write_text('["Dead", "Tree"]')
    with pytest.raises(error, match=pattern):
        parse_label_map(spec, str(tmp_path), source="--label_map")


def test_x2coco_with_the_map_gives_the_dataset_classes_and_boxes(tmp_path, dataset_log):
    list_file, label_file = _forest(tmp_path)
    flags = {
        "--dataset_type": "voc",
        "--voc_anno_dir": tmp_path,
        "--voc_anno_list": list_file,
        "--voc_label_list": label_file,
        "--label_map": f"Dead=Tree,Alive={IGNORE}",
        "--output_dir": tmp_path / "coco",
    }
    out = x2coco.main([str(part) for flag in flags.items() for part in flag])
    with open(out) as f:
        converted = json.load(f)
    assert f"{list_file}: 2 objects left out by --label_map (Alive: 2)" in dataset_log.text
    ds = _dataset(tmp_path, {"Dead": "Tree", "Alive": None})
    with open(ds.get_anno()) as f:
        loaded = json.load(f)
    assert (
        converted["categories"]
        == loaded["categories"]
        == [{"id": 1, "name": "Tree", "supercategory": "none"}]
    )

    def boxes(coco):
        return [(a["image_id"], a["category_id"], a["bbox"]) for a in coco["annotations"]]

    assert (
        boxes(converted)
        == boxes(loaded)
        == [
            (0, 1, [10, 20, 30, 30]),
            (0, 1, [0, 0, 10, 10]),
            (1, 1, [29, 9, 31, 31]),
        ]
    )
