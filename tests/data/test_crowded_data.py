"""The crowded variant of the demo data (``Crowding``, ``make_demo_data.py --crowded``): objects
per image in the stated range, overlapping boxes, varied aspect ratios, determinism; and the
demo's own images unchanged by it."""

import hashlib
import importlib.util
import json
import os

import numpy as np
import pytest

from _data_helpers import REPO
from ppdet_dac.analysis.queries import box_iou_xyxy
from ppdet_dac.data.crowding import Crowding
from ppdet_dac.data.demo_data import _rng, draw_image, generate_split, make_demo_data


def _boxes_per_image(anno):
    boxes = {im["id"]: [] for im in anno["images"]}
    for ann in anno["annotations"]:
        x, y, w, h = ann["bbox"]
        boxes[ann["image_id"]].append([x, y, x + w, y + h])
    return [np.array(b, dtype=np.float64).reshape([-1, 4]) for b in boxes.values()]


@pytest.fixture(scope="module")
def crowded_val(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("crowded"))
    return root, generate_split(root, "val", 12, seed=3, crowding=Crowding())


def test_objects_per_image_in_the_stated_range(crowded_val):
    _, anno = crowded_val
    counts = [len(b) for b in _boxes_per_image(anno)]
    crowding = Crowding()
    assert all(crowding.min_objects <= n <= crowding.max_objects for n in counts), counts
    assert len(set(counts)) > 3  # the count varies between images
    assert anno["info"]["generator"]["crowding"] == {
        "min_objects": 10,
        "max_objects": 24,
        "min_size": 0.10,
        "max_size": 0.36,
        "max_aspect": 3.0,
        "max_occlusion": 0.5,
        "tries": 300,
    }


def test_boxes_overlap_and_vary_in_size_and_shape(crowded_val):
    _, anno = crowded_val
    best_iou, aspects, sides = [], [], []
    for boxes, image in zip(_boxes_per_image(anno), anno["images"]):
        iou = box_iou_xyxy(boxes, boxes)
        np.fill_diagonal(iou, 0)
        best_iou.append(iou.max(axis=1))
        wh = boxes[:, 2:] - boxes[:, :2]
        aspects += list(wh[:, 0] / wh[:, 1])
        sides += list(np.sqrt(wh.prod(axis=1)) / min(image["height"], image["width"]))
    best_iou = np.concatenate(best_iou)
    # most objects overlap another one, some heavily (the demo set: "may overlap a little")
    assert np.mean(best_iou > 0) > 0.6
    assert np.mean(best_iou > 0.3) > 0.1
    assert min(aspects) < 1 / 2 and max(aspects) > 2
    assert min(sides) < 0.13 and max(sides) > 0.3


def test_crowded_split_is_deterministic(crowded_val, tmp_path):
    root, anno = crowded_val
    again = generate_split(str(tmp_path), "val", 12, seed=3, crowding=Crowding())
    assert again == anno
    for name in ("000001.jpg", "000012.jpg"):
        with (
            open(os.path.join(root, "val", name), "rb") as a,
            open(tmp_path / "val" / name, "rb") as b,
        ):
            assert a.read() == b.read()
    other = generate_split(str(tmp_path / "other"), "val", 12, seed=4, crowding=Crowding())
    assert other["annotations"] != anno["annotations"]


def test_demo_images_unchanged_by_the_crowded_layout():
    """The demo layout draws exactly as before the crowded variant existed: the sha256 of four
    images and their boxes, computed with the generator before that change."""
    digest = hashlib.sha256()
    for index in range(4):
        image, objects = draw_image(_rng(0, "val", index), 240, 256, 6)
        digest.update(image.tobytes())
        digest.update(repr(objects).encode())
    assert digest.hexdigest() == (
        "b213106b70bc6f2c99c01283dca83218ca40271050520fec4bceb3cdeb074406"
    )


def test_switching_layout_regenerates_and_bad_crowding_is_named(tmp_path):
    root = str(tmp_path / "d")
    small = dict(num_train=2, num_val=2, num_empty_train=0)
    assert make_demo_data(root, **small) == {"train": "generated", "val": "generated"}
    status = make_demo_data(root, crowding=Crowding(), **small)
    assert status == {"train": "generated", "val": "generated"}
    assert make_demo_data(root, crowding=Crowding(), **small) == {
        "train": "skipped",
        "val": "skipped",
    }
    with pytest.raises(ValueError, match="min_objects <= max_objects"):
        generate_split(root, "val", 1, crowding=Crowding(min_objects=5, max_objects=4))
    with pytest.raises(ValueError, match="max_aspect >= 1"):
        generate_split(root, "val", 1, crowding=Crowding(max_aspect=0.5))


def test_cli_crowded_writes_to_its_own_folder(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "make_demo_data_cli", f"{REPO}/tools/make_demo_data.py"
    )
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.parse_args(["--crowded"]).root == "dataset/demo_crowded"
    assert cli.parse_args([]).root == "dataset/demo"
    root = tmp_path / "c"
    args = ["--crowded", "--root", str(root), "--num-train", "1", "--num-val", "1"]
    assert cli.main(args + ["--num-empty-train", "0"]) == {"train": "generated", "val": "generated"}
    with open(root / "annotations" / "instances_val.json") as f:
        anno = json.load(f)
    assert anno["info"]["description"] == "ppdet_dac synthetic shapes (crowded)"
    assert len(anno["annotations"]) >= Crowding().min_objects
