"""Exporting a ppdet_dac detector to a Paddle Inference model with its ``infer_cfg.yml``.

``export_model(cfg, weights, output_dir, attention)`` writes into ``output_dir``:

* ``model.json`` + ``model.pdiparams`` (Paddle 3, PIR; Paddle 2.6 writes ``model.pdmodel``);
* ``infer_cfg.yml`` in ppdet's layout (``mode``, ``draw_threshold``, ``metric``,
  ``use_dynamic_shape``, ``arch``, ``min_subgraph_size``, ``Preprocess``, ``label_list``) plus
  ``attention``, the deformable-attention implementation baked into the graph:

  - ``op``: the compiled ``ms_deform_attn`` custom op (fast). A process that runs the model must
    register the op library first (``ppdet_dac.ops.register_op_library()``; the predictor in
    ``ppdet_dac.engine.predictor`` does it when ``infer_cfg.yml`` says ``attention: op``).
  - ``reference``: the pure-Paddle ``grid_sample`` path (portable; the one paddle2onnx converts).

Inputs of the exported graph: ``image`` [B, 3, H, W] (any H, W unless
``TestReader.inputs_def.image_shape`` fixes them), ``im_shape`` [B, 2], ``scale_factor`` [B, 2] and
``pad_mask`` [B, H, W] (1 = image, 0 = padding). Outputs: ``bbox`` [N, 6] rows
(label, score, x1, y1, x2, y2) in original-image pixels and ``bbox_num`` [B].
"""
import importlib
import os
from collections import OrderedDict

import paddle
import yaml
from paddle.static import InputSpec
from ppdet.core.workspace import create
from ppdet.data.source.category import get_categories
from ppdet.utils.checkpoint import load_pretrain_weight
from ppdet.utils.logger import setup_logger

from ppdet_dac import ops

logger = setup_logger(__name__)

ATTENTION_MODES = ("op", "reference")
INFER_CFG = "infer_cfg.yml"
MODEL_PREFIX = "model"
INPUT_NAMES = ("image", "im_shape", "scale_factor", "pad_mask")
# ppdet's TRT_MIN_SUBGRAPH entry for the DETR family; deploy tools read 'arch' from this table
DEPLOY_ARCH, MIN_SUBGRAPH_SIZE = "DETR", 3
# reader ops that turn file bytes into an image: the deploy side does this itself
_DECODE_OPS = ("Decode", "DACDecode")
_PAD_BATCH_OPS = ("PadBatch", "PadMaskBatch")

# Plain-Python helpers (dispatch logic, defaults computed from module globals) that dy2static must
# run as they are instead of rewriting them: their rewritten copies lose the module globals.
_NOT_TO_STATIC = (
    ("ppdet_dac.ops.ms_deform_attn", ("selected_backend", "_log_once")),
    ("ppdet_dac.modeling.position_encoding", ("sine_position_embedding", "box_position_embedding")),
)


def _mark_not_to_static():
    for module_name, names in _NOT_TO_STATIC:
        module = importlib.import_module(module_name)
        for name in names:
            paddle.jit.not_to_static(getattr(module, name))


def _image_shape(cfg):
    """[3, H, W] from TestReader.inputs_def.image_shape (-1 = dynamic); [3, -1, -1] by default."""
    shape = list(cfg.get("TestReader", {}).get("inputs_def", {}).get("image_shape", [3, -1, -1]))
    if len(shape) != 3 or int(shape[0]) != 3:
        raise ValueError(f"TestReader.inputs_def.image_shape must be [3, H, W], got {shape}")
    return [int(v) for v in shape]


def input_spec(image_shape):
    """The exported graph's inputs (one dict, as ppdet architectures take them)."""
    h, w = [None if v == -1 else v for v in image_shape[1:]]
    return [{
        "image": InputSpec([None, 3, h, w], "float32", "image"),
        "im_shape": InputSpec([None, 2], "float32", "im_shape"),
        "scale_factor": InputSpec([None, 2], "float32", "scale_factor"),
        "pad_mask": InputSpec([None, h, w], "float32", "pad_mask"),
    }]


