"""The tiny DAC model learns: over a short run on a handful of images the training loss falls,
the per-epoch evaluation runs (COCO AP after every epoch, best_model kept) and VisualDL gets
every step's loss terms."""
import os
import re

import numpy as np

import pytest

from _engine_helpers import make_tiny_setup, run_train

pytestmark = pytest.mark.slow

EPOCH_LINE = re.compile(r"epoch (\d+): mean loss ([0-9.]+), box AP ([0-9.-]+)")


def test_loss_falls_and_every_epoch_is_evaluated(tmp_path):
    config = make_tiny_setup(str(tmp_path), epoch=6)
    vdl_dir = str(tmp_path / "vdl")
    proc = run_train(config, "--eval", "--use_vdl", "--vdl_log_dir", vdl_dir, "-o",
                     "EvalDataset.image_dir=train",
                     "EvalDataset.anno_path=annotations/instances_train.json")
    history = [(int(e), float(l), float(a)) for e, l, a in EPOCH_LINE.findall(proc.stdout + proc.stderr)]
    assert [h[0] for h in history] == list(range(6))
    losses = [h[1] for h in history]
    assert sum(losses[-2:]) < 0.95 * sum(losses[:2]), losses
    aps = [h[2] for h in history]
    assert all(0.0 <= ap <= 1.0 for ap in aps)
    out = os.path.join(str(tmp_path), "out", "tiny")
    for name in ("best_model", "model_final"):
        assert os.path.isfile(os.path.join(out, name + ".pdstate"))
    assert os.path.isfile(os.path.join(out, "bbox.json"))   # eval output kept with the run

    # VisualDL got every step's loss (log_iter 1: unsmoothed); their epoch means are the log's
    from visualdl import LogReader
    (record,) = os.listdir(vdl_dir)
    reader = LogReader(file_path=os.path.join(vdl_dir, record))
    assert {"loss", "loss_ce", "loss_bbox_one2one", "loss_giou_enc"} <= set(
        reader.get_tags()["scalar"])
    steps = [(p.id, p.value) for p in reader.get_data("scalar", "loss")]
    assert [i for i, _ in steps] == list(range(24))          # 6 epochs x 4 iterations
    per_epoch = np.array([v for _, v in steps]).reshape(6, 4).mean(1)
    np.testing.assert_allclose(per_epoch, losses, rtol=1e-4)
