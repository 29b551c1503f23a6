"""Evaluation through Paddle Inference: the model exported in memory and run with oneDNN.

Paddle's dygraph CPU kernels do not use oneDNN (Paddle 3.3: the ``FLAGS_use_mkldnn`` switch
leaves dygraph's convolutions and matrix products on the plain kernels), while the exported
model run by ``paddle.inference`` with oneDNN takes about 0.35 of the dygraph time for R-50 on
CPU (benchmarks/RESULTS.md). ``tools/eval.py --engine inference`` therefore exports the loaded
weights to a temporary folder once (tens of seconds for R-50) and evaluates every batch with the
exported graph: the same ``bbox`` / ``bbox_num`` as the dygraph model's evaluation output, up
to the kernels' rounding (tests/deploy/test_exported_eval.py).
"""

import os
import tempfile
import time

import numpy as np
import paddle
from ppdet.core.workspace import create
from ppdet.utils.logger import setup_logger

from ppdet_dac.deploy.export import INPUT_NAMES, save_exported
from ppdet_dac.deploy.predictor import Predictor
from ppdet_dac.ops.ms_deform_attn import op_available

logger = setup_logger(__name__)

ENGINES = ("dygraph", "inference")


class ExportedModel:
    """``model`` (a DACDETR) exported with its current weights and run by Paddle Inference.

    ``self(data)``: data a reader batch (``image`` [B, 3, H, W], ``im_shape`` [B, 2],
    ``scale_factor`` [B, 2], optional ``pad_mask`` [B, H, W], 1 = image) -> {'bbox': float32
    [N, 6] (label, score, x1, y1, x2, y2 in original-image pixels), 'bbox_num': int32 [B]}, as
    ``model(data)`` gives them in eval mode. ``export_seconds``: the time the export and the
    predictor's set-up took. CPU only; oneDNN unless ``enable_mkldnn`` is False.
    """

    def __init__(self, cfg, model, cpu_threads=1, enable_mkldnn=True):
        tic = time.perf_counter()
        own = create(cfg.architecture)  # the export takes over its model: its own instance
        own.set_state_dict(model.state_dict())  # (copies the values)
        own.eval()
        attention = "op" if op_available() else "reference"
        self._folder = tempfile.TemporaryDirectory(prefix="ppdet_dac_eval_")
        # the names of the classes evaluated: EvalDataset's (TestDataset's may not be there)
        save_exported(cfg, own, self._folder.name, attention, names_from="EvalDataset")
        self.predictor = Predictor(
            self._folder.name, device="CPU", cpu_threads=cpu_threads, enable_mkldnn=enable_mkldnn
        )
        self.export_seconds = time.perf_counter() - tic
        logger.info(
            f"evaluating with Paddle Inference (oneDNN {self.predictor.enable_mkldnn}, "
            f"{cpu_threads} thread(s), attention {attention}); export and set-up took "
            f"{self.export_seconds:.1f} s"
        )

    def eval(self):
        """(as a Layer's: the exported graph is in eval mode already)"""
        return self

    def __call__(self, data):
        feeds = {name: _host(data[name]) for name in INPUT_NAMES if name in data}
        if "pad_mask" not in feeds:  # an unpadded batch: every pixel is image
            image = feeds["image"]
            feeds["pad_mask"] = np.ones((image.shape[0],) + image.shape[2:], "float32")
        return self.predictor.run_model(feeds)

    def close(self):
        self._folder.cleanup()


def _host(value):
    return np.asarray(value.numpy() if isinstance(value, paddle.Tensor) else value, "float32")


def check_engine(engine, cfg):
    """``engine`` if it can run with ``cfg``; ValueError naming --engine otherwise."""
    if engine not in ENGINES:
        raise ValueError(f"--engine must be one of {ENGINES}, got {engine!r}")
    if engine == "inference" and cfg.get("use_gpu", False) and paddle.is_compiled_with_cuda():
        raise ValueError(
            "--engine inference runs on CPU; on GPU the dygraph evaluation is the fast path "
            "(leave --engine out)"
        )
    return engine


def cpu_threads():
    """The math threads this process's Paddle uses: OMP_NUM_THREADS (the tools set it to the
    core count unless the user did, tools/_threads.py), else 1."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else 1
