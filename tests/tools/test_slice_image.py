"""tools/slice_image.py and ppdet_dac.data.tiling: a hand-checked 100 x 60 image cut in 40 px
tiles with overlap 0.25, COCO and VOC input giving the same tiles, the output read by the
project's COCO dataset, and one-line errors."""

import json
import os
import re
import sys

import cv2
import numpy as np
import pytest

from _common import REPO

sys.path.insert(0, os.path.join(REPO, "tools"))
sys.path.insert(0, os.path.join(REPO, "tests", "data"))
sys.path.insert(0, os.path.join(REPO, "tests", "deploy"))
import slice_image  # noqa: E402
from _data_helpers import write_coco, write_voc  # noqa: E402
from _deploy_helpers import run_process  # noqa: E402

LABELS = ["tree", "car"]
CATS = [(1, "tree"), (2, "car")]
# image a: 100 x 60; boxes [x, y, w, h] -> (x1, y1, x2, y2)
BOX_A = [10, 5, 20, 10]  # (10, 5, 30, 15), tree: inside tile (0, 0, 40, 40) only
BOX_B = [50, 30, 30, 20]  # (50, 30, 80, 50), car: 1/3 in the top tiles, 2/3 in the bottom ones
BOX_C = [2, 30, 10, 20]  # (2, 30, 12, 50), tree: exactly half in the top-left tile
# image b: 30 x 20, smaller than a tile
BOX_D = [4, 6, 10, 8]
SLICE = ["--slice_size", "40", "--overlap_ratio", "0.25"]

# 100 x 60 at 40 px, overlap 0.25: starts every 40 - 10 = 30 px; x 0, 30 and 60 (not 90: the
# edge tile shifted inward to end at 100), y 0 and 20 (not 30: ends at 60)
ALL_WINDOWS = [[x, y, x + 40, y + 40] for y in (0, 20) for x in (0, 30, 60)]
# (tile file, window, [(category, bbox in the tile)]); (30, 0) and (60, 0) keep only 1/3 of B
EXPECTED = [
    ("a_0_0_40_40.png", [0, 0, 40, 40], [("tree", [10, 5, 20, 10]), ("tree", [2, 30, 10, 10])]),
    ("a_0_20_40_60.png", [0, 20, 40, 60], [("tree", [2, 10, 10, 20])]),
    ("a_30_20_70_60.png", [30, 20, 70, 60], [("car", [20, 10, 20, 20])]),
    ("a_60_20_100_60.png", [60, 20, 100, 60], [("car", [0, 10, 20, 20])]),
    ("b_0_0_30_20.png", [0, 0, 30, 20], [("tree", [4, 6, 10, 8])]),
]


def _coco_set(root):
    """images/a.png (100 x 60, boxes A B C) and images/b.png (30 x 20, box D), painted."""
    return write_coco(
        str(root),
        [
            {"id": 7, "width": 100, "height": 60, "file_name": "a.png"},
            {"id": 9, "width": 30, "height": 20, "file_name": "b.png"},
        ],
        [
            {"image_id": 7, "category_id": 1, "bbox": BOX_A},
            {"image_id": 7, "category_id": 2, "bbox": BOX_B},
            {"image_id": 7, "category_id": 1, "bbox": BOX_C},
            {"image_id": 9, "category_id": 1, "bbox": BOX_D},
        ],
        CATS,
    )


def _voc(box):
    """VOC's 1-based inclusive [xmin, ymin, xmax, ymax] of an integer COCO [x, y, w, h]."""
    x, y, w, h = box
    return [x + 1, y + 1, x + w, y + h]


def _voc_set(root):
    return write_voc(
        str(root),
        [
            dict(
                stem="a",
                width=100,
                height=60,
                objects=[
                    ("tree", _voc(BOX_A), 0),
                    ("car", _voc(BOX_B), 1),
                    ("tree", _voc(BOX_C), 0),
                ],
            ),
            dict(stem="b", width=30, height=20, objects=[("tree", _voc(BOX_D), 0)]),
        ],
        LABELS,
    )


