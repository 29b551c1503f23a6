"""Sliced inference (ppdet_dac.deploy.slicing, --slice_infer): tile layout, merging, a stand-in
detector on a large image with many small objects, and the exported model on a grid of demo
images, in process and through deploy/python/infer.py and tools/infer.py."""

import json
import os

import numpy as np
import pytest

from _deploy_helpers import (
    DEMO_CONFIG,
    GRID_COLS,
    GRID_ROWS,
    REPO,
    SIZE_OPTS,
    TILE_H,
    TILE_W,
    demo_grid,
    run_python,
)


def test_windows_of_the_issue_photo():
    """1249 x 1035 at ppdet's defaults (640 x 640, overlap 0.25): starts every 640 - 160 = 480
    px, the last tile flush with the far edge."""
    from ppdet_dac.deploy.slicing import SliceConfig

    windows = SliceConfig().windows(1035, 1249)
    xs, ys = [0, 480, 609], [0, 395]
    assert windows.tolist() == [[x, y, x + 640, y + 640] for y in ys for x in xs]
    # an image smaller than a slice is one tile; one side smaller: tiles along the other only
    assert SliceConfig().windows(300, 200).tolist() == [[0, 0, 200, 300]]
    assert SliceConfig((100, 100), (0.5, 0.0)).windows(50, 250).tolist() == [
        [0, 0, 100, 50],
        [100, 0, 200, 50],
        [150, 0, 250, 50],
    ]


@pytest.mark.parametrize(
    "size,overlap", [((640, 640), (0.25, 0.25)), ((96, 160), (0.2, 0.5)), ((101, 33), (0.0, 0.9))]
)
def test_windows_cover_the_image_with_the_overlap_asked(size, overlap):
    from ppdet_dac.deploy.slicing import SliceConfig

    height, width = 1035, 1249
    config = SliceConfig(size, overlap)
    windows = config.windows(height, width)
    covered = np.zeros((height, width), dtype=np.int64)
    for x1, y1, x2, y2 in windows:
        assert (y2 - y1, x2 - x1) == config.tile_size(height, width)
        assert 0 <= x1 and 0 <= y1 and x2 <= width and y2 <= height
        covered[y1:y2, x1:x2] += 1
    assert covered.min() >= 1
    for axis, (side, ratio) in enumerate(zip(size, overlap)):
        starts = sorted(set(windows[:, 1 - axis]))
        gaps, step = np.diff(starts), side - int(ratio * side)
        assert np.all(gaps[:-1] == step) and 0 < gaps[-1] <= step  # overlap >= the ratio
        assert starts[-1] + side == (height, width)[axis]


def test_bad_slice_options_name_the_option():
    from ppdet_dac.deploy.slicing import SliceConfig

    for kwargs, message in (
        ({"slice_size": (0, 640)}, "slice_size"),
        ({"overlap_ratio": (1.0, 0.2)}, "overlap_ratio"),
        ({"combine_method": "nmm"}, "combine_method"),
        ({"match_metric": "giou"}, "match_metric"),
        ({"match_threshold": 1.5}, "match_threshold"),
    ):
        with pytest.raises(ValueError, match=message):
            SliceConfig(**kwargs)


def _overlap(box, others, metric):
    iw = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    inter = iw * ih
    return inter / (np.minimum(area, areas) if metric == "ios" else area + areas - inter)


