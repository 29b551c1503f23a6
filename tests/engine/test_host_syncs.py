"""Device-to-host copies in a training step of the demo config (docs/training.md, "Host
synchronisations").

Per training step on one rank, with B_gt the images of the batch that have ground truth and L
the decoder layers, the step copies to the host

    B_gt · (L + 1)   Hungarian cost matrices: the O-stream of every decoder layer, and the encoder
                     proposals (two-stage models; the "+ 1" is 0 without two-stage),
  + B_gt · L         one-to-many score matrices of the C-stream (0 with ``use_dac: false``),
  + 1                loss values: the total loss (NaN/inf guard, epoch mean) on every step; on a
                     log iteration (every ``log_iter`` steps, and the first step) the loss terms
                     of every step since the last one instead, in the same single copy,

and nothing else (the input checks that need tensor values run with PPDET_DAC_DEBUG_CHECKS=1
only). Denoising needs no matching; images without GT are not matched.
"""

import json
import os
import subprocess

import pytest

from _engine_helpers import PYTHON, REPO, child_env

pytestmark = pytest.mark.slow  # a training run in a fresh interpreter (about 7 s idle)

PROBE = os.path.join(REPO, "tests", "engine", "_host_sync_probe.py")

CONFIG = """
_BASE_: ['{repo}/configs/demo/dac_demo.yml']
epoch: 1
log_iter: 2
snapshot_epoch: 100
save_dir: {root}/out
worker_num: 0
TrainDataset: {{dataset_dir: {data}}}
EvalDataset: {{dataset_dir: {data}}}
TrainReader:
  sample_transforms:
    - DACDecode: {{}}
    - RandomShortSideResize: {{short_side_sizes: [96], max_size: 128}}
    - NormalizeImage: {{mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], is_scale: true}}
    - NormalizeBox: {{}}
    - BboxXYXY2XYWH: {{}}
    - Permute: {{}}
  batch_size: 2
  shuffle: false
"""


def _run_probe(tmp_path):
    """Three training steps (batch 2, log_iter 2) of the demo model on 96 px images; the
    probe's record."""
    from ppdet_dac.data.demo_data import make_demo_data

    data = str(tmp_path / "data")
    make_demo_data(data, num_train=6, num_val=1, num_empty_train=1, max_objects=3)
    config = tmp_path / "host_syncs.yml"
    config.write_text(CONFIG.format(repo=REPO, root=tmp_path, data=data))
    out = tmp_path / "record.json"
    proc = subprocess.run(
        [PYTHON, PROBE, str(config), str(out)],
        cwd=REPO,
        env=child_env(threads=2),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


def test_training_step_copies_only_the_inherent_values(tmp_path):
    record = _run_probe(tmp_path)
    layers, two_stage = record["num_decoder_layers"], record["two_stage"]
    streams = 2 if record["use_dac"] else 1
    # every term of one step: per layer and stream ce/bbox/giou and their denoising twins,
    # the encoder's three (two-stage), the total
    num_terms = layers * streams * 6 + 3 * two_stage + 1
    steps = record["steps"]
    assert len(steps) == 3
    assert any(0 in step["gt_per_image"] for step in steps)  # an image without GT is skipped
    since_log = 0
    for step_id, step in enumerate(steps):
        assert len(step["gt_per_image"]) == record["batch_size"]
        with_gt = sum(n > 0 for n in step["gt_per_image"])
        expected = {"modeling/matcher.py": with_gt * (layers + two_stage)}
        if record["use_dac"]:
            expected["modeling/one_to_many.py"] = with_gt * layers
        expected["engine/loss_log.py"] = 1
        by_module = {}
        for copy in step["copies"]:
            by_module[copy["by"]] = by_module.get(copy["by"], 0) + 1
        assert by_module == expected, (step_id, step["copies"])
        assert len(step["copies"]) == with_gt * (layers + two_stage + layers) + 1
        # the loss copy: the total alone on a non-log step, else the terms of every step since
        # the last copy of terms (step 0: the first step; step 2: steps 1 and 2)
        since_log += 1
        (loss_copy,) = [c for c in step["copies"] if c["by"] == "engine/loss_log.py"]
        logs = step_id == 0 or step_id % record["log_iter"] == 0
        assert loss_copy["size"] == (since_log * num_terms if logs else 1), step_id
        since_log = 0 if logs else since_log
    # TrainingStats still gets every step's terms, in order: after steps 0, 1, 2 it holds 1, 1, 3
    assert [step["logged_steps"] for step in steps] == [1, 1, 3]