def _slice(*args):
    path, stats = slice_image.main([str(a) for a in args])
    with open(path) as f:
        return json.load(f), stats


def _tiles(anno):
    """[(tile file, window, [(category name, bbox)])] in file order."""
    names = {c["id"]: c["name"] for c in anno["categories"]}
    return [
        (
            im["file_name"],
            im["window"],
            [
                (names[a["category_id"]], a["bbox"])
                for a in anno["annotations"]
                if a["image_id"] == im["id"]
            ],
        )
        for im in anno["images"]
    ]


def test_hand_checked_tiles_boxes_and_pixels(tmp_path):
    from ppdet_dac.data.tiling import tile_windows

    assert tile_windows(60, 100, (40, 40), (0.25, 0.25)).tolist() == ALL_WINDOWS
    json_path = _coco_set(tmp_path / "src")
    out = tmp_path / "tiles"
    anno, stats = _slice(
        "--image_dir",
        tmp_path / "src" / "images",
        "--json_path",
        json_path,
        "--output_dir",
        out,
        *SLICE,
    )
    assert _tiles(anno) == EXPECTED
    # B's parts in (30, 0) and (60, 0) keep 1/3 < 0.5 of its area: dropped, those tiles left out
    assert stats == {"images": 2, "tiles": 5, "empty_tiles": 2, "boxes": 6, "dropped": 2}
    assert [im["id"] for im in anno["images"]] == [1, 2, 3, 4, 5]
    assert [im["source_id"] for im in anno["images"]] == [7, 7, 7, 7, 9]
    assert [a["id"] for a in anno["annotations"]] == [1, 2, 3, 4, 5, 6]
    assert [a["area"] for a in anno["annotations"]] == [200, 100, 200, 400, 400, 80]
    source = cv2.imread(str(tmp_path / "src" / "images" / "a.png"))
    for im in anno["images"]:
        tile = cv2.imread(str(out / "images" / im["file_name"]))
        x1, y1, x2, y2 = im["window"]
        assert (im["width"], im["height"]) == (x2 - x1, y2 - y1) == (tile.shape[1], tile.shape[0])
        if im["source_id"] == 7:  # lossless PNG tiles: the source's pixels
            np.testing.assert_array_equal(tile, source[y1:y2, x1:x2])
    assert sorted(os.listdir(out / "images")) == sorted(t[0] for t in EXPECTED)


def test_min_area_ratio_and_keep_empty(tmp_path):
    json_path = _coco_set(tmp_path / "src")
    common = ["--image_dir", tmp_path / "src" / "images", "--json_path", json_path, *SLICE]
    anno, stats = _slice(*common, "--output_dir", tmp_path / "all", "--keep_empty")
    tiles = _tiles(anno)
    assert [t[1] for t in tiles] == ALL_WINDOWS + [[0, 0, 30, 20]]
    assert tiles[1][2] == [] and tiles[2][2] == []  # B's 1/3 parts are still dropped
    assert stats["empty_tiles"] == 0 and stats["dropped"] == 2
    # a threshold above 1/2 drops C's half in the top-left tile; 0.3 keeps B's thirds
    anno, _ = _slice(*common, "--output_dir", tmp_path / "strict", "--min_area_ratio", "0.6")
    assert _tiles(anno)[0][2] == [("tree", [10, 5, 20, 10])]
    anno, stats = _slice(*common, "--output_dir", tmp_path / "loose", "--min_area_ratio", "0.3")
    assert ("a_30_0_70_40.png", [30, 0, 70, 40], [("car", [20, 30, 20, 10])]) in _tiles(anno)
    assert ("a_60_0_100_40.png", [60, 0, 100, 40], [("car", [0, 30, 20, 10])]) in _tiles(anno)
    assert (stats["dropped"], stats["tiles"], stats["boxes"]) == (0, 7, 8)