@pytest.mark.parametrize("metric", ["ios", "iou"])
def test_merge_is_greedy_classwise_nms(metric):
    """On 300 random boxes of 3 classes: kept boxes of a class overlap each other by at most the
    threshold, every dropped box overlaps a kept, higher-scoring one of its class by more, rows
    are unchanged and sorted by score."""
    from ppdet_dac.deploy.slicing import SliceConfig, merge_detections

    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 200, (300, 2))
    wh = rng.uniform(10, 60, (300, 2))
    dets = np.concatenate(
        [rng.integers(0, 3, (300, 1)), rng.permutation(300)[:, None] / 300.0, xy, xy + wh], axis=1
    ).astype(np.float32)
    threshold = 0.5
    kept = merge_detections(dets, SliceConfig(match_threshold=threshold, match_metric=metric))
    assert 30 < len(kept) < 290
    assert np.all(np.diff(kept[:, 1]) <= 0)
    kept_keys = {tuple(r) for r in kept.tolist()}
    assert kept_keys <= {tuple(r) for r in dets.tolist()}
    for row in kept:
        same = kept[(kept[:, 0] == row[0]) & (kept[:, 1] != row[1])]
        assert not np.any(_overlap(row[2:], same[:, 2:], metric) > threshold + 1e-6)
    for row in dets:
        if tuple(row.tolist()) in kept_keys:
            continue
        better = kept[(kept[:, 0] == row[0]) & (kept[:, 1] > row[1])]
        assert np.any(_overlap(row[2:], better[:, 2:], metric) > threshold - 1e-6), row
    concat = merge_detections(dets, SliceConfig(combine_method="concat"))
    np.testing.assert_array_equal(concat, dets[np.argsort(-dets[:, 1], kind="stable")])


