"""Exporting a ppdet_dac detector to a Paddle Inference model with its ``infer_cfg.yml``.

``export_model(cfg, weights, output_dir, attention)`` writes into ``output_dir``:

* ``model.json`` + ``model.pdiparams`` (Paddle 3, PIR; Paddle 2.6 writes ``model.pdmodel``);
* ``infer_cfg.yml`` in ppdet's layout (``mode``, ``draw_threshold``, ``metric``,
  ``use_dynamic_shape``, ``arch``, ``min_subgraph_size``, ``Preprocess``, ``label_list``) plus
  ``attention``, the deformable-attention implementation baked into the graph:

  - ``op``: the compiled ``ms_deform_attn`` custom op (fast). A process that runs the model must
    register the op library first (``ppdet_dac.ops.register_op_library()``; the predictor in
    ``ppdet_dac.deploy.predictor`` does it when ``infer_cfg.yml`` says ``attention: op``).
  - ``reference``: the pure-Paddle ``grid_sample`` path (portable; the one paddle2onnx converts).

  and the input-size limits of the graph, ``feature_strides`` (the encoder levels) and
  ``num_queries`` (the proposals its top-k selects), from which the predictor refuses images too
  thin for the model with a message instead of a failing top-k.

``label_list`` (the class names, indexed by the model's output label) comes from the config's
``label_list`` key when set (``-o label_list=[cat,dog]`` or a .txt file with one name per line),
else from TestDataset's annotation file. Export stops with an error naming the source when the
number of names differs from the number of labels the model outputs, or when the annotation
file is missing and the model's labels are not COCO's 80 (no silent COCO names on a 3-class
model).

Inputs of the exported graph: ``image`` [B, 3, H, W] (any H, W unless
``TestReader.inputs_def.image_shape`` fixes them), ``im_shape`` [B, 2], ``scale_factor`` [B, 2] and
``pad_mask`` [B, H, W] (1 = image, 0 = padding). Outputs (``output_names`` of infer_cfg.yml, in
this order): ``bbox`` [N, 6] rows (label, score, x1, y1, x2, y2) in original-image pixels,
unclipped, as the evaluation reports them; ``bbox_num`` [B]; and the post-processor's NMS input,
``nms_boxes`` [B, Q, 4] and ``nms_scores`` [B, C, Q] (``DACNMSPostProcess.candidates``), from
which the predictor re-runs the selection at another NMS threshold with the result of an export
at that threshold. infer_cfg.yml's ``NMS`` records the exported selection (``nms_threshold``,
``nms_top_k``, ``keep_top_k``) and, for ``class_id_mode: coco_raw``, ``label_map`` (model label
-> output label, -1 = dropped).
"""

import contextlib
import importlib
import io
import os
from collections import OrderedDict

import paddle
import yaml
from paddle.static import InputSpec
from ppdet.core.workspace import create
from ppdet.data.source.category import get_categories
from ppdet.utils.logger import setup_logger

from ppdet_dac import ops
from ppdet_dac._notices import export_notices_dropped
from ppdet_dac.data.coco_ids import COCO_RAW_CATEGORY_IDS
from ppdet_dac.interop.weights import load_model_weights
from ppdet_dac.modeling.post_process import DACNMSPostProcess

logger = setup_logger(__name__)

ATTENTION_MODES = ("op", "reference")
INFER_CFG = "infer_cfg.yml"
MODEL_PREFIX = "model"
INPUT_NAMES = ("image", "im_shape", "scale_factor", "pad_mask")
# the graph's outputs, in the order Paddle writes them (a dict's outputs go in sorted key order)
OUTPUT_NAMES = ("bbox", "bbox_num", "nms_boxes", "nms_scores")
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
    return [
        {
            "image": InputSpec([None, 3, h, w], "float32", "image"),
            "im_shape": InputSpec([None, 2], "float32", "im_shape"),
            "scale_factor": InputSpec([None, 2], "float32", "scale_factor"),
            "pad_mask": InputSpec([None, h, w], "float32", "pad_mask"),
        }
    ]


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


