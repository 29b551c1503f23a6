"""The tiny DAC model learns: over a short run on a handful of images the training loss falls,
the per-epoch evaluation runs (COCO AP after every epoch, best_model kept) and VisualDL gets
every step's loss terms. The same epoch number (from 0, as ppdet) in the log lines, checkpoint
names, "best" lines and the query analysis; the evaluation outputs in the run's folder (also
tools/eval.py's, in --output_eval), nothing in the working directory, pycocotools' prints
summarised unless -v."""

import json
import os
import re
import subprocess

import numpy as np

import pytest

from _engine_helpers import PYTHON, REPO, child_env, make_tiny_setup, run_train

pytestmark = pytest.mark.slow

EPOCH_LINE = re.compile(r"epoch (\d+): mean loss ([0-9.]+), box AP ([0-9.-]+)")
PYCOCOTOOLS = ("index created!", "Average Precision  (AP) @[ IoU=0.50:0.95")


def test_loss_falls_and_every_epoch_is_evaluated(tmp_path):
    config = make_tiny_setup(str(tmp_path), epoch=6)
    vdl_dir = str(tmp_path / "vdl")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = run_train(
        config,
        "--eval",
        "--use_vdl",
        "--vdl_log_dir",
        vdl_dir,
        "-o",
        "EvalDataset.image_dir=train",
        "EvalDataset.anno_path=annotations/instances_train.json",
        cwd=str(cwd),
    )
    log = proc.stdout + proc.stderr
    history = [(int(e), float(l), float(a)) for e, l, a in EPOCH_LINE.findall(log)]
    assert [h[0] for h in history] == list(range(6))
    losses = [h[1] for h in history]
    assert sum(losses[-2:]) < 0.95 * sum(losses[:2]), losses
    aps = [h[2] for h in history]
    assert all(0.0 <= ap <= 1.0 for ap in aps)
    out = os.path.join(str(tmp_path), "out", "tiny")
    for name in ("best_model", "model_final"):
        assert os.path.isfile(os.path.join(out, name + ".pdstate"))

    # one epoch number: ppdet's "Epoch: [k]", our epoch lines, checkpoint names and log lines,
    # the "best" lines, and the epochs the query analysis gives the checkpoints
    import paddle
    from ppdet_dac.analysis.queries import checkpoint_epochs

    assert sorted({int(k) for k in re.findall(r"Epoch: \[(\d+)\]", log)}) == list(range(6))
    names = [str(k) for k in range(5)] + ["model_final"]
    saved = re.findall(r"saved checkpoint \S+/(\w+) \(end of epoch (\d+), iteration (\d+)\)", log)
    assert [(n, int(e), int(i)) for n, e, i in saved if n != "best_model"] == [
        (n, k, 4 * (k + 1)) for k, n in enumerate(names)
    ]
    assert checkpoint_epochs(out) == [
        (k, os.path.join(out, n + ".pdparams")) for k, n in enumerate(names)
    ]
    best = [int(e) for e in re.findall(r"best box AP so far: [0-9.]+ \(epoch (\d+)\)", log)]
    assert best and best[0] == 0 and best == sorted(best)
    assert max(aps) == aps[best[-1]]
    best_saved = [int(e) for n, e, _ in saved if n == "best_model"]
    assert best_saved == best
    assert paddle.load(os.path.join(out, "best_model.pdstate"))["epochs_done"] == best[-1] + 1

    # evaluation outputs with the run, where the log says; pycocotools' prints summarised
    assert os.listdir(cwd) == []
    assert log.count(f"detections of the evaluation images: {out}/bbox.json") == 6
    assert f"per-class precision/recall curves: {out}/bbox_pr_curve" in log
    assert sorted(os.listdir(os.path.join(out, "bbox_pr_curve"))) == [
        f"{c}_precision_recall_curve.jpg" for c in ("circle", "square", "triangle")
    ]
    assert len(json.load(open(os.path.join(out, "bbox.json")))) > 0
    assert not any(text in log for text in PYCOCOTOOLS)
    assert log.count("box AP ") >= 6 and "per-class box AP:" in log

    # tools/eval.py: outputs in --output_eval, -v shows pycocotools' own prints
    eval_dir = tmp_path / "eval_out"
    proc = subprocess.run(
        [
            PYTHON,
            os.path.join(REPO, "tools", "eval.py"),
            "-c",
            config,
            "-v",
            "--output_eval",
            str(eval_dir),
            "-o",
            f"weights={os.path.join(out, 'model_final')}",
            "EvalDataset.image_dir=train",
            "EvalDataset.anno_path=annotations/instances_train.json",
        ],
        cwd=str(cwd),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert os.listdir(cwd) == []
    assert f"detections of the evaluation images: {eval_dir}/bbox.json" in log
    assert sorted(os.listdir(eval_dir)) == ["bbox.json", "bbox_pr_curve"]
    assert all(text in log for text in PYCOCOTOOLS)
    final_ap = float(re.search(r"box AP ([0-9.]+) \(IoU 0\.50:0\.95\)", log).group(1))
    assert final_ap == pytest.approx(aps[-1], abs=6e-4)  # 3 digits here, 4 in the epoch line

    # VisualDL got every step's loss (log_iter 1: unsmoothed); their epoch means are the log's
    from visualdl import LogReader

    (record,) = os.listdir(vdl_dir)
    reader = LogReader(file_path=os.path.join(vdl_dir, record))
    assert {"loss", "loss_ce", "loss_bbox_one2one", "loss_giou_enc"} <= set(
        reader.get_tags()["scalar"]
    )
    steps = [(p.id, p.value) for p in reader.get_data("scalar", "loss")]
    assert [i for i, _ in steps] == list(range(24))  # 6 epochs x 4 iterations
    per_epoch = np.array([v for _, v in steps]).reshape(6, 4).mean(1)
    np.testing.assert_allclose(per_epoch, losses, rtol=1e-4)
