"""A Pascal-VOC dataset trained and evaluated through tools/train.py and tools/eval.py, as a
user with VOC folders would: configs/demo/demo_data_voc.yml pointed at the tiny demo shapes
written as VOC, the image sizes set with the size keys."""

import json
import os
import re
import subprocess

import pytest

from _engine_helpers import PYTHON, REPO, child_env, make_tiny_setup

TIMEOUT_S = 300

VOC_CONFIG = """_BASE_: ['{tiny}', '{repo}/configs/demo/demo_data_voc.yml']
train_sizes: [96, 112, 128]
train_max_size: 160
eval_size: 96
eval_max_size: 160
TrainDataset: {{dataset_dir: {data}}}
EvalDataset: {{dataset_dir: {data}}}
TestDataset: {{dataset_dir: {data}}}
"""


@pytest.fixture(scope="module")
def voc_run(tmp_path_factory):
    """The tiny setup (4 train images, 1 without objects; 2 val images) as VOC, trained one
    epoch with --eval; (config, data folder, CompletedProcess, save_dir)."""
    from ppdet_dac.data.demo_data import write_voc_split

    root = tmp_path_factory.mktemp("voc")
    tiny = make_tiny_setup(str(root), epoch=1, num_train=4, num_val=2)
    data = root / "data"
    for split in ("train", "val"):
        write_voc_split(str(data), split)
    config = root / "voc.yml"
    config.write_text(VOC_CONFIG.format(tiny=tiny, repo=REPO, data=data))
    save_dir = root / "out"
    proc = subprocess.run(
        [
            PYTHON,
            os.path.join(REPO, "tools", "train.py"),
            "-c",
            str(config),
            "--eval",
            "-o",
            f"save_dir={save_dir}",
        ],
        cwd=str(root),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    return config, data, proc, save_dir


def _count(data, split):
    with open(data / "annotations" / f"instances_{split}.json") as f:
        anno = json.load(f)
    return len(anno["images"]), len(anno["annotations"])


@pytest.mark.slow
def test_voc_set_trains_and_evaluates_with_coco_ap(voc_run):
    config, data, proc, save_dir = voc_run
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    num_train, _ = _count(data, "train")
    num_val, val_boxes = _count(data, "val")
    assert f"{data / 'voc' / 'train.txt'}: loaded {num_train} images (1 without boxes" in log
    assert (
        f"{data / 'voc' / 'val.txt'}: its {num_val} loaded images and {val_boxes} boxes in "
        "COCO form"
    ) in log
    assert re.search(r"box AP \d\.\d{3} \(IoU 0\.50:0\.95\), AP50 \d\.\d{3}", log), log[-3000:]
    assert (
        "image sizes: TrainReader short side [96, 112, 128], long side <= 160; EvalReader "
        "short side 96, long side <= 160; TestReader short side 96, long side <= 160"
    ) in log
    assert (save_dir / "voc" / "model_final.pdparams").is_file()
    assert (save_dir / "voc" / "bbox.json").is_file()


@pytest.mark.slow
def test_voc_set_evaluates_with_ppdet_voc_metric(voc_run):
    config, _, train, save_dir = voc_run
    assert train.returncode == 0
    proc = subprocess.run(
        [
            PYTHON,
            os.path.join(REPO, "tools", "eval.py"),
            "-c",
            str(config),
            "-o",
            f"weights={save_dir / 'voc' / 'model_final'}",
            "metric=VOC",
            "map_type=11point",
            "EvalDataset.data_fields=[image,gt_bbox,gt_class,difficult]",
            "EvalReader.collate_batch=false",
            f"save_dir={save_dir}",
        ],
        cwd=str(save_dir),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert re.search(r"mAP\(0\.50, 11point\) = \d+\.\d\d%", log), log[-3000:]
    # the per-class curves go to the run's folder, not the working directory
    assert (save_dir / "voc" / "voc_pr_curve").is_dir()
    assert not (save_dir / "voc_pr_curve").exists()