def test_preprocess_steps(cfg):
    """The Preprocess list an export of ``cfg`` writes (``preprocess_list`` at the configured
    TestReader.inputs_def.image_shape)."""
    return preprocess_list(cfg, _image_shape(cfg))


def num_output_labels(model, cfg):
    """How many labels the model's detections carry: num_classes ('contiguous' class ids), or
    COCO's 80 classes for 'coco_raw' (the raw ids are mapped back to 0..79 in the graph)."""
    to_dataset = getattr(model, "to_dataset_ids", None)
    if to_dataset is not None:
        return int((to_dataset.numpy() >= 0).sum())
    return int(cfg["num_classes"])


def _read_label_list(value):
    """The config's label_list: a list of names, or a .txt file with one name per line (a first
    line 'background' is dropped, as in ppdet's label_list.txt)."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value], f"label_list {list(value)}"
    if isinstance(value, str) and value.strip():
        if not os.path.isfile(value):
            raise FileNotFoundError(
                f"label_list file {value!r} not found (give a list of class "
                "names or a .txt file with one name per line)"
            )
        with open(value) as f:
            names = [line.strip() for line in f if line.strip()]
        if names and names[0] == "background":
            names = names[1:]
        return names, f"label_list file {value}"
    raise ValueError(f"label_list must be a list of class names or a .txt file path, got {value!r}")


def class_names(cfg, num_labels, names_from="TestDataset"):
    """Class names ordered by the model's output label, ``num_labels`` of them.

    From the config's ``label_list`` when given, else from the annotation file of the config's
    ``names_from`` section (TestDataset; the evaluation's own export reads EvalDataset's). A
    missing annotation file is accepted only for a model with COCO's 80 labels (COCO's names,
    with a warning naming the file); any other missing file, and any count that differs from
    ``num_labels``, is a ValueError naming the source and how to set the names.
    """
    hint = (
        "set the names with -o label_list=[name0,name1,...] (or label_list: a .txt file "
        f"with one name per line) or point {names_from}.dataset_dir / anno_path at the "
        "training annotation file"
    )
    if cfg.get("label_list") is not None:
        names, source = _read_label_list(cfg["label_list"])
    else:
        anno_file = create(names_from)().get_anno()
        if anno_file and os.path.isfile(anno_file):
            source = f"{names_from} annotation file {anno_file}"
        elif str(cfg["metric"]).upper() == "COCO" and num_labels == len(COCO_RAW_CATEGORY_IDS):
            source = "COCO's category names"
            logger.warning(
                f"{names_from} annotation file {anno_file!r} not found; the model has "
                f"COCO's {num_labels} classes, so COCO's names are used ({hint})"
            )
        else:
            raise ValueError(
                f"the class names come from {names_from}'s annotation file "
                f"{anno_file!r}, which is not there, and the model has {num_labels} "
                f"classes (not COCO's {len(COCO_RAW_CATEGORY_IDS)}): {hint}"
            )
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' loading prints
            clsid2catid, catid2name = get_categories(cfg["metric"], anno_file=anno_file)
        names = [str(catid2name[clsid2catid[i]]) for i in sorted(clsid2catid)]
    if len(names) != num_labels:
        raise ValueError(
            f"{source} gives {len(names)} class names but the model outputs "
            f"{num_labels} labels (num_classes / DACDETR.class_id_mode): {hint}"
        )
    return names


def input_limits(model):
    """{'feature_strides', 'num_queries'} of a two-stage model: the encoder's level strides (the
    backbone's, then x2 per extra level) and how many proposals its top-k selects; {} else."""
    transformer, backbone = getattr(model, "transformer", None), getattr(model, "backbone", None)
    if transformer is None or backbone is None or not getattr(transformer, "two_stage", False):
        return {}
    strides = [int(shape.stride) for shape in backbone.out_shape]
    while len(strides) < int(transformer.num_levels):
        strides.append(strides[-1] * 2)
    return {"feature_strides": strides, "num_queries": int(transformer.num_queries)}


