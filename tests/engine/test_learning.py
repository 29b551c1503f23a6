"""The tiny DAC model learns: over a short run on a handful of images the training loss falls,
and the per-epoch evaluation runs (COCO AP after every epoch, best_model kept)."""
import os
import re

import pytest

from _engine_helpers import make_tiny_setup, run_train

pytestmark = pytest.mark.slow

EPOCH_LINE = re.compile(r"epoch (\d+): mean loss ([0-9.]+), box AP ([0-9.-]+)")


def test_loss_falls_and_every_epoch_is_evaluated(tmp_path):
    config = make_tiny_setup(str(tmp_path), epoch=6)
    proc = run_train(config, "--eval", "-o", "EvalDataset.image_dir=train",
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
