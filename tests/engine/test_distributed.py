"""Two CPU processes (gloo) train the tiny model with paddle.distributed.launch.

Rank 0 reads images with boxes only; rank 1's last batch has no box at all. Each rank builds its
denoising groups from its own images (as the official code), so the ranks run different numbers
of queries; neither may hang, the #GT normaliser and the logged losses are averaged over the
ranks, and DataParallel must keep the parameters identical.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from _engine_helpers import PYTHON, REPO, child_env, load_params, make_tiny_setup

sys.path.insert(0, os.path.join(REPO, "tests", "data"))
from _data_helpers import write_coco  # noqa: E402

pytestmark = pytest.mark.slow

# With batch 1, no shuffle and 2 ranks, rank r reads images r, r + 2, r + 4 (the dataset keeps
# the images with boxes first, the empty one last).
HAS_BOXES = [True, True, True, True, True, False]


def _mixed_dataset(root):
    images, annotations = [], []
    for i, has_boxes in enumerate(HAS_BOXES):
        images.append({"id": i + 1, "width": 112, "height": 96})
        if has_boxes:
            annotations += [
                {
                    "image_id": i + 1,
                    "category_id": 1 + 2 * (k % 3),
                    "bbox": [10 + 30 * k, 12, 24, 28 + 8 * k],
                }
                for k in range(i % 3 + 1)
            ]
    for split in ("train", "val"):
        write_coco(
            root,
            images,
            annotations,
            [(1, "circle"), (3, "square"), (5, "triangle")],
            image_dir=split,
            anno_name=f"instances_{split}.json",
        )


def test_two_ranks_with_own_denoising_groups_and_an_empty_batch(tmp_path):
    config = make_tiny_setup(str(tmp_path), epoch=1)
    data = str(tmp_path / "mixed")
    _mixed_dataset(data)
    out = tmp_path / "ranks"
    out.mkdir()
    cmd = [
        PYTHON,
        "-m",
        "paddle.distributed.launch",
        "--nproc_per_node",
        "2",
        "--log_dir",
        str(tmp_path / "log"),
        os.path.join(REPO, "tests", "engine", "_dist_probe.py"),
        str(out),
        "-c",
        config,
        "-o",
        f"TrainDataset.dataset_dir={data}",
        f"EvalDataset.dataset_dir={data}",
        "TrainReader.batch_size=1",
        "TrainReader.shuffle=false",
        f"save_dir={tmp_path / 'out'}",
        "log_iter=2",  # steps 0 and 2 all-reduce the loss terms, step 1 the total alone
    ]
    proc = subprocess.run(
        cmd, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=600
    )
    logs = "".join(
        open(os.path.join(tmp_path, "log", f)).read()[-3000:]
        for f in sorted(os.listdir(tmp_path / "log"))
    )
    assert proc.returncode == 0, logs
    records = [json.load(open(out / f"rank{r}.json")) for r in (0, 1)]
    # three steps each; the largest GT count of each rank's own image (0: no GT at all)
    local = [[d["max_gt"] for d in rec["dn"]] for rec in records]
    assert local == [[1, 3, 2], [2, 1, 0]]
    # G = max(num_denoising // max_gt, 1) from the local count (num_denoising 10 in the tiny
    # config); 2 * max_gt * G DN slots, none without GT
    groups = [[d["num_dn_group"] for d in rec["dn"]] for rec in records]
    assert groups == [[10, 3, 5], [5, 10, 1]]
    assert [[d["pad_size"] for d in rec["dn"]] for rec in records] == [[20, 18, 20], [20, 20, 0]]
    # #GT normaliser: (own + other's GT) / 2 on both ranks: (1+2)/2, (3+1)/2, (2+0)/2
    assert records[0]["num_boxes"] == records[1]["num_boxes"] == [1.5, 2.0, 1.0]
    # the logged loss is the mean of the two ranks' own losses, the same on both ranks, on log
    # iterations and between them
    for step in range(3):
        own = [rec["loss"][step]["local"] for rec in records]
        assert own[0] != pytest.approx(own[1])
        for rec in records:
            assert rec["loss"][step]["logged"] == pytest.approx(sum(own) / 2, rel=1e-6)
    assert records[0]["epoch_loss"] == pytest.approx(records[1]["epoch_loss"], rel=1e-12)
    assert records[0]["epoch_loss"] == pytest.approx(
        [sum(r["loss"][s]["local"] for r in records for s in range(3)) / 6], rel=1e-6
    )
    # the trainer's optimizer clips once over all gradients (after DataParallel's all-reduce)
    assert records[0]["grad_clip"] == records[1]["grad_clip"] == "GlobalNormClip"
    a, b = load_params(out / "rank0.pdparams"), load_params(out / "rank1.pdparams")
    assert sorted(a) == sorted(b)
    # BatchNorm running statistics are buffers each rank updates from its own images (plain
    # BatchNorm, as in ppdet: `norm_type: sync_bn` would share them); everything else is equal
    statistics = [k for k in a if k.endswith(("._mean", "._variance"))]
    assert statistics, "the tiny model's backbone has learning BatchNorm layers"
    for key in a:
        assert np.isfinite(a[key]).all(), key
        if key in statistics:
            assert not np.array_equal(a[key], b[key]), key
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    final = load_params(tmp_path / "out" / "tiny" / "model_final.pdparams")  # written by rank 0
    for key in a:
        np.testing.assert_array_equal(final[key], a[key], err_msg=key)