def _scene(height=1035, width=1249, count=120, side=40, seed=0):
    """The issue's photo in miniature: ``count`` small squares of distinct colours (the object
    index in the colour), well apart, on a black image. Returns (RGB image, boxes [K, 4])."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.uint8)
    boxes = []
    while len(boxes) < count:
        x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
        if all(
            x >= bx2 + 4 or x + side + 4 <= bx1 or y >= by2 + 4 or y + side + 4 <= by1
            for bx1, by1, bx2, by2 in boxes
        ):
            boxes.append((x, y, x + side, y + side))
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        image[y1:y2, x1:x2] = (k + 1, 255, 255)
    return image, np.array(boxes, dtype=np.float32)


def _colour_detector(full_boxes):
    """A stand-in model: in each tile, every object whose colour it sees, boxed where it is
    visible, scored (0.2 + 0.7 * k / K) x the visible fraction of the object (a cut object
    scores lower), label k % 3."""
    count = len(full_boxes)
    areas = (full_boxes[:, 2] - full_boxes[:, 0]) * (full_boxes[:, 3] - full_boxes[:, 1])

    def detect(tiles):
        out = []
        for tile in tiles:
            rows = []
            for k in np.unique(tile[:, :, 0][tile[:, :, 1] == 255]) - 1:
                ys, xs = np.nonzero((tile[:, :, 0] == k + 1) & (tile[:, :, 1] == 255))
                score = (0.2 + 0.7 * k / count) * len(ys) / areas[k]
                rows.append([k % 3, score, xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            out.append(np.array(rows, np.float32).reshape(-1, 6))
        return out

    return detect


def test_sliced_stand_in_finds_every_small_object_once():
    """120 objects of 40 px in a 1249 x 1035 image, tiles of 256 px overlapping by 64: merged
    with ios, each object once, with its whole box and its own score; concat keeps the cut
    parts and the duplicates of the overlaps."""
    from ppdet_dac.deploy.slicing import SliceConfig, sliced_detections

    image, boxes = _scene()
    detect = _colour_detector(boxes)
    merged = sliced_detections(image, SliceConfig((256, 256), (0.25, 0.25)), detect, batch_size=4)
    count = len(boxes)
    order = np.argsort(merged[:, 2] * 10000 + merged[:, 3])
    expected = np.concatenate(
        [(np.arange(count) % 3)[:, None], (0.2 + 0.7 * np.arange(count) / count)[:, None], boxes],
        axis=1,
    )
    expected = expected[np.argsort(boxes[:, 0] * 10000 + boxes[:, 1])]
    np.testing.assert_allclose(merged[order], expected, rtol=0, atol=1e-5)
    concat = sliced_detections(image, SliceConfig((256, 256), (0.25, 0.25), "concat"), detect)
    assert len(concat) > count + 20


@pytest.fixture(scope="module")
def grid(exported, tmp_path_factory):
    """The demo grid (_deploy_helpers.demo_grid): (path, cells)."""
    path = str(tmp_path_factory.mktemp("grid") / "grid.png")
    return path, demo_grid(exported.data_dir, path)


def _per_cell(predictor, cells):
    """Each cell predicted on its own (whole-image inference), mapped to grid pixels:
    list of [N, 6] (cell row-major)."""
    out = []
    for i, cell in enumerate(cells):
        dets = predictor.predict([cell])[0].copy()
        x0, y0 = (i % GRID_COLS) * TILE_W, (i // GRID_COLS) * TILE_H
        dets[:, 2:] += np.array([x0, y0, x0, y0], np.float32)
        out.append(dets)
    return out


def _key(rows):
    rows = np.asarray(rows, np.float32).reshape(-1, 6)
    return rows[np.lexsort((rows[:, 2], rows[:, 0], -rows[:, 1]))]


def _assert_merged_from_cells(merged, cells_dets, threshold=0.6):
    """``merged`` (nms, ios) = per-cell detections with their own scores and boxes; a cell's
    detection is missing only when a kept one of its class in the same cell scores higher and
    covers more than ``threshold`` of the smaller box."""
    everything = np.concatenate(cells_dets)
    found = {tuple(r) for r in merged.tolist()}
    assert found <= {tuple(r) for r in everything.tolist()}, "a merged row no cell detected"
    dropped = 0
    for dets in cells_dets:
        kept = np.array([r for r in dets.tolist() if tuple(r) in found], np.float32)
        assert len(kept), "a cell lost all its detections"
        for row in dets:
            if tuple(row.tolist()) in found:
                continue
            dropped += 1
            better = kept[(kept[:, 0] == row[0]) & (kept[:, 1] >= row[1])]
            assert np.any(_overlap(row[2:], better[:, 2:], "ios") > threshold), row
    return dropped


def test_sliced_grid_equals_per_cell_inference(exported, grid):
    """Slicing the grid at the cell size, no overlap: concat gives exactly every cell's own
    detections, mapped to the grid; the default merge (nms, ios 0.6) keeps a subset with the
    cells' own scores and boxes, only dropping what a better box of the same cell covers."""
    from ppdet_dac.deploy.predictor import Predictor
    from ppdet_dac.deploy.slicing import SliceConfig

    path, cells = grid
    whole = Predictor(exported.model_dirs["op"])
    cells_dets = _per_cell(whole, cells)
    concat = Predictor(
        exported.model_dirs["op"], slicing=SliceConfig((TILE_H, TILE_W), (0, 0), "concat")
    )
    np.testing.assert_array_equal(_key(concat.predict([path])[0]), _key(np.concatenate(cells_dets)))
    merged = Predictor(exported.model_dirs["op"], slicing=SliceConfig((TILE_H, TILE_W), (0, 0)))
    result = merged.predict([path])[0]
    assert _assert_merged_from_cells(result, cells_dets) > 0
    assert len(result) > len(whole.predict([path])[0])  # more than the whole grid resized


