"""Bad training data, run through tools/train.py as a user would: every case either trains with
the bad items skipped (one warning each, a summary naming the annotation file and the ids, no
traceback) or stops within seconds with one error naming the file or folder, never a hang.

(Evaluation with an undecodable image stops naming it: tests/engine/test_loader_errors.py.)
"""

import json
import os
import shutil
import subprocess

import pytest

from _engine_helpers import PYTHON, REPO, child_env, make_tiny_setup

# A run here takes ~5-20 s on 2 cores (start, model, 2 steps); a hang fails the test at this
# limit (a hang guard, well over 10x a run, so a busy machine does not fail it).
TIMEOUT_S = 300
GARBAGE = b"garbage"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny setup: 4 train images (ids 1-4, 1 without boxes), 6 boxes, category ids 1/3/5."""
    root = tmp_path_factory.mktemp("bad_data")
    config = make_tiny_setup(str(root), epoch=1, num_train=4, num_val=2)
    data = root / "data"
    with open(data / "annotations" / "instances_train.json") as f:
        anno = json.load(f)
    return config, data, anno


def _write(data, name, content):
    path = data / "annotations" / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def _train(config, tmp_path, *overrides):
    return subprocess.run(
        [
            PYTHON,
            os.path.join(REPO, "tools", "train.py"),
            "-c",
            config,
            "-o",
            f"save_dir={tmp_path / 'out'}",
            *overrides,
        ],
        cwd=str(tmp_path),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


@pytest.mark.slow
def test_skipped_items_are_named_and_training_finishes(tiny, tmp_path):
    """A missing image file, a box outside its image, NaN / inf / string / boolean / null
    coordinates and an undecodable image: one epoch trains on what is left."""
    config, data, anno = tiny
    anno = json.loads(json.dumps(anno))
    anno["images"].append({"id": 5, "file_name": "gone.jpg", "width": 100, "height": 100})
    bad_boxes = [
        [500, 10, 20, 20],  # 100: no area inside the image
        [float("nan"), 10, 20, 20],
        [10, "a", 20, 20],
        [10, 10, float("inf"), 20],
        [True, 10, 20, 20],
        [None, 10, 20, 20],
    ]  # 101-105: not 4 finite numbers
    anno["annotations"] += [
        {"id": 100 + k, "image_id": 2, "category_id": 3, "bbox": box, "area": 400.0, "iscrowd": 0}
        for k, box in enumerate(bad_boxes)
    ]
    anno["annotations"].append(
        {
            "id": 106,
            "image_id": 5,
            "category_id": 1,
            "bbox": [1, 1, 20, 20],
            "area": 400.0,
            "iscrowd": 0,
        }
    )
    anno_file = _write(data, "skips.json", anno)
    assert "NaN" in open(anno_file).read() and "Infinity" in open(anno_file).read()
    images = data / "train_skips"
    shutil.copytree(data / "train", images)
    (images / "000003.jpg").write_bytes(GARBAGE)

    proc = _train(
        config,
        tmp_path,
        "TrainDataset.anno_path=annotations/skips.json",
        "TrainDataset.image_dir=train_skips",
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{anno_file}: skipped 1 of 5 images (file missing or empty; image ids 5)" in log
    assert (
        f"{anno_file}: skipped 5 malformed boxes (bbox not 4 finite numbers; annotation ids "
        "101, 102, 103, 104, 105)"
    ) in log
    assert (
        f"{anno_file}: skipped 1 degenerate boxes (no area inside the image; annotation ids 100)"
    ) in log
    assert (
        f"skipping undecodable image: cannot decode image file {images / '000003.jpg'} "
        f"({len(GARBAGE)} bytes)"
    ) in log
    assert "Traceback" not in log and "fail to map" not in log
    assert (tmp_path / "out" / "tiny" / "model_final.pdparams").is_file()


def _stop_cases(data, anno):
    """name -> (overrides, expected last line of stderr, or its start when it ends with '...')."""
    unknown = json.loads(json.dumps(anno))
    unknown["annotations"].append(
        {
            "id": 77,
            "image_id": 2,
            "category_id": 99,
            "bbox": [1, 1, 20, 20],
            "area": 400.0,
            "iscrowd": 0,
        }
    )
    empty = dict(anno, annotations=[])
    unknown_file = _write(data, "unknown.json", unknown)
    broken_file = _write(data, "broken.json", '{"images": [{"id": 1, ')
    empty_file = _write(data, "empty.json", empty)
    corrupt = data / "train_corrupt"
    if not corrupt.exists():
        shutil.copytree(data / "train", corrupt)
        for path in corrupt.iterdir():
            path.write_bytes(GARBAGE)
    train_anno = data / "annotations" / "instances_train.json"
    return {
        "unknown_category": (
            ["TrainDataset.anno_path=annotations/unknown.json"],
            f"train.py: error: {unknown_file}: annotation id 77 (image id 2) has category_id 99, "
            "which is not in 'categories' (known ids: [1, 3, 5])",
        ),
        "malformed_json": (
            ["TrainDataset.anno_path=annotations/broken.json"],
            f"train.py: error: {broken_file} is not valid JSON: ...",
        ),
        "empty_annotation_list": (
            ["TrainDataset.anno_path=annotations/empty.json"],
            f"train.py: error: {empty_file}: no image has a usable box, nothing to train on (of the 4 "
            f"images listed: 0 missing or empty under {data / 'train'}, 0 with a bad "
            "width/height, 4 without a usable box; 0 annotations, 0 malformed and 0 degenerate "
            "boxes skipped)",
        ),
        "missing_annotation_file": (
            ["TrainDataset.anno_path=annotations/nope.json"],
            f"train.py: error: annotation file not found: {data / 'annotations' / 'nope.json'} ...",
        ),
        "all_images_undecodable": (
            ["TrainDataset.image_dir=train_corrupt"],
            f"train.py: error: {corrupt}: none of the 4 images "
            f"listed in {train_anno} can be decoded; undecodable files include ...",
        ),
        # 2 loader processes, each stopping at 2 failures in a row
        "undecodable_in_a_row_workers": (
            [
                "TrainDataset.image_dir=train_corrupt",
                "worker_num=2",
                "TrainDataset.max_consecutive_decode_errors=2",
            ],
            f"train.py: error: {corrupt}: 2 images in a row "
            "cannot be decoded (max_consecutive_decode_errors: 2), so training stops instead "
            "of searching the rest for a readable one; undecodable files include ...",
        ),
    }


STOP_CASES = [
    "unknown_category",
    "malformed_json",
    "empty_annotation_list",
    "missing_annotation_file",
    "all_images_undecodable",
    "undecodable_in_a_row_workers",
]


@pytest.mark.slow
@pytest.mark.parametrize("case", STOP_CASES)
def test_bad_data_stops_with_one_message_naming_the_file(tiny, tmp_path, case):
    config, data, anno = tiny
    overrides, expected = _stop_cases(data, anno)[case]
    proc = _train(config, tmp_path, *overrides)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    if expected.endswith("..."):
        assert last.startswith(expected[:-3].rstrip()), last
    else:
        assert last == expected
    assert not (tmp_path / "out" / "tiny" / "model_final.pdparams").exists()
