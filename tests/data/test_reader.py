"""Reader outputs built the way ppdet's Trainer builds them, each in a fresh interpreter.

The hand-made sample: image 1 is 200x100 (W x H) with one box [20, 10, 60, 40] (xywh) of
category 7 painted white on a flat background; image 2 is 100x100 with no object. Category 7
is the second entry of `categories`, so its ppdet class id is 1.
"""

import os
import pickle

import numpy as np
import pytest

from _data_helpers import BACKGROUND, BOX_COLOUR, REPO, run_probe, write_coco

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
WHITE = (np.array(BOX_COLOUR) / 255.0 - MEAN) / STD  # normalised value of a box pixel
BOX_XYWH = [20, 10, 60, 40]


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    root = tmp_path_factory.mktemp("handmade")
    write_coco(
        str(root),
        [{"id": 1, "width": 200, "height": 100}, {"id": 2, "width": 100, "height": 100}],
        [{"image_id": 1, "category_id": 7, "bbox": BOX_XYWH}],
        [(3, "square"), (7, "circle")],
    )
    return root


def _config(tmp_path, bases, root, extra=""):
    """A config that inherits ``bases`` (repo-relative) and points the datasets at ``root``."""
    base_list = ", ".join(f"'{os.path.join(REPO, b)}'" for b in bases)
    text = f"_BASE_: [{base_list}]\n"
    for section in ("TrainDataset", "EvalDataset"):
        text += (
            f"{section}:\n  dataset_dir: {root}\n  image_dir: images\n"
            f"  anno_path: annotations/instances.json\n"
        )
    text += (
        "TestDataset:\n  dataset_dir: " + str(root) + "\n  anno_path: annotations/instances.json\n"
    )
    text += "TrainReader:\n  shuffle: false\n" + extra
    path = tmp_path / "probe.yml"
    path.write_text(text)
    return str(path)


def _probe(tmp_path, config, *args):
    out = tmp_path / "probe.pkl"
    proc = run_probe(["--config", config, "--out", str(out)] + list(args))
    with open(out, "rb") as f:
        return pickle.load(f), proc.stdout


def _white_extent(image_chw, valid_hw):
    """[x1, y1, x2, y2] (pixel edges) of the pixels at least half-way from the background
    colour to the box colour, inside the valid region (the 50 % level of a linearly
    interpolated edge lies on the resized edge)."""
    h, w = valid_hw
    pixels = image_chw[:, :h, :w].reshape(3, -1).T
    background = (np.array(BACKGROUND) / 255.0 - MEAN) / STD
    direction = WHITE - background
    level = (pixels - background) @ direction / (direction @ direction)
    ys, xs = np.nonzero(level.reshape(h, w) > 0.5)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=float)


def _cxcywh_to_pixels(box, hw):
    cx, cy, bw, bh = box
    h, w = hw
    return np.array([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])


@pytest.mark.parametrize("flip", [False, True])
def test_demo_train_reader_on_handmade_sample(tmp_path, handmade, flip):
    # 2 images a step, as the demo's reader (at a larger batch, drop_last would drop both)
    config = _config(tmp_path, ["configs/demo/demo_data.yml"], handmade, "  batch_size: 2\n")
    result, _ = _probe(tmp_path, config, "--flip-prob", "1" if flip else "0")
    assert result["dataset"] == "DACCOCODataSet" and result["records"] == 2
    assert result["catid2clsid"] == {3: 0, 7: 1}
    (batch,) = result["batches"]
    image, pad_mask = batch["image"], batch["pad_mask"]
    # image 1: short side 100 -> s in 128..160, but the long side is capped at 192 -> 96 x 192;
    # image 2 (square, empty) -> s x s; padded to the larger of each
    np.testing.assert_array_equal(batch["im_shape"][0], [96, 192])
    s = int(batch["im_shape"][1][0])
    assert s in (128, 144, 160) and batch["im_shape"][1][1] == s
    np.testing.assert_allclose(batch["scale_factor"][0], [0.96, 0.96], rtol=1e-6)
    assert image.shape == (2, 3, s, 192) and image.dtype == np.float32
    assert pad_mask.shape == (2, s, 192)
    for i, (h, w) in enumerate([(96, 192), (s, s)]):
        assert pad_mask[i, :h, :w].min() == 1 and pad_mask[i].sum() == h * w
        assert np.abs(image[i][:, pad_mask[i] == 0]).max(initial=0) == 0
    # boxes: normalised cx, cy, w, h; flipped horizontally when asked
    x, y, bw, bh = BOX_XYWH
    cx = (x + bw / 2) / 200
    expected = [1 - cx if flip else cx, (y + bh / 2) / 100, bw / 200, bh / 100]
    np.testing.assert_allclose(batch["gt_bbox"][0], [expected], atol=1e-6)
    np.testing.assert_array_equal(batch["gt_class"][0], [[1]])
    assert batch["gt_bbox"][1].shape == (0, 4) and batch["gt_class"][1].shape == (0, 1)
    # the box and the white pixels coincide, on whichever side they ended up
    np.testing.assert_allclose(
        _white_extent(image[0], (96, 192)),
        _cxcywh_to_pixels(batch["gt_bbox"][0][0], (96, 192)),
        atol=1.5,
    )