def test_voc_input_gives_the_coco_tiles(tmp_path):
    coco, _ = _slice(
        "--image_dir",
        tmp_path / "coco" / "images",
        "--json_path",
        _coco_set(tmp_path / "coco"),
        "--output_dir",
        tmp_path / "out_coco",
        *SLICE,
    )
    list_file, label_file = _voc_set(tmp_path / "voc")
    voc, _ = _slice(
        "--voc_anno_dir",
        tmp_path / "voc",
        "--voc_anno_list",
        list_file,
        "--voc_label_list",
        label_file,
        "--output_dir",
        tmp_path / "out_voc",
        *SLICE,
    )
    # the VOC list names images/a.png: the tiles keep that folder
    assert [("images/" + f, w, b) for f, w, b in _tiles(coco)] == _tiles(voc)
    assert [a.get("difficult") for a in voc["annotations"]] == [0, 0, 0, 1, 1, 0]
    for c_im, v_im in zip(coco["images"], voc["images"]):
        c_tile = cv2.imread(str(tmp_path / "out_coco" / "images" / c_im["file_name"]))
        v_tile = cv2.imread(str(tmp_path / "out_voc" / "images" / v_im["file_name"]))
        np.testing.assert_array_equal(c_tile, v_tile)


def test_voc_label_map_merges_and_ignores_classes(tmp_path):
    """--label_map on VOC input: 'car' merged into 'tree' keeps every box as a tree; 'car'
    ignored drops exactly the car's boxes; the tile windows stay those of the plain run."""
    list_file, label_file = _voc_set(tmp_path / "voc")
    voc_args = ["--voc_anno_dir", tmp_path / "voc", "--voc_anno_list", list_file]
    voc_args += ["--voc_label_list", label_file]
    plain, _ = _slice(*voc_args, "--output_dir", tmp_path / "plain", *SLICE)
    merged, _ = _slice(
        *voc_args, "--label_map", "car=tree", "--output_dir", tmp_path / "merged", *SLICE
    )
    ignored, _ = _slice(
        *voc_args, "--label_map", "car=__ignore__", "--output_dir", tmp_path / "ign", *SLICE
    )
    renamed = [(f, w, [("tree", b) for _, b in boxes]) for f, w, boxes in _tiles(plain)]
    assert _tiles(merged) == renamed
    without_cars = [
        (f, w, [(c, b) for c, b in boxes if c != "car"]) for f, w, boxes in _tiles(plain)
    ]
    assert [t for t in _tiles(ignored) if t[2]] == [t for t in without_cars if t[2]]
    assert sum(1 for _, _, boxes in _tiles(plain) for c, _ in boxes if c == "car") > 0


def test_the_coco_dataset_reads_the_tiles(tmp_path):
    from ppdet_dac.data.dataset import DACCOCODataSet

    _slice(
        "--image_dir",
        tmp_path / "src" / "images",
        "--json_path",
        _coco_set(tmp_path / "src"),
        "--output_dir",
        tmp_path / "tiles",
        *SLICE,
    )
    ds = DACCOCODataSet(
        dataset_dir=str(tmp_path / "tiles"),
        image_dir="images",
        anno_path="annotations.json",
        data_fields=["image", "gt_bbox", "gt_class"],
    )
    ds.check_or_download_dataset()
    ds.parse_dataset()
    records = {int(r["im_id"][0]): r for r in ds.roidbs}
    assert sorted(records) == [1, 2, 3, 4, 5]
    for im_id, (name, window, boxes) in enumerate(EXPECTED, 1):
        rec = records[im_id]
        assert rec["im_file"] == os.path.join(str(tmp_path / "tiles"), "images", name)
        assert (rec["w"], rec["h"]) == (window[2] - window[0], window[3] - window[1])
        xyxy = [[x, y, x + w, y + h] for _, (x, y, w, h) in boxes]
        np.testing.assert_array_equal(rec["gt_bbox"], np.array(xyxy, np.float32))
        assert rec["gt_class"].ravel().tolist() == [LABELS.index(c) for c, _ in boxes]