@pytest.mark.parametrize("tool", ["deploy", "dygraph"])
def test_infer_tools_slice_infer(exported, grid, tmp_path, tool):
    """deploy/python/infer.py and tools/infer.py with --slice_infer (and the thresholds): the
    exported predictor's sliced detections, boxes inside the image."""
    from ppdet_dac.deploy.predictor import Predictor
    from ppdet_dac.deploy.slicing import SliceConfig

    path, cells = grid
    flags = [
        "--slice_infer",
        "--slice_size",
        str(TILE_H),
        str(TILE_W),
        "--overlap_ratio",
        "0",
        "0",
        "--nms_threshold",
        "0.2",
        "--score_threshold",
        "0.02",
    ]
    if tool == "deploy":
        run_python(
            [
                os.path.join("deploy", "python", "infer.py"),
                "--model_dir",
                exported.model_dirs["op"],
                "--image_file",
                path,
                "--output_dir",
                str(tmp_path),
                "--batch_size",
                "2",
            ]
            + flags
        )
        model_dir, combine = exported.model_dirs["op"], "nms"
    else:  # concat: dygraph and exported scores differ in the last bits, NMS ties could flip
        run_python(
            [
                os.path.join("tools", "infer.py"),
                "-c",
                DEMO_CONFIG,
                "-o",
                f"weights={exported.weights}",
                f"TestDataset.dataset_dir={exported.data_dir}",
                *SIZE_OPTS,
                "--infer_img",
                path,
                "--output_dir",
                str(tmp_path),
                "--draw_threshold",
                "0.0",
                "--combine_method",
                "concat",
            ]
            + flags
        )
        model_dir, combine = exported.model_dirs["reference"], "concat"
    with open(tmp_path / "detections.json") as f:
        ((_, records),) = json.load(f).items()
    got = np.array([[r["class_id"], r["score"]] + r["bbox"] for r in records], np.float32)
    slicing = SliceConfig((TILE_H, TILE_W), (0, 0), combine)
    expected = Predictor(
        model_dir, nms_threshold=0.2, score_threshold=0.02, slicing=slicing
    ).predict([path])[0]
    default_nms = Predictor(model_dir, score_threshold=0.02, slicing=slicing).predict([path])[0]
    assert default_nms.shape != expected.shape or not np.array_equal(default_nms, expected)
    assert len(got) == len(expected) > 0 and got[:, 1].min() >= 0.02
    np.testing.assert_allclose(_key(got), _key(expected), rtol=0, atol=1e-4)
    height, width = GRID_ROWS * TILE_H, GRID_COLS * TILE_W
    assert (
        got[:, 2:].min() >= 0 and got[:, [2, 4]].max() <= width and got[:, [3, 5]].max() <= height
    )
    assert (tmp_path / "grid.png.png").is_file()


