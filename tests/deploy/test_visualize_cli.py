"""deploy/python/infer.py and tools/infer.py as CLIs: JSON results (boxes clipped to the image)
and PNGs with the boxes drawn where the detections are; the dygraph tool agrees with the
exported model; a folder with bad files is processed to its end, each bad file reported, exit
status 1; an output folder holding the inputs is refused, x.jpg and x.png get drawings of their
own and files of other formats are named in the summary."""

import json
import os

import cv2
import numpy as np
import pytest

from _deploy_helpers import DEMO_CONFIG, SIZE_OPTS, run_python

NUM_DRAWN = 3


def _changed_pixels_lie_on_boxes(original, drawn, rows, label_names, threshold):
    """Every changed pixel is on a box edge (inside the image) or in its label's rectangle."""
    from ppdet_dac.deploy.visualize import label_boxes

    allowed = np.zeros(original.shape[:2], dtype=bool)
    for _, _, (x1, y1, x2, y2), (rx1, ry1, rx2, ry2) in label_boxes(
        original.shape, rows, label_names, threshold
    ):
        ring = np.zeros_like(allowed)
        cv2.rectangle(ring.view(np.uint8), (x1, y1), (x2, y2), 1, 6)
        allowed |= ring
        allowed[ry1:ry2, rx1:rx2] = True
    changed = np.any(original != drawn, axis=2)
    assert changed.any()
    stray = np.argwhere(changed & ~allowed)
    assert len(stray) == 0, f"pixels changed away from every drawn box, e.g. (y, x) {stray[:5]}"


def assert_clipped(rows, raw, height, width):
    """``rows`` ([N, 6] deployment detections) are the graph's ``raw`` rows with the boxes
    clipped to the height x width image, and some raw box did cross the image's border."""
    raw = np.asarray(raw, np.float32).reshape(-1, 6)
    outside = (raw[:, 2] < 0) | (raw[:, 3] < 0) | (raw[:, 4] > width) | (raw[:, 5] > height)
    assert outside.any(), "no raw box crosses the border: the clipping check would be empty"
    expected = raw.copy()
    expected[:, [2, 4]] = np.clip(expected[:, [2, 4]], 0, width)
    expected[:, [3, 5]] = np.clip(expected[:, [3, 5]], 0, height)
    order = np.lexsort((raw[:, 0], -raw[:, 1]))
    rows = np.asarray(rows, np.float32).reshape(-1, 6)
    np.testing.assert_allclose(
        rows[np.lexsort((rows[:, 0], -rows[:, 1]))], expected[order], rtol=0, atol=1e-4
    )


