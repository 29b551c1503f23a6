"""ONNX export of a reference-attention Paddle Inference export (paddle2onnx), the one fix its
graph needs, and an onnxruntime detector checked against the Paddle predictor; the command line is
deploy/onnx/convert.py (its docstring gives the steps and limits).

paddle2onnx 2.1.0 turns multiclass_nms3's "no limit per class" (nms_top_k = -1) into
NonMaxSuppression's max_output_boxes_per_class = -1, which ONNX defines as "select nothing":
``fix_nms_limit`` sets it to 2**31 - 1 (no limit). ``--optimize_tool None`` always: the default
optimiser pip-installs packages while it converts.
"""

import os
import subprocess
import sys

import numpy as np
from ppdet.utils.logger import setup_logger

from ppdet_dac.deploy.infer_config import InferConfig, find_model_file
from ppdet_dac.deploy.predictor import Predictor

logger = setup_logger("dac_detr_onnx")

OPSET = 17
NMS_NO_LIMIT = 2**31 - 1  # max_output_boxes_per_class meaning "all boxes of a class"


def paddle2onnx_command(model_dir, save_file, opset=OPSET):
    model_file, params_file = find_model_file(model_dir)
    return [
        sys.executable,
        "-m",
        "paddle2onnx.command",
        "--model_dir",
        model_dir,
        "--model_filename",
        os.path.basename(model_file),
        "--params_filename",
        os.path.basename(params_file),
        "--save_file",
        save_file,
        "--opset_version",
        str(opset),
        "--optimize_tool",
        "None",
    ]


def fix_nms_limit(onnx_file, max_boxes):
    """Set every NonMaxSuppression's max_output_boxes_per_class <= 0 to ``max_boxes``; returns
    how many were changed."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(onnx_file)
    graph = model.graph
    constants = {
        out: node for node in graph.node if node.op_type == "Constant" for out in node.output
    }
    initializers = {init.name: init for init in graph.initializer}
    changed = 0
    for node in graph.node:
        if node.op_type != "NonMaxSuppression" or len(node.input) < 3 or not node.input[2]:
            continue
        name = node.input[2]
        if name in initializers:
            tensor = initializers[name]
        elif name in constants:
            tensor = next(a.t for a in constants[name].attribute if a.name == "value")
        else:
            raise ValueError(
                f"{onnx_file}: {node.name}'s max_output_boxes_per_class ({name}) is "
                "computed, not a constant; cannot fix it"
            )
        if int(numpy_helper.to_array(tensor).reshape(-1)[0]) <= 0:
            tensor.CopyFrom(
                numpy_helper.from_array(np.array([max_boxes], dtype=np.int64), tensor.name)
            )
            changed += 1
    onnx.save(model, onnx_file)
    return changed


def convert(model_dir, save_file=None, opset=OPSET):
    """paddle2onnx + the NMS fix; returns the ONNX file path."""
    cfg = InferConfig(model_dir)
    if cfg.attention != "reference":
        raise ValueError(
            f"{cfg.path}: attention is {cfg.attention!r}; ONNX needs a model "
            "exported with --attention reference"
        )
    save_file = save_file or os.path.join(model_dir, "model.onnx")
    proc = subprocess.run(
        paddle2onnx_command(model_dir, save_file, opset), capture_output=True, text=True
    )
    if proc.returncode != 0 or not os.path.isfile(save_file):
        raise RuntimeError(
            f"paddle2onnx failed on {model_dir} (rc {proc.returncode}):\n"
            f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    changed = fix_nms_limit(save_file, NMS_NO_LIMIT)
    logger.info(f"wrote {save_file} (opset {opset}; {changed} NMS limit(s) lifted)")
    return save_file


class OnnxDetector:
    """onnxruntime session on the converted model, fed like the Paddle predictor."""

    def __init__(self, onnx_file, threads=1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.log_severity_level = 3
        self.session = ort.InferenceSession(onnx_file, options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, feeds):
        """feeds: the predictor's feed dict (batch 1) -> (bbox [N, 6], bbox_num [1]), the graph's
        first two outputs (unclipped, at the exported NMS threshold)."""
        bbox, bbox_num = self.session.run(None, {n: feeds[n] for n in self.input_names})[:2]
        return bbox, bbox_num


def check(model_dir, onnx_file, images, atol=1e-4):
    """Max |ONNX - Paddle Inference| over the images; raises AssertionError above ``atol``."""
    predictor = Predictor(model_dir)
    detector = OnnxDetector(onnx_file)
    worst = 0.0
    for image in images:
        feeds = predictor.preprocessor.batch([image])
        ref = predictor.run_model(feeds)  # the graph's own outputs (unclipped), as ONNX gives
        ref_bbox, ref_num = ref["bbox"], ref["bbox_num"]
        bbox, num = detector.run(feeds)
        if (
            list(np.asarray(num).reshape(-1)) != list(np.asarray(ref_num).reshape(-1))
            or bbox.shape != ref_bbox.shape
        ):
            raise AssertionError(
                f"{image}: ONNX gives {np.asarray(num).tolist()} detections, "
                f"Paddle Inference {np.asarray(ref_num).tolist()}"
            )
        diff = float(np.abs(bbox - ref_bbox).max()) if bbox.size else 0.0
        logger.info(f"{image}: {bbox.shape[0]} detections, max |ONNX - Paddle| = {diff:.3g}")
        if diff > atol:
            raise AssertionError(f"{image}: max |ONNX - Paddle Inference| = {diff} > {atol}")
        worst = max(worst, diff)
    return worst