@pytest.mark.parametrize("script", ["deploy/python/infer.py", "deploy/serving/server.py"])
def test_slice_and_threshold_flags(script):
    """ppdet's flag names reach the predictor options; bad values stop the parser; the
    service's --threshold is --score_threshold's older name."""
    import importlib.util

    from ppdet_dac.deploy.slicing import SliceConfig

    spec = importlib.util.spec_from_file_location(
        "slice_flags_" + os.path.basename(os.path.dirname(script)), os.path.join(REPO, script)
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    base = ["--model_dir", "m"] + (["--image_file", "x.jpg"] if "infer" in script else [])
    args = module.parse_args(
        base
        + [
            "--slice_infer",
            "--slice_size",
            "320",
            "480",
            "--overlap_ratio",
            "0.1",
            "0.2",
            "--combine_method",
            "concat",
            "--match_metric",
            "iou",
            "--match_threshold",
            "0.4",
            "--nms_threshold",
            "0.5",
            "--score_threshold",
            "0.3",
        ]
    )
    assert args.detection == {
        "nms_threshold": 0.5,
        "score_threshold": 0.3,
        "slicing": SliceConfig((320, 480), (0.1, 0.2), "concat", 0.4, "iou"),
    }
    assert module.parse_args(base).detection == {
        "nms_threshold": None,
        "score_threshold": 0.0,
        "slicing": None,
    }
    if "server" in script:
        assert (
            module.parse_args(base + ["--threshold", "0.25"]).detection["score_threshold"] == 0.25
        )
    for bad in (
        ["--slice_infer", "--slice_size", "0", "640"],
        ["--slice_infer", "--overlap_ratio", "1", "0"],
        ["--nms_threshold", "2"],
        ["--score_threshold", "-1"],
        ["--combine_method", "nmm"],
    ):
        with pytest.raises(SystemExit):
            module.parse_args(base + bad)


def test_an_image_in_one_tile_gives_exactly_the_unsliced_detections(exported, grid):
    """The grid (480 x 640) and one of its cells under the default 640 x 640 slice are one tile
    each: the sliced detections are the unsliced ones, row for row (no merge NMS). The control:
    the merge would have dropped some of them."""
    from ppdet_dac.deploy.predictor import Predictor
    from ppdet_dac.deploy.slicing import SliceConfig, merge_detections

    path, cells = grid
    whole = Predictor(exported.model_dirs["op"])
    sliced = Predictor(exported.model_dirs["op"], slicing=SliceConfig())
    assert len(SliceConfig().windows(GRID_ROWS * TILE_H, GRID_COLS * TILE_W)) == 1
    for image in (path, cells[0]):
        expected = whole.predict([image])[0]
        np.testing.assert_array_equal(sliced.predict([image])[0], expected)
    assert len(merge_detections(expected, SliceConfig())) < len(expected)


def _hinted(caplog):
    return [r.getMessage() for r in caplog.records if "--slice_infer" in r.getMessage()]


def test_big_image_hint_rule_and_once_per_run(slicing_log):
    """Rule: the model's resize shrinks the image to less than half (scale < 0.5). At the
    COCO recipe's input (short side 800, long side <= 1333) the issue's 2,472 x 2,299 photo is
    read at min(800 / 2299, 1333 / 2472) = 0.348; 1600 x 1600 at exactly 0.5 gets no hint."""
    from ppdet_dac.deploy.preprocess import Preprocessor
    from ppdet_dac.deploy.slicing import BigImageHint

    steps = [
        {"type": "Resize", "target_size": [800, 1333], "keep_ratio": True},
        {"type": "Permute"},
    ]
    preprocessor = Preprocessor(steps)
    assert preprocessor.resize_scale(2299, 2472) == pytest.approx(800 / 2299)
    hint = BigImageHint(preprocessor)
    assert hint.check(1600, 1600, "square.png") is None  # 0.5: not less than half
    assert hint.check(1200, 900, "small.png") is None
    line = hint.check(2299, 2472, "aerial.tif")
    assert line == (
        "aerial.tif is 2472 x 2299 pixels and the model reads it resized by 0.35, so its small "
        "objects shrink with it: --slice_infer --slice_size 800 800 runs it in tiles at the "
        "model's scale (this hint: once per run)"
    )
    assert hint.check(4000, 4000, "next.tif") is None  # once per run
    assert _hinted(slicing_log) == [line]


def test_predictor_hints_at_slicing_for_a_large_image_only(exported, grid, slicing_log):
    """The exported model reads 192 (<= 256): a 240 x 320 cell is read at 0.8 (no hint), the
    cell tiled 3 x 3 (720 x 960) at 0.27: one hint naming it, none when slicing is on."""
    from ppdet_dac.deploy.predictor import Predictor
    from ppdet_dac.deploy.slicing import SliceConfig

    _, cells = grid
    big = np.tile(cells[0], (3, 3, 1))
    Predictor(exported.model_dirs["op"]).predict([cells[0]])
    assert _hinted(slicing_log) == []
    Predictor(exported.model_dirs["op"], slicing=SliceConfig()).predict([big])
    assert _hinted(slicing_log) == []
    whole = Predictor(exported.model_dirs["op"])
    whole.predict([cells[0], big, big])
    assert _hinted(slicing_log) == [
        "the image array of shape [720, 960, 3] is 960 x 720 pixels and the model reads it "
        "resized by 0.27, so its small objects shrink with it: --slice_infer --slice_size 192 "
        "192 runs it in tiles at the model's scale (this hint: once per run)"
    ]