def test_deploy_infer_draws_boxes_at_detections(exported, tmp_path):
    """deploy/python/infer.py's JSON: the graph's detections with boxes clipped to the image;
    its PNG: exactly those above the threshold drawn, labels in their layout rectangles."""
    from ppdet_dac.deploy.predictor import Predictor
    from ppdet_dac.deploy.visualize import draw_detections

    image = exported.images[0]
    predictor = Predictor(exported.model_dirs["op"])
    raw = predictor.run_model(predictor.preprocessor.batch([image]))["bbox"]
    dets = predictor.predict([image])[0]
    threshold = float(np.sort(dets[:, 1])[::-1][NUM_DRAWN - 1])
    out_dir = tmp_path / "out"
    stdout = run_python(
        [
            os.path.join("deploy", "python", "infer.py"),
            "--model_dir",
            exported.model_dirs["op"],
            "--image_file",
            image,
            "--output_dir",
            str(out_dir),
            "--threshold",
            repr(threshold),
        ]
    )
    assert f"{image}: " in stdout
    png = out_dir / (os.path.basename(image) + ".png")
    assert png.is_file()
    drawn, original = cv2.imread(str(png)), cv2.imread(image)
    with open(out_dir / "detections.json") as f:
        records = json.load(f)[image]
    assert len(records) == len(dets)
    rows = np.array([[r["class_id"], r["score"]] + r["bbox"] for r in records], dtype=np.float32)
    h, w = original.shape[:2]
    assert_clipped(rows, raw, h, w)
    shown = rows[rows[:, 1] >= threshold]
    assert len(shown) >= NUM_DRAWN
    expected, count = draw_detections(original, shown, predictor.label_list, threshold)
    assert count == len(shown)
    # exactly the drawing of the detections above the threshold...
    np.testing.assert_array_equal(drawn, expected)
    # ...which changes pixels only along those boxes and in their labels, and on every box edge
    _changed_pixels_lie_on_boxes(original, drawn, shown, predictor.label_list, threshold)
    for x1, y1, x2, y2 in np.round(shown[:, 2:]).astype(int):
        for x, y in (((x1, (y1 + y2) // 2)), (x2, (y1 + y2) // 2), ((x1 + x2) // 2, y2)):
            x, y = min(x, w - 1), min(y, h - 1)  # an edge on the border is drawn inside
            assert np.any(drawn[y, x] != original[y, x]), (x, y)


def test_dygraph_tool_agrees_with_exported_model(exported, tmp_path):
    """tools/infer.py (dygraph, ppdet's reader) gives the exported model's detections."""
    from ppdet_dac.deploy.postprocess import detection_records
    from ppdet_dac.deploy.predictor import Predictor

    image = exported.images[1]
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
            image,
            "--output_dir",
            str(tmp_path),
            "--draw_threshold",
            "0.0",
        ]
    )
    with open(tmp_path / "detections.json") as f:
        ((path, dy),) = json.load(f).items()
    assert os.path.abspath(path) == os.path.abspath(image)
    predictor = Predictor(exported.model_dirs["reference"])
    pi = detection_records(predictor.predict([image])[0], predictor.label_list)
    assert len(dy) == len(pi) > 0 and [r["class_id"] for r in dy] == [r["class_id"] for r in pi]
    height, width = cv2.imread(image).shape[:2]
    raw = predictor.run_model(predictor.preprocessor.batch([image]))["bbox"]
    assert_clipped([[r["class_id"], r["score"]] + r["bbox"] for r in dy], raw, height, width)
    np.testing.assert_allclose(
        [[r["score"]] + r["bbox"] for r in dy],
        [[r["score"]] + r["bbox"] for r in pi],
        rtol=0,
        atol=1e-4,
    )


def _folder_with_bad_files(exported, folder):
    """Two good images after three bad ones (sorted order): junk bytes, a 9000 x 5000 PNG (45 Mpx,
    over the default 40 Mpx limit) and a 4000 x 1 strip. Returns {bad name: expected reason}."""
    import shutil
    from _deploy_helpers import encoded_image, png_bomb

    os.makedirs(folder)
    (folder / "a_junk.jpg").write_bytes(b"\xff\xd8 this is no JPEG")
    (folder / "b_bomb.png").write_bytes(png_bomb(9000, 5000))
    (folder / "c_strip.png").write_bytes(encoded_image(1, 4000))
    for path in exported.images:
        shutil.copy(path, folder / ("d_" + os.path.basename(path)))
    return {
        "a_junk.jpg": "not a readable JPEG/PNG/BMP/TIFF image",
        "b_bomb.png": "9000 x 5000 = 45000000 pixels, over the limit of 40000000",
        "c_strip.png": "4000 x 1 pixels (width x height, aspect ratio 4000:1)",
    }


def _check_reported(out_dir, folder, bad, stdout, good_detections):
    with open(out_dir / "summary.json") as f:
        summary = json.load(f)
    failed = {os.path.basename(item["file"]): item["error"] for item in summary["failed"]}
    assert summary["images"] == 5 and summary["succeeded"] == 2 and set(failed) == set(bad)
    for name, reason in bad.items():
        assert reason in failed[name] and name in failed[name], failed[name]
        assert f"{name}: " in stdout
    with open(out_dir / "detections.json") as f:
        results = {os.path.basename(p): records for p, records in json.load(f).items()}
    assert set(results) == set(good_detections)
    for name, expected in good_detections.items():
        got = results[name]
        assert (out_dir / (name + ".png")).is_file()
        assert len(got) == len(expected) > 0
        assert [r["class_id"] for r in got] == [r["class_id"] for r in expected]
        np.testing.assert_allclose(
            [[r["score"]] + r["bbox"] for r in got],
            [[r["score"]] + r["bbox"] for r in expected],
            rtol=0,
            atol=1e-4,
        )


def test_deploy_infer_folder_skips_bad_files_and_fails_at_the_end(exported, tmp_path):
    from _deploy_helpers import run_process
    from ppdet_dac.deploy.postprocess import detection_records
    from ppdet_dac.deploy.predictor import Predictor

    folder = tmp_path / "images"
    bad = _folder_with_bad_files(exported, folder)
    predictor = Predictor(exported.model_dirs["op"])
    # with --batch_size 2 the two good images (after the bad ones are dropped) are one batch
    good = {
        "d_" + os.path.basename(p): detection_records(dets, predictor.label_list)
        for p, dets in zip(exported.images, predictor.predict(exported.images))
    }
    out_dir = tmp_path / "out"
    proc = run_process(
        [
            os.path.join("deploy", "python", "infer.py"),
            "--model_dir",
            exported.model_dirs["op"],
            "--image_dir",
            str(folder),
            "--output_dir",
            str(out_dir),
            "--batch_size",
            "2",
        ],
        returncode=1,
    )
    assert "3 file(s) skipped" in proc.stdout
    _check_reported(out_dir, folder, bad, proc.stdout, good)
    for name in bad:  # one log line per skipped file, no traceback
        assert (
            sum(
                f"skipping {folder / name}:" in line
                for line in proc.stdout.splitlines() + proc.stderr.splitlines()
            )
            == 1
        )
    assert "Traceback" not in proc.stderr


def test_dygraph_infer_folder_skips_bad_files_and_fails_at_the_end(exported, tmp_path):
    from _deploy_helpers import run_process
    from ppdet_dac.deploy.postprocess import detection_records
    from ppdet_dac.deploy.predictor import Predictor

    folder = tmp_path / "images"
    bad = _folder_with_bad_files(exported, folder)
    predictor = Predictor(exported.model_dirs["reference"])
    good = {
        "d_" + os.path.basename(p): detection_records(
            predictor.predict([p])[0], predictor.label_list
        )
        for p in exported.images
    }
    out_dir = tmp_path / "out"
    proc = run_process(_tool_args("dygraph", exported, folder, out_dir), returncode=1)
    assert "3 file(s) skipped" in proc.stdout
    _check_reported(out_dir, folder, bad, proc.stdout, good)


def _same_stem_folder(exported, folder):
    """x.jpg and x.png (the two exported test images, different pictures), scan.tif (x.png's
    pixels as a TIFF) and an animated GIF and a WebP the tools do not read. Returns {file name:
    bytes}."""
    os.makedirs(folder)
    first, second = (cv2.imread(p) for p in exported.images)
    cv2.imwrite(str(folder / "x.jpg"), first)
    cv2.imwrite(str(folder / "x.png"), second)
    cv2.imwrite(str(folder / "scan.tif"), second)
    for name in ("anim.gif", "photo.webp"):
        (folder / name).write_bytes(b"GIF89a not read")
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _tool_args(tool, exported, folder, out_dir):
    if tool == "deploy":
        return [
            os.path.join("deploy", "python", "infer.py"),
            "--model_dir",
            exported.model_dirs["reference"],
            "--image_dir",
            str(folder),
            "--output_dir",
            str(out_dir),
            "--threshold",
            "0.0",
        ]
    return [
        os.path.join("tools", "infer.py"),
        "-c",
        DEMO_CONFIG,
        "-o",
        f"weights={exported.weights}",
        f"TestDataset.dataset_dir={exported.data_dir}",
        *SIZE_OPTS,
        "--infer_dir",
        str(folder),
        "--output_dir",
        str(out_dir),
        "--draw_threshold",
        "0.0",
    ]


@pytest.mark.parametrize("tool", ["deploy", "dygraph"])
def test_output_folder_holding_the_inputs_is_refused(exported, tmp_path, tool):
    """--output_dir = the image folder: one error naming it, exit 2, the inputs untouched."""
    from _deploy_helpers import run_process

    folder = tmp_path / "images"
    before = _same_stem_folder(exported, folder)
    proc = run_process(_tool_args(tool, exported, folder, folder), returncode=2)
    assert (
        f"--output_dir {folder} holds the input images (scan.tif, x.jpg, x.png)"
        in proc.stderr + proc.stdout
    )
    assert "Traceback" not in proc.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


@pytest.mark.parametrize("tool", ["deploy", "dygraph"])
def test_same_stem_images_get_their_own_drawings_and_other_formats_are_named(
    exported, tmp_path, tool
):
    """x.jpg and x.png: two drawings (x.jpg.png, x.png.png), each of its own image; the TIFF
    is read like the PNG of the same pixels (the same detections); the GIF and WebP are named in
    summary.json and the closing lines; exit status 0."""
    from _deploy_helpers import run_process

    folder, out_dir = tmp_path / "images", tmp_path / "out"
    _same_stem_folder(exported, folder)
    proc = run_process(_tool_args(tool, exported, folder, out_dir), returncode=0)
    for name in ("x.jpg", "x.png", "scan.tif"):
        drawn, original = cv2.imread(str(out_dir / (name + ".png"))), cv2.imread(str(folder / name))
        assert drawn.shape == original.shape  # the two images differ in size
    with open(out_dir / "detections.json") as f:
        detections = {os.path.basename(p): dets for p, dets in json.load(f).items()}
    assert sorted(detections) == ["scan.tif", "x.jpg", "x.png"]
    assert detections["scan.tif"] == detections["x.png"] and detections["x.png"]
    with open(out_dir / "summary.json") as f:
        summary = json.load(f)
    names = ["anim.gif", "photo.webp"]
    assert [os.path.basename(p) for p in summary["unsupported"]] == names
    assert summary["images"] == summary["succeeded"] == 3
    assert "2 file(s) not read, unsupported format" in proc.stdout
    for name in names:
        assert f"  {folder / name}\n" in proc.stdout