def _error(*args):
    """The last stderr line of the tool run as a program (exit status 2 asserted)."""
    proc = run_process(
        [os.path.join(REPO, "tools", "slice_image.py"), *map(str, args)], 120, None, 2
    )
    assert "Traceback" not in proc.stderr
    return proc.stderr.strip().splitlines()[-1]


def test_bad_input_is_one_line_naming_it(tmp_path):
    json_path = _coco_set(tmp_path / "src")
    images = tmp_path / "src" / "images"
    os.remove(images / "b.png")
    assert _error(
        "--image_dir", images, "--json_path", json_path, "--output_dir", tmp_path / "o"
    ) == (
        f"slice_image.py: error: 1 of 2 image files not found (under --image_dir {images}): "
        f"{images / 'b.png'}"
    )
    assert not (tmp_path / "o").exists()


def test_errors_in_process(tmp_path):
    json_path = _coco_set(tmp_path / "src")
    images = str(tmp_path / "src" / "images")
    run = ["--image_dir", images, "--json_path", json_path, *SLICE]
    with pytest.raises(FileNotFoundError, match="annotation file not found: .*nope.json"):
        slice_image.main([*run[:2], "--json_path", "nope.json", "--output_dir", "o"])
    with pytest.raises(
        ValueError, match=f"the tiles of .*a.png would be written to {re.escape(images)}"
    ):
        slice_image.main([*run, "--output_dir", str(tmp_path / "src")])
    out = ["--output_dir", os.path.dirname(json_path), "--json_name", "instances.json"]
    with pytest.raises(ValueError, match="annotation file .*instances.json would replace an input"):
        slice_image.main([*run, *out])
    with open(json_path) as f:
        bad = json.load(f)
    bad["annotations"][0]["category_id"] = 5
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="annotation id 1 .* has category_id 5, which is not in"):
        slice_image.main([*run[:2], "--json_path", str(tmp_path / "bad.json"), "--output_dir", "o"])
    bad["images"][0]["width"] = 90
    bad["annotations"][0]["category_id"] = 1
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="a.png is 100 x 60 pixels, but .*bad.json declares 90 x"):
        slice_image.main([*run[:2], "--json_path", str(tmp_path / "bad.json"), "--output_dir", "o"])
    (tmp_path / "e.json").write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(ValueError, match="e.json: no image to slice"):
        slice_image.main([*run[:2], "--json_path", str(tmp_path / "e.json"), "--output_dir", "o"])
    with pytest.raises(ValueError, match="no tile keeps a box .* lower --min_area_ratio"):
        slice_image.main([*run, "--output_dir", str(tmp_path / "o"), "--slice_size", "4"])


def test_flags_are_checked(capsys):
    for argv, message in (
        (["--output_dir", "o"], "give --json_path (COCO input) or all of --voc_anno_dir"),
        (["--json_path", "a.json", "--output_dir", "o"], "--image_dir is required"),
        (["--json_path", "a", "--voc_anno_dir", "d", "--output_dir", "o"], "not both"),
        (
            ["--json_path", "a", "--image_dir", "i", "--output_dir", "o", "--slice_size", "0"],
            "must be a positive integer",
        ),
        (
            ["--json_path", "a", "--image_dir", "i", "--output_dir", "o", "--overlap_ratio", "1"],
            "must be in [0, 1)",
        ),
        (
            [
                "--json_path",
                "a",
                "--image_dir",
                "i",
                "--output_dir",
                "o",
                "--slice_size",
                "1",
                "2",
                "3",
            ],
            "one value, or two",
        ),
    ):
        with pytest.raises(SystemExit) as info:
            slice_image.parse_args(argv)
        assert info.value.code == 2
        assert message in capsys.readouterr().err
