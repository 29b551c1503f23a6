"""Helpers for the engine tests: a tiny COCO-layout dataset and config, subprocess runners.

ppdet's config is process-global, so every training run happens in a fresh interpreter.
"""

import os
import socket
import subprocess
import sys

import paddle

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PYTHON = sys.executable

# A DAC demo model cut down further (hidden 32, 1+2 layers, 30 queries) on ~100 px images.
TINY_CONFIG = """
_BASE_: ['{repo}/configs/demo/dac_demo.yml']
hidden_dim: 32
epoch: {epoch}
log_iter: 1
snapshot_epoch: 1
save_dir: {save_dir}
worker_num: 0
TrainDataset: {{dataset_dir: {data}}}
EvalDataset: {{dataset_dir: {data}}}
TestDataset: {{dataset_dir: {data}}}
DACTransformer:
  num_queries: 30
  num_heads: 2
  num_encoder_layers: 1
  num_decoder_layers: 2
  dim_feedforward: 64
  num_denoising: 10
TrainReader:
  sample_transforms:
    - DACDecode: {{}}
    - RandomFlip: {{prob: 0.5}}
    - RandomShortSideResize: {{short_side_sizes: [96, 112, 128], max_size: 160}}
    - NormalizeImage: {{mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], is_scale: true}}
    - NormalizeBox: {{}}
    - BboxXYXY2XYWH: {{}}
    - Permute: {{}}
  batch_transforms:
    - PadMaskBatch: {{pad_to_stride: -1, return_pad_mask: true}}
  batch_size: 2
  shuffle: true
  drop_last: true
  collate_batch: false
  use_shared_memory: false
"""


def make_tiny_setup(root, epoch=2, num_train=8, num_val=2):
    """Write the tiny dataset and config under ``root``; returns the config path."""
    from ppdet_dac.data.demo_data import make_demo_data

    data = os.path.join(root, "data")
    make_demo_data(
        data,
        num_train=num_train,
        num_val=num_val,
        num_empty_train=1,
        min_size=96,
        max_size=128,
        max_objects=3,
    )
    path = os.path.join(root, "tiny.yml")
    with open(path, "w") as handle:
        handle.write(
            TINY_CONFIG.format(
                repo=REPO, epoch=epoch, data=data, save_dir=os.path.join(root, "out")
            )
        )
    return path


def child_env(threads=1):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=REPO)
    env.pop("PADDLE_TRAINERS_NUM", None)
    return env


def run_train(config, *args, timeout=600, check=True, cwd=REPO):
    """python tools/train.py -c config *args in a fresh process (in ``cwd``);
    CompletedProcess."""
    cmd = [PYTHON, os.path.join(REPO, "tools", "train.py"), "-c", config, *args]
    proc = subprocess.run(
        cmd, cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def free_port():
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_cmd(log_dir, script, *args, nproc=2, master=None, nnodes=1, node_rank=None):
    """python -m paddle.distributed.launch for ``script args``: ``nproc`` processes on this
    machine, or with ``master`` one node of ``nnodes`` (``node_rank``)."""
    cmd = [
        PYTHON,
        "-m",
        "paddle.distributed.launch",
        "--nproc_per_node",
        str(nproc),
        "--log_dir",
        str(log_dir),
    ]
    if master:
        cmd += ["--master", master, "--nnodes", str(nnodes), "--rank", str(node_rank)]
    return cmd + [script, *map(str, args)]


def worker_logs(log_dir):
    """The text of each workerlog.<r> of a launch, by local rank."""
    names = sorted(n for n in os.listdir(log_dir) if n.startswith("workerlog."))
    return [open(os.path.join(log_dir, n)).read() for n in names]


def load_params(path):
    """{name: ndarray} of a .pdparams file (a checkpoint's token left out)."""
    from ppdet_dac.interop.paddle_files import TOKEN_KEY

    return {k: v.numpy() for k, v in paddle.load(str(path)).items() if k != TOKEN_KEY}