def preprocess_list(cfg, image_shape):
    """The TestReader's sample transforms after decoding, as ppdet's infer_cfg 'Preprocess' list.

    A fixed export size replaces Resize.target_size; a batch padder with a positive stride becomes
    PadStride (images are padded per batch at inference).
    """
    reader = cfg.get("TestReader")
    if not reader or not reader.get("sample_transforms"):
        raise ValueError("config has no TestReader.sample_transforms to export as Preprocess")
    steps = []
    for transform in reader["sample_transforms"]:
        for name, args in transform.items():
            if name in _DECODE_OPS:
                continue
            step = OrderedDict(type=name)
            step.update(dict(args or {}))
            if name == "Resize":
                if image_shape[1] != -1:
                    step["target_size"] = image_shape[1:]
                step.setdefault("interp", 1)  # cv2.INTER_LINEAR, ppdet's default
            steps.append(step)
    for transform in reader.get("batch_transforms") or []:
        for name, args in transform.items():
            stride = (args or {}).get("pad_to_stride", -1)
            if name in _PAD_BATCH_OPS and stride and stride > 0:
                steps.append(OrderedDict(type="PadStride", stride=int(stride)))
    return steps


def label_list(cfg):
    """Category names ordered by the model's (contiguous) class id, from TestDataset's anno file."""
    dataset = create("TestDataset")()
    anno_file = dataset.get_anno()
    clsid2catid, catid2name = get_categories(cfg["metric"], anno_file=anno_file)
    return [str(catid2name[clsid2catid[i]]) for i in sorted(clsid2catid)]


def infer_config(cfg, attention, image_shape):
    """The infer_cfg.yml content: ppdet's keys in ppdet's order, then ours."""
    return OrderedDict([
        ("mode", "paddle"),
        ("draw_threshold", float(cfg.get("draw_threshold", 0.5))),
        ("metric", cfg["metric"]),
        ("use_dynamic_shape", image_shape[2] == -1),
        ("arch", DEPLOY_ARCH),
        ("min_subgraph_size", MIN_SUBGRAPH_SIZE),
        ("Preprocess", preprocess_list(cfg, image_shape)),
        ("label_list", label_list(cfg)),
        ("architecture", cfg["architecture"]),
        ("attention", attention),
        ("input_names", list(INPUT_NAMES)),
    ])


def _plain(value):
    """OrderedDict/tuple -> dict/list, so the YAML has no Python tags."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_infer_config(content, output_dir):
    path = os.path.join(output_dir, INFER_CFG)
    with open(path, "w") as f:
        yaml.safe_dump(_plain(content), f, sort_keys=False, default_flow_style=None)
    return path


def build_model(cfg, weights):
    """create(cfg.architecture) in eval mode with ``weights`` (a .pdparams path or its prefix)."""
    model = create(cfg.architecture)
    if weights:
        prefix = weights[:-len(".pdparams")] if weights.endswith(".pdparams") else weights
        if not os.path.isfile(prefix + ".pdparams"):
            raise FileNotFoundError(f"weights {weights!r}: no file {prefix}.pdparams")
        load_pretrain_weight(model, weights)
    else:
        logger.warning("no weights given: exporting randomly initialised parameters")
    model.eval()
    return model


def export_model(cfg, weights, output_dir, attention="op"):
    """Export ``cfg``'s architecture with ``weights`` to ``output_dir``; returns output_dir.

    attention: 'op' (graph calls the compiled ms_deform_attn op; raises RuntimeError when the op
    library is not built) or 'reference' (pure Paddle, convertible to ONNX).
    """
    if attention not in ATTENTION_MODES:
        raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {attention!r}")
    if attention == "op":
        ops.register_op_library()  # raises naming why the op is unavailable
    image_shape = _image_shape(cfg)
    os.makedirs(output_dir, exist_ok=True)
    model = build_model(cfg, weights)
    _mark_not_to_static()
    previous = ops.force_reference(attention == "reference")
    try:
        static_model = paddle.jit.to_static(model, input_spec=input_spec(image_shape),
                                            full_graph=True)
        paddle.jit.save(static_model, os.path.join(output_dir, MODEL_PREFIX))
    finally:
        ops.force_reference(previous)
    path = write_infer_config(infer_config(cfg, attention, image_shape), output_dir)
    logger.info(f"exported {cfg['architecture']} (attention: {attention}) to {output_dir} "
                f"({INFER_CFG}: {path})")
    return output_dir