def nms_config(model):
    """infer_cfg.yml's NMS entry: the exported selection, in ppdet's MultiClassNMS names, and the
    label map of a model whose labels are mapped after the selection (coco_raw)."""
    post = model.post_process
    entry = OrderedDict(
        [
            ("name", type(post).__name__),
            ("nms_threshold", float(post.nms_iou_threshold)),
            ("nms_top_k", int(post.num_top_candidates)),
            ("keep_top_k", int(post.max_detections)),
        ]
    )
    if getattr(model, "class_id_mode", "contiguous") != "contiguous":
        entry["label_map"] = [int(v) for v in model.to_dataset_ids.numpy()]
    return entry


class DeployGraph(paddle.nn.Layer):
    """What the export traces: the detector's predictions, its post-processor's candidates and
    selection (the evaluation's ``bbox`` / ``bbox_num``), and the candidates as outputs.
    Takes over ``model`` (an export's own instance): its forward returns the raw predictions."""

    def __init__(self, model):
        super().__init__()
        if not isinstance(model.post_process, DACNMSPostProcess):
            raise ValueError(
                f"export needs DACDETR.post_process: DACNMSPostProcess, got "
                f"{type(model.post_process).__name__}"
            )
        model.exclude_post_process = True
        self.model = model

    def forward(self, inputs):
        raw = self.model(inputs)
        post = self.model.post_process
        boxes_px, scores = post.candidates(
            raw["pred_logits"], raw["pred_boxes"], inputs["im_shape"], inputs["scale_factor"]
        )
        out = dict(self.model._to_dataset_labels(*post.select(boxes_px, scores)))
        out["nms_boxes"], out["nms_scores"] = boxes_px, scores
        return out


def infer_config(cfg, attention, image_shape, model, names_from="TestDataset"):
    """The infer_cfg.yml content: ppdet's keys in ppdet's order, then ours (the class names
    from ``names_from``'s annotation file unless the config sets label_list)."""
    return OrderedDict(
        [
            ("mode", "paddle"),
            ("draw_threshold", float(cfg.get("draw_threshold", 0.5))),
            ("metric", cfg["metric"]),
            ("use_dynamic_shape", image_shape[2] == -1),
            ("arch", DEPLOY_ARCH),
            ("min_subgraph_size", MIN_SUBGRAPH_SIZE),
            ("Preprocess", preprocess_list(cfg, image_shape)),
            ("label_list", class_names(cfg, num_output_labels(model, cfg), names_from)),
            ("architecture", cfg["architecture"]),
            ("attention", attention),
            ("input_names", list(INPUT_NAMES)),
            ("output_names", list(OUTPUT_NAMES)),
            ("NMS", nms_config(model)),
        ]
        + list(input_limits(model).items())
    )


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
        load_model_weights(model, weights)  # restricted reader; every tensor must fit
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
    return save_exported(cfg, build_model(cfg, weights), output_dir, attention)


def save_exported(cfg, model, output_dir, attention, names_from="TestDataset"):
    """Trace ``model`` (an eval-mode instance of ``cfg.architecture`` that the export takes
    over) and write the inference model and its infer_cfg.yml into ``output_dir`` (class names:
    see class_names; ``names_from`` the dataset section whose annotation file gives them)."""
    image_shape = _image_shape(cfg)
    # the class names are checked first: a wrong count fails before any tracing
    content = infer_config(cfg, attention, image_shape, model, names_from)
    os.makedirs(output_dir, exist_ok=True)
    _mark_not_to_static()
    previous = ops.force_reference(attention == "reference")
    try:
        with export_notices_dropped():  # Paddle's PIR tracing notices (ppdet_dac/_notices.py)
            static_model = paddle.jit.to_static(
                DeployGraph(model), input_spec=input_spec(image_shape), full_graph=True
            )
            paddle.jit.save(static_model, os.path.join(output_dir, MODEL_PREFIX))
    finally:
        ops.force_reference(previous)
    path = write_infer_config(content, output_dir)
    logger.info(
        f"exported {cfg['architecture']} (attention: {attention}) to {output_dir} "
        f"({INFER_CFG}: {path})"
    )
    return output_dir
