"""deploy/python/infer.py and tools/infer.py as CLIs: JSON results and PNGs with the boxes drawn
where the detections are; the dygraph tool agrees with the exported model; a folder with bad
files is processed to its end, each bad file reported, exit status 1."""
import json
import os

import cv2
import numpy as np

from _deploy_helpers import DEMO_CONFIG, run_python

NUM_DRAWN = 3


def _changed_pixels_lie_on_boxes(original, drawn, boxes):
    """Every changed pixel is near a box edge or in the label strip above a box."""
    allowed = np.zeros(original.shape[:2], dtype=bool)
    h, w = allowed.shape
    for x1, y1, x2, y2 in np.round(boxes).astype(int):
        ring = np.zeros_like(allowed)
        cv2.rectangle(ring.view(np.uint8), (x1, y1), (x2, y2), 1, 6)
        allowed |= ring
        # the label strip sits above the box, or at the top of the image when there is no room
        allowed[max(y1 - 24, 0):max(y1, 0) + 20, max(x1 - 3, 0):max(x1 + 160, 0)] = True
    changed = np.any(original != drawn, axis=2)
    assert changed.any()
    stray = np.argwhere(changed & ~allowed)
    assert len(stray) == 0, f"pixels changed away from every drawn box, e.g. (y, x) {stray[:5]}"


def test_deploy_infer_draws_boxes_at_detections(exported, tmp_path):
    from ppdet_dac.engine.predictor import Predictor
    from ppdet_dac.engine.visualize import draw_detections

    image = exported.images[0]
    predictor = Predictor(exported.model_dirs["op"])
    dets = predictor.predict([image])[0]
    threshold = float(np.sort(dets[:, 1])[::-1][NUM_DRAWN - 1])
    out_dir = tmp_path / "out"
    stdout = run_python([os.path.join("deploy", "python", "infer.py"),
                         "--model_dir", exported.model_dirs["op"], "--image_file", image,
                         "--output_dir", str(out_dir), "--threshold", repr(threshold)])
    assert f"{image}: " in stdout
    png = out_dir / (os.path.splitext(os.path.basename(image))[0] + ".png")
    assert png.is_file()
    drawn, original = cv2.imread(str(png)), cv2.imread(image)
    with open(out_dir / "detections.json") as f:
        records = json.load(f)[image]
    assert len(records) == len(dets)
    rows = np.array([[r["class_id"], r["score"]] + r["bbox"] for r in records], dtype=np.float32)
    shown = rows[rows[:, 1] >= threshold]
    assert len(shown) >= NUM_DRAWN
    expected, count = draw_detections(original, shown, predictor.label_list, threshold)
    assert count == len(shown)
    # exactly the drawing of the detections above the threshold...
    np.testing.assert_array_equal(drawn, expected)
    # ...which changes pixels only along those boxes, and on every box edge inside the image
    _changed_pixels_lie_on_boxes(original, drawn, shown[:, 2:])
    h, w = original.shape[:2]
    for x1, y1, x2, y2 in np.round(shown[:, 2:]).astype(int):
        for x, y in (((x1, (y1 + y2) // 2)), (x2, (y1 + y2) // 2), ((x1 + x2) // 2, y2)):
            if 0 <= x < w and 0 <= y < h:
                assert np.any(drawn[y, x] != original[y, x]), (x, y)


def test_dygraph_tool_agrees_with_exported_model(exported, tmp_path):
    """tools/infer.py (dygraph, ppdet's reader) gives the exported model's detections."""
    from ppdet_dac.engine.predictor import Predictor, detection_records

    image = exported.images[1]
    run_python([os.path.join("tools", "infer.py"), "-c", DEMO_CONFIG,
                "-o", f"weights={exported.weights}", f"TestDataset.dataset_dir={exported.data_dir}",
                "--infer_img", image, "--output_dir", str(tmp_path), "--draw_threshold", "0.0"])
    with open(tmp_path / "detections.json") as f:
        (path, dy), = json.load(f).items()
    assert os.path.abspath(path) == os.path.abspath(image)
    predictor = Predictor(exported.model_dirs["reference"])
    pi = detection_records(predictor.predict([image])[0], predictor.label_list)
    assert len(dy) == len(pi) > 0 and [r["class_id"] for r in dy] == [r["class_id"] for r in pi]
    np.testing.assert_allclose([[r["score"]] + r["bbox"] for r in dy],
                               [[r["score"]] + r["bbox"] for r in pi], rtol=0, atol=1e-4)


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
    return {"a_junk.jpg": "not a readable JPEG/PNG/BMP image",
            "b_bomb.png": "9000 x 5000 = 45000000 pixels, over the limit of 40000000",
            "c_strip.png": "4000 x 1 pixels (width x height, aspect ratio 4000:1)"}


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
        assert (out_dir / (os.path.splitext(name)[0] + ".png")).is_file()
        assert len(got) == len(expected) > 0
        assert [r["class_id"] for r in got] == [r["class_id"] for r in expected]
        np.testing.assert_allclose([[r["score"]] + r["bbox"] for r in got],
                                   [[r["score"]] + r["bbox"] for r in expected], rtol=0,
                                   atol=1e-4)


def test_deploy_infer_folder_skips_bad_files_and_fails_at_the_end(exported, tmp_path):
    from _deploy_helpers import run_process
    from ppdet_dac.engine.predictor import Predictor, detection_records

    folder = tmp_path / "images"
    bad = _folder_with_bad_files(exported, folder)
    predictor = Predictor(exported.model_dirs["op"])
    # with --batch_size 2 the two good images (after the bad ones are dropped) are one batch
    good = {"d_" + os.path.basename(p): detection_records(dets, predictor.label_list)
            for p, dets in zip(exported.images, predictor.predict(exported.images))}
    out_dir = tmp_path / "out"
    proc = run_process([os.path.join("deploy", "python", "infer.py"),
                        "--model_dir", exported.model_dirs["op"], "--image_dir", str(folder),
                        "--output_dir", str(out_dir), "--batch_size", "2"], returncode=1)
    assert "3 file(s) skipped" in proc.stdout
    _check_reported(out_dir, folder, bad, proc.stdout, good)
    for name in bad:   # one log line per skipped file, no traceback
        assert sum(f"skipping {folder / name}:" in line
                   for line in proc.stdout.splitlines() + proc.stderr.splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_dygraph_infer_folder_skips_bad_files_and_fails_at_the_end(exported, tmp_path):
    from _deploy_helpers import run_process
    from ppdet_dac.engine.predictor import Predictor, detection_records

    folder = tmp_path / "images"
    bad = _folder_with_bad_files(exported, folder)
    predictor = Predictor(exported.model_dirs["reference"])
    good = {"d_" + os.path.basename(p): detection_records(predictor.predict([p])[0],
                                                          predictor.label_list)
            for p in exported.images}
    out_dir = tmp_path / "out"
    proc = run_process([os.path.join("tools", "infer.py"), "-c", DEMO_CONFIG,
                        "-o", f"weights={exported.weights}",
                        f"TestDataset.dataset_dir={exported.data_dir}",
                        "--infer_dir", str(folder), "--output_dir", str(out_dir),
                        "--draw_threshold", "0.0"], returncode=1)
    assert "3 file(s) skipped" in proc.stdout
    _check_reported(out_dir, folder, bad, proc.stdout, good)