def test_demo_eval_reader(tmp_path, handmade):
    config = _config(tmp_path, ["configs/demo/demo_data.yml"], handmade)
    result, _ = _probe(tmp_path, config, "--mode", "eval", "--batches", "2")
    first, second = result["batches"]
    # Resize [160, 224] keep_ratio: scale = min(160 / short, 224 / long)
    np.testing.assert_array_equal(first["im_shape"], [[112, 224]])
    np.testing.assert_allclose(first["scale_factor"], [[1.12, 1.12]], rtol=1e-6)
    np.testing.assert_array_equal(second["im_shape"], [[160, 160]])
    assert first["image"].shape == (1, 3, 112, 224) and first["pad_mask"].min() == 1
    assert [int(b["im_id"][0][0]) for b in (first, second)] == [1, 2]


def test_spec_reader_keeps_boxes_on_their_pixels(tmp_path, handmade):
    """dac_reader.yml (flip, resize or resize-crop-resize): every output box still covers the
    white pixels, sizes follow the recipe, boxes are normalised cxcywh inside [0, 1]."""
    config = _config(
        tmp_path, ["configs/_base_/coco_detection.yml", "configs/_base_/dac_reader.yml"], handmade
    )
    result, _ = _probe(tmp_path, config, "--batches", "8", "--seed", "3", "--workers", "0")
    short_sides = set(range(480, 801, 32))
    seen_crop = False
    for batch in result["batches"]:
        for i in range(2):
            h, w = (int(v) for v in batch["im_shape"][i])
            assert batch["pad_mask"][i].sum() == h * w
            # short side from the list unless the 1333 cap on the long side applied
            assert min(h, w) in short_sides or max(h, w) in (1332, 1333), (h, w)
            boxes = batch["gt_bbox"][i]
            if boxes.shape[0] == 0:
                continue
            assert (boxes >= 0).all() and (boxes <= 1 + 1e-6).all()
            x1, y1, x2, y2 = _cxcywh_to_pixels(boxes[0], (h, w))
            assert -1e-3 <= x1 < x2 <= w + 1e-3 and -1e-3 <= y1 < y2 <= h + 1e-3
            np.testing.assert_allclose(
                _white_extent(batch["image"][i], (h, w)), [x1, y1, x2, y2], atol=1.5
            )
            # image 1 has aspect 2: without a crop its long side is exactly 2x its short side
            seen_crop |= abs(w - 2 * h) > 2
    assert seen_crop, "8 batches should include the crop branch of RandomSelect"


def test_spec_eval_reader(tmp_path, handmade):
    """The official validation sizes (short side 800, long side capped at 1333, DETR's rounding)
    and 2 images per batch, zero-padded to the larger one."""
    config = _config(
        tmp_path, ["configs/_base_/coco_detection.yml", "configs/_base_/dac_reader.yml"], handmade
    )
    result, _ = _probe(tmp_path, config, "--mode", "eval", "--batches", "1", "--workers", "0")
    (batch,) = result["batches"]
    # 200x100: 800 * 200 / 100 > 1333 -> short side round(1333 * 100 / 200) = 666, long side
    # int(666 * 200 / 100) = 1332; 100x100 -> 800x800. Padded to 800 x 1332.
    np.testing.assert_array_equal(batch["im_shape"], [[666, 1332], [800, 800]])
    np.testing.assert_allclose(batch["scale_factor"], [[6.66, 6.66], [8.0, 8.0]], rtol=1e-6)
    assert batch["image"].shape == (2, 3, 800, 1332)
    assert batch["pad_mask"][0].sum() == 666 * 1332 and batch["pad_mask"][1].sum() == 800 * 800
    assert batch["pad_mask"][0][:666, :1332].min() == 1 and batch["pad_mask"][1][:, 800:].max() == 0


def test_coco_config_names_the_missing_annotation_file(tmp_path):
    """coco_detection.yml resolves DACCOCODataSet by name and, with no COCO on disk, fails with
    the path instead of trying to download 'coco'."""
    missing = tmp_path / "coco"
    config = tmp_path / "coco.yml"
    config.write_text(
        "_BASE_: ["
        + ", ".join(
            f"'{os.path.join(REPO, 'configs/_base_', b)}'"
            for b in ("coco_detection.yml", "runtime.yml", "dac_reader.yml")
        )
        + "]\n"
        f"TrainDataset:\n  dataset_dir: {missing}\n"
    )
    result, _ = _probe(tmp_path, str(config))
    kind, message = result["error"]
    assert kind == "FileNotFoundError"
    assert os.path.join(str(missing), "annotations/instances_train2017.json") in message


def test_loader_survives_an_undecodable_image(tmp_path):
    root = tmp_path / "data"
    write_coco(
        str(root),
        [{"id": i, "width": 64, "height": 48} for i in range(1, 5)],
        [{"image_id": i, "category_id": 3, "bbox": [4, 4, 20, 20]} for i in range(1, 5)],
        [(3, "square")],
    )
    with open(root / "images" / "0003.png", "wb") as f:
        f.write(b"\x89PNG broken")
    config = _config(tmp_path, ["configs/demo/demo_data.yml"], root, "  batch_size: 2\n")
    result, stdout = _probe(tmp_path, config, "--batches", "2")
    ids = [int(i) for b in result["batches"] for i in b["im_id"][:, 0]]
    assert 3 not in ids and len(ids) == 4
    assert "skipping undecodable image: cannot decode image file" in stdout
    assert os.path.join("images", "0003.png") in stdout
    assert "Traceback" not in stdout and "fail to map" not in stdout  # one line, no stack
