"""Paddle Inference predictor for an exported ppdet_dac model (shared by deploy/ and tools/).

``Predictor(model_dir)`` reads ``infer_cfg.yml`` and the model (``model.json`` or
``model.pdmodel`` + ``model.pdiparams``) written by ``ppdet_dac.deploy.export``, registers the
ms_deform_attn op library when the model was exported with ``attention: op``, and turns images
(file paths, encoded bytes or BGR arrays) into detections: one float32 [N, 6] array per image,
rows (label, score, x1, y1, x2, y2) in original-image pixels, clipped to the image.

Deployment options (``Predictor(..., nms_threshold, score_threshold, slicing)``, the same flags
in deploy/python/infer.py, tools/infer.py and the service):

* ``nms_threshold``: the class-wise NMS re-run at this IoU threshold on the candidates the graph
  outputs (``nms_boxes``, ``nms_scores``), by the post-processor's own selection code: the result
  equals that of an export at this threshold, without re-exporting.
* ``score_threshold``: detections below it are dropped (the same as dropping them after an
  export, as a score filter commutes with greedy NMS and the top-k cut).
* ``slicing`` (``ppdet_dac.deploy.slicing.SliceConfig``): large images in overlapping tiles,
  detections mapped back and merged.

Boxes are clipped to the image in every output of ``run`` / ``predict`` (and so in the tools, the
service and the drawings); ``run_model`` gives the graph's own unclipped outputs, which the COCO
evaluation reports (the official code does not clip).

Preprocessing follows the ``Preprocess`` list of infer_cfg.yml (ppdet's reader ops: Resize with
keep_ratio, NormalizeImage, Permute, PadStride); a batch is padded to its largest image and the
``pad_mask`` input marks the real pixels.

Inputs the model cannot take are refused with a ValueError naming the image, before inference:
more pixels than ``max_pixels`` (read from the file header, nothing decoded; see
``ppdet_dac.data.image_io``), and aspect ratios so extreme that the resized image has a side under
one pixel or fewer feature positions than the queries the two-stage encoder selects
(``feature_strides`` and ``num_queries`` of infer_cfg.yml).

On CPU the predictor runs with oneDNN (``enable_mkldnn=True``, the default): 2-3x faster than
Paddle's plain CPU kernels with the same detections (benchmarks/RESULTS.md, tests/deploy).
"""
import argparse
import math
import os
import threading

import cv2
import numpy as np
import paddle
import yaml
from ppdet.utils.logger import setup_logger

from ppdet_dac import ops
from ppdet_dac.data.image_io import (DEFAULT_MAX_PIXELS, ImageSizeError, check_max_pixels,
                                     decode_checked, read_bgr)
from ppdet_dac.deploy.outputs import (  # noqa: F401  (the tools import them from here)
    IMAGE_EXTS, check_output_dir, drawing_name, list_inputs, print_run_outcome, write_json,
    write_summary)
from ppdet_dac.deploy.slicing import (COMBINE_METHODS, MATCH_METRICS, SliceConfig,
                                      sliced_detections)
from ppdet_dac.deploy.visualize import draw_detections

logger = setup_logger(__name__)

INFER_CFG = "infer_cfg.yml"
MODEL_FILES = ("model.json", "model.pdmodel")  # Paddle 3 (PIR) first, then the legacy program
PARAMS_FILE = "model.pdiparams"
DEVICES = ("CPU", "GPU")
RUN_MODES = ("paddle", "trt_fp32", "trt_fp16")


# ---------------------------------------------------------------- infer_cfg.yml
class InferConfig:
    """The parts of infer_cfg.yml the predictor uses; errors name the file and the key."""

    def __init__(self, model_dir):
        self.path = os.path.join(model_dir, INFER_CFG)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"{self.path} not found: export the model with "
                                    "tools/export_model.py first")
        with open(self.path) as f:
            raw = yaml.safe_load(f) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{self.path}: expected a mapping, got {type(raw).__name__}")
        self.raw = raw
        self.preprocess = self._require("Preprocess", list)
        self.label_list = [str(n) for n in raw.get("label_list", [])]
        self.draw_threshold = float(raw.get("draw_threshold", 0.5))
        self.attention = raw.get("attention", "reference")
        if self.attention not in ("op", "reference"):
            raise ValueError(f"{self.path}: attention must be 'op' or 'reference', "
                             f"got {self.attention!r}")
        self.min_subgraph_size = int(raw.get("min_subgraph_size", 3))
        self.arch = raw.get("arch")
        # the input-size limits of the graph (absent from exports made before they were written)
        self.feature_strides = [int(v) for v in raw.get("feature_strides") or []]
        self.num_queries = int(raw.get("num_queries") or 0)
        # the graph's outputs (first ones) and its NMS; exports made before these keys were
        # written output bbox and bbox_num only
        self.output_names = [str(n) for n in raw.get("output_names") or ["bbox", "bbox_num"]]
        self.nms = raw.get("NMS")
        if self.nms is not None:
            if not isinstance(self.nms, dict) or not {"nms_threshold", "nms_top_k",
                                                      "keep_top_k"} <= set(self.nms):
                raise ValueError(f"{self.path}: 'NMS' must be a mapping with nms_threshold, "
                                 f"nms_top_k and keep_top_k, got {self.nms!r}")

    def _require(self, key, kind):
        if key not in self.raw:
            raise ValueError(f"{self.path}: missing key '{key}'")
        if not isinstance(self.raw[key], kind):
            raise ValueError(f"{self.path}: '{key}' must be a {kind.__name__}, "
                             f"got {self.raw[key]!r}")
        return self.raw[key]


# ---------------------------------------------------------------- preprocessing
class ImageShapeError(ValueError):
    """An image whose size or aspect ratio the model cannot take; the message names it."""


def describe_image(image):
    """How messages name an input: its file path, 'the image' (bytes) or the array's shape."""
    if isinstance(image, np.ndarray):
        return f"the image array of shape {list(image.shape)}"
    if isinstance(image, (bytes, bytearray, memoryview)):
        return "the image"
    return f"image file {image}"


def decode_image(image, max_pixels=DEFAULT_MAX_PIXELS):
    """A file path, encoded bytes or a BGR uint8 [H, W, 3] array -> RGB uint8 [H, W, 3].

    Files and bytes decode as in training (``DACDecode``): stored orientation, the EXIF
    orientation tag ignored, and an image whose header declares more than ``max_pixels`` pixels
    refused before decoding (``ppdet_dac.data.image_io``). Raises FileNotFoundError /
    ImageSizeError / ValueError naming the file (or saying the bytes are not an image).
    """
    what = describe_image(image)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a BGR uint8 image array [H, W, 3], got {what} "
                             f"({image.dtype})")
        if image.shape[0] * image.shape[1] > max_pixels:
            raise ImageSizeError(f"{what} has {image.shape[0] * image.shape[1]} pixels, over the "
                                 f"limit of {max_pixels} pixels (max_pixels)")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = image
    else:
        if not os.path.isfile(image):
            raise FileNotFoundError(f"image file not found: {image}")
        try:
            data = np.fromfile(image, dtype=np.uint8)
        except OSError as err:
            raise OSError(f"cannot read {what}: {err}") from None
    return cv2.cvtColor(decode_checked(data, max_pixels, what), cv2.COLOR_BGR2RGB)


class _Resize:
    """ppdet Resize: keep_ratio scales the short side to min(target) unless the long side would
    exceed max(target); otherwise stretch to target_size [h, w]."""

    def __init__(self, target_size, keep_ratio=True, interp=cv2.INTER_LINEAR):
        self.target_size = [int(v) for v in (target_size if isinstance(target_size, (list, tuple))
                                             else [target_size, target_size])]
        self.keep_ratio, self.interp = bool(keep_ratio), int(interp)

    def scales(self, h, w):
        """(sy, sx, out_h, out_w) for an h x w image; out_* unrounded (ppdet's im_shape)."""
        if self.keep_ratio:
            sy = sx = min(min(self.target_size) / min(h, w), max(self.target_size) / max(h, w))
            return sy, sx, sy * h, sx * w
        out_h, out_w = self.target_size
        return out_h / h, out_w / w, out_h, out_w

    def pixel_size(self, h, w):
        """(rows, cols) cv2.resize produces: the scaled sides rounded to nearest (cvRound)."""
        sy, sx = self.scales(h, w)[:2]
        return int(np.rint(h * sy)), int(np.rint(w * sx))

    def __call__(self, im, info):
        h, w = im.shape[:2]
        sy, sx, out_h, out_w = self.scales(h, w)
        im = cv2.resize(im, None, None, fx=sx, fy=sy, interpolation=self.interp)
        info["im_shape"] = np.array([out_h, out_w], dtype=np.float32)
        info["scale_factor"] = info["scale_factor"] * np.array([sy, sx], dtype=np.float32)
        return im


class _NormalizeImage:
    def __init__(self, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), is_scale=True,
                 norm_type="mean_std"):
        # float64 statistics applied in place to float32 pixels, as ppdet's reader does
        self.mean = np.asarray(mean, dtype=np.float64)[None, None, :]
        self.std = np.asarray(std, dtype=np.float64)[None, None, :]
        self.is_scale, self.norm_type = bool(is_scale), norm_type

    def __call__(self, im, info):
        im = im.astype(np.float32)
        if self.is_scale:
            im *= 1.0 / 255.0
        if self.norm_type == "mean_std":
            im -= self.mean
            im /= self.std
        return im


class _Permute:
    def __call__(self, im, info):
        return np.ascontiguousarray(im.transpose(2, 0, 1))


class _PadStride:
    """Marks the stride the batch padder rounds H and W up to (padding happens per batch)."""

    def __init__(self, stride=0):
        self.stride = int(stride)

    def __call__(self, im, info):
        info["stride"] = max(self.stride, info.get("stride", 0))
        return im


_PREPROCESS_OPS = {"Resize": _Resize, "NormalizeImage": _NormalizeImage, "Permute": _Permute,
                   "PadStride": _PadStride}


class Preprocessor:
    """Builds the op list from infer_cfg.yml's Preprocess and batches images.

    feature_strides / num_queries (infer_cfg.yml): the strides of the encoder's feature levels
    and the number of proposals its top-k selects; ``check_size`` refuses an image that would
    give fewer feature positions. max_pixels: the decoded-size limit (``decode_image``).
    """

    def __init__(self, steps, source=INFER_CFG, feature_strides=(), num_queries=0,
                 max_pixels=DEFAULT_MAX_PIXELS):
        self.feature_strides = [int(s) for s in feature_strides]
        self.num_queries = int(num_queries)
        self.max_pixels = check_max_pixels(max_pixels)
        self.ops = []
        for i, step in enumerate(steps):
            step = dict(step)
            name = step.pop("type", None)
            if name not in _PREPROCESS_OPS:
                raise ValueError(f"{source}: Preprocess[{i}] has type {name!r}; supported: "
                                 f"{sorted(_PREPROCESS_OPS)}")
            try:
                self.ops.append(_PREPROCESS_OPS[name](**step))
            except TypeError as err:
                raise ValueError(f"{source}: Preprocess[{i}] ({name}) has bad arguments "
                                 f"{step}: {err}") from err
        if not any(isinstance(op, _Permute) for op in self.ops):
            raise ValueError(f"{source}: Preprocess has no Permute (the model takes CHW images)")

    def model_input_size(self, h, w):
        """(rows, cols) of the tensor an h x w image becomes: resized, then padded to the
        PadStride stride (as a batch of one)."""
        stride = 0
        for op in self.ops:
            if isinstance(op, _Resize):
                h, w = op.pixel_size(h, w)
            elif isinstance(op, _PadStride):
                stride = max(stride, op.stride)
        if stride > 0 and h > 0 and w > 0:
            h, w = -(-h // stride) * stride, -(-w // stride) * stride
        return h, w

    def check_size(self, h, w, what="the image"):
        """ImageShapeError naming ``what`` when an h x w image cannot go through the model: a
        side resized to under one pixel, or fewer feature positions (sum over the levels of
        ceil(rows / stride) * ceil(cols / stride)) than the num_queries proposals the encoder's
        top-k selects. Returns the model input size (rows, cols)."""
        rows, cols = self.model_input_size(h, w)
        shape = f"{what} is {w} x {h} pixels (width x height, aspect ratio " \
                f"{max(w, h) / max(min(w, h), 1):.0f}:1)"
        if rows < 1 or cols < 1:
            raise ImageShapeError(f"{shape}: resized for this model a side would be "
                                  f"{min(rows, cols)} pixels; the model takes less extreme "
                                  "aspect ratios")
        if self.num_queries and self.feature_strides:
            positions = sum(math.ceil(rows / s) * math.ceil(cols / s)
                            for s in self.feature_strides)
            if positions < self.num_queries:
                raise ImageShapeError(
                    f"{shape}: resized to {cols} x {rows} it gives {positions} feature positions "
                    f"(strides {self.feature_strides}), fewer than the {self.num_queries} "
                    "proposals the model selects (num_queries); the model takes less extreme "
                    "aspect ratios")
        return rows, cols

    def one(self, image):
        """One image -> (float32 [3, h, w], {'im_shape', 'scale_factor', 'stride'}).

        Raises FileNotFoundError / ValueError (ImageSizeError, ImageShapeError) naming the image
        when it cannot be read, is over max_pixels, or has a size the model cannot take."""
        im = decode_image(image, self.max_pixels)
        self.check_size(im.shape[0], im.shape[1], describe_image(image))
        return self.transform(im)

    def transform(self, im):
        """A decoded RGB uint8 [H, W, 3] array -> ``one()``'s (CHW float32, info); no checks."""
        info = {"im_shape": np.array(im.shape[:2], dtype=np.float32),
                "scale_factor": np.ones(2, dtype=np.float32), "stride": 0}
        for op in self.ops:
            im = op(im, info)
        return im.astype(np.float32, copy=False), info

    def batch(self, images):
        """Images -> the feed dict: image [B, 3, H, W] zero-padded to the largest (rounded up to
        the PadStride stride), pad_mask [B, H, W] (1 = image), im_shape, scale_factor [B, 2]."""
        return self.stack([self.one(im) for im in images])

    @staticmethod
    def stack(items):
        """``one()`` results -> the feed dict of ``batch()``."""
        stride = max(info["stride"] for _, info in items)
        h = max(im.shape[1] for im, _ in items)
        w = max(im.shape[2] for im, _ in items)
        if stride > 0:
            h, w = -(-h // stride) * stride, -(-w // stride) * stride
        image = np.zeros((len(items), 3, h, w), dtype=np.float32)
        pad_mask = np.zeros((len(items), h, w), dtype=np.float32)
        for i, (im, _) in enumerate(items):
            image[i, :, :im.shape[1], :im.shape[2]] = im
            pad_mask[i, :im.shape[1], :im.shape[2]] = 1.0
        return {"image": image, "pad_mask": pad_mask,
                "im_shape": np.stack([info["im_shape"] for _, info in items]),
                "scale_factor": np.stack([info["scale_factor"] for _, info in items])}


# ---------------------------------------------------------------- the predictor
def find_model_file(model_dir):
    """model.json (Paddle 3) or model.pdmodel (Paddle 2.x) in model_dir, with model.pdiparams."""
    params = os.path.join(model_dir, PARAMS_FILE)
    for name in MODEL_FILES:
        path = os.path.join(model_dir, name)
        if os.path.isfile(path):
            if not os.path.isfile(params):
                raise FileNotFoundError(f"{params} not found next to {path}")
            return path, params
    raise FileNotFoundError(f"no {' or '.join(MODEL_FILES)} in {model_dir}")


def make_inference_config(model_dir, device="CPU", cpu_threads=1, enable_mkldnn=True,
                          gpu_id=0, run_mode="paddle", min_subgraph_size=3, trt_max_shape=1333):
    """paddle.inference.Config for the model in model_dir.

    CPU: ``cpu_threads`` math threads; oneDNN unless ``enable_mkldnn`` is False (on Paddle 3.3
    oneDNN's placement pass cannot run this graph's dynamic-size interpolation, so that pass is
    dropped and oneDNN keeps its fusion passes; the detections agree with the plain CPU kernels,
    tests/deploy/test_export_predictor.py). GPU (CUDA builds only): ``run_mode`` paddle or TensorRT
    fp32/fp16 with dynamic input shapes. Memory optimisation stays off: under PIR it breaks
    create_predictor on Paddle 3.3.
    """
    from paddle import inference

    model_file, params_file = find_model_file(model_dir)
    device = device.upper()
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if run_mode not in RUN_MODES:
        raise ValueError(f"run_mode must be one of {RUN_MODES}, got {run_mode!r}")
    config = inference.Config(model_file, params_file)
    if device == "GPU":
        if not paddle.is_compiled_with_cuda():
            raise ValueError("device GPU needs a CUDA build of Paddle; this one is CPU-only "
                             f"(paddle {paddle.__version__}); use --device CPU")
        config.enable_use_gpu(200, int(gpu_id))
        if run_mode != "paddle":
            precision = (inference.PrecisionType.Half if run_mode == "trt_fp16"
                         else inference.PrecisionType.Float32)
            config.enable_tensorrt_engine(workspace_size=1 << 30, max_batch_size=1,
                                          min_subgraph_size=int(min_subgraph_size),
                                          precision_mode=precision, use_static=False,
                                          use_calib_mode=False)
            m = int(trt_max_shape)
            config.set_trt_dynamic_shape_info(
                {"image": [1, 3, 32, 32], "pad_mask": [1, 32, 32]},
                {"image": [1, 3, m, m], "pad_mask": [1, m, m]},
                {"image": [1, 3, 640, 640], "pad_mask": [1, 640, 640]})
    else:
        if run_mode != "paddle":
            raise ValueError(f"run_mode {run_mode} (TensorRT) needs --device GPU")
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(int(cpu_threads))
        if enable_mkldnn:
            config.enable_mkldnn()
            config.delete_pass("onednn_placement_pass")
        else:
            config.disable_mkldnn()
    config.switch_ir_optim(True)
    config.disable_glog_info()
    return config


class Predictor:
    """An exported ppdet_dac model behind paddle.inference.

    ``predict(images)`` -> list of float32 [N_i, 6] arrays; ``run(feeds)`` -> (bbox, bbox_num);
    both apply the deployment options and clip the boxes to each image; ``run_model(feeds)``
    gives the graph's raw outputs. One Predictor serves one thread at a time; ``clone()`` gives
    another that shares the weights.

    enable_mkldnn: oneDNN on CPU (default True; False runs Paddle's plain CPU kernels).
    max_pixels: images whose header declares more pixels are refused before decoding.
    nms_threshold: re-run the class-wise NMS at this IoU threshold (None: the exported one).
    score_threshold: drop detections scoring below it. slicing: a SliceConfig for sliced
    inference (None: whole images). batch_size: tiles per model run when slicing.
    """

    def __init__(self, model_dir, device="CPU", cpu_threads=1, enable_mkldnn=True, gpu_id=0,
                 run_mode="paddle", max_pixels=DEFAULT_MAX_PIXELS, nms_threshold=None,
                 score_threshold=0.0, slicing=None, batch_size=1, _predictor=None,
                 _infer_cfg=None):
        self.model_dir = model_dir
        self.infer_cfg = _infer_cfg or InferConfig(model_dir)
        self.max_pixels = check_max_pixels(max_pixels)
        self.preprocessor = Preprocessor(self.infer_cfg.preprocess, self.infer_cfg.path,
                                         self.infer_cfg.feature_strides,
                                         self.infer_cfg.num_queries, self.max_pixels)
        self.label_list = self.infer_cfg.label_list
        self.nms_threshold = self._check_nms_threshold(nms_threshold)
        self.score_threshold = float(score_threshold)
        if slicing is not None and not isinstance(slicing, SliceConfig):
            raise ValueError(f"slicing must be a SliceConfig or None, got {slicing!r}")
        self.slicing, self.batch_size = slicing, max(int(batch_size), 1)
        self._lock = threading.Lock()
        if _predictor is None:
            if self.infer_cfg.attention == "op":
                ops.register_op_library()  # raises naming why when the op library is missing
            from paddle import inference
            config = make_inference_config(model_dir, device, cpu_threads, enable_mkldnn, gpu_id,
                                           run_mode, self.infer_cfg.min_subgraph_size)
            enable_mkldnn = bool(config.mkldnn_enabled())
            _predictor = inference.create_predictor(config)
        self.enable_mkldnn = enable_mkldnn  # oneDNN as the inference config has it
        self._predictor = _predictor
        self.input_names = list(self._predictor.get_input_names())
        self.output_names = list(self._predictor.get_output_names())
        if len(self.output_names) < len(self.infer_cfg.output_names):
            raise ValueError(f"{self.infer_cfg.path}: output_names lists "
                             f"{self.infer_cfg.output_names}, but the model has "
                             f"{len(self.output_names)} outputs; re-export the model")
        self._outputs = dict(zip(self.infer_cfg.output_names, self.output_names))

    def _check_nms_threshold(self, value):
        """None, or a threshold in [0, 1] that this export can re-apply (ValueError naming
        infer_cfg.yml when the export predates the candidates output)."""
        if value is None:
            return None
        value = float(value)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"nms_threshold must be in [0, 1], got {value}")
        missing = {"nms_boxes", "nms_scores"} - set(self.infer_cfg.output_names)
        if missing or self.infer_cfg.nms is None:
            raise ValueError(f"{self.infer_cfg.path}: this export has no NMS candidates output "
                             "(nms_boxes, nms_scores) to re-run the NMS on; re-export the model "
                             "with tools/export_model.py to use nms_threshold")
        return value

    def clone(self):
        """Another Predictor on the same weights and options (for a pool of threads)."""
        return Predictor(self.model_dir, enable_mkldnn=self.enable_mkldnn,
                         max_pixels=self.max_pixels, nms_threshold=self.nms_threshold,
                         score_threshold=self.score_threshold, slicing=self.slicing,
                         batch_size=self.batch_size, _predictor=self._predictor.clone(),
                         _infer_cfg=self.infer_cfg)

    def run_model(self, feeds, outputs=("bbox", "bbox_num")):
        """feeds: {input name: array} -> {output: array} for the named graph outputs (infer_cfg's
        output_names: bbox, bbox_num, nms_boxes, nms_scores), as the graph computes them:
        boxes unclipped, at the exported NMS threshold, no score filter."""
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ValueError(f"inputs {missing} missing; the model takes {self.input_names}")
        unknown = [n for n in outputs if n not in self._outputs]
        if unknown:
            raise ValueError(f"outputs {unknown} not in this export's "
                             f"{list(self._outputs)} ({self.infer_cfg.path})")
        with self._lock:
            for name in self.input_names:
                self._predictor.get_input_handle(name).copy_from_cpu(
                    np.ascontiguousarray(feeds[name]))
            self._predictor.run()
            return {n: self._predictor.get_output_handle(self._outputs[n]).copy_to_cpu()
                    for n in outputs}

    def run(self, feeds):
        """feeds -> (bbox float32 [N, 6], bbox_num int32 [B]): the deployment detections (NMS at
        nms_threshold, score >= score_threshold, boxes clipped to each image)."""
        nms = self.nms_threshold is not None and \
            self.nms_threshold != float(self.infer_cfg.nms["nms_threshold"])
        out = self.run_model(feeds, ("bbox", "bbox_num", "nms_boxes", "nms_scores") if nms
                             else ("bbox", "bbox_num"))
        if nms:
            bbox, bbox_num = reselect(out["nms_boxes"], out["nms_scores"], self.infer_cfg.nms,
                                      self.nms_threshold)
        else:
            bbox, bbox_num = out["bbox"], out["bbox_num"]
        bbox, bbox_num = filter_scores(bbox, bbox_num, self.score_threshold)
        return clip_detections(bbox, bbox_num, image_sizes(feeds)), bbox_num

    def check_size(self, height, width, what="the image"):
        """``Preprocessor.check_size`` for what the model is fed: the image, or its tiles when
        slicing (ImageShapeError naming ``what``)."""
        if self.slicing is None:
            return self.preprocessor.check_size(height, width, what)
        rows, cols = self.slicing.tile_size(height, width)
        return self.preprocessor.check_size(
            rows, cols, f"a {cols} x {rows} tile of {what} ({width} x {height}, slice_size "
                        f"{list(self.slicing.slice_size)})")

    def load(self, image):
        """A path / encoded bytes / BGR array -> RGB uint8 array, after the size checks
        (FileNotFoundError / ValueError naming the image)."""
        im = decode_image(image, self.max_pixels)
        self.check_size(im.shape[0], im.shape[1], describe_image(image))
        return im

    def detect_tiles(self, tiles):
        """RGB arrays (decoded, checked) -> their [N_i, 6] detections, as one batch."""
        bbox, bbox_num = self.run(Preprocessor.stack([self.preprocessor.transform(t)
                                                      for t in tiles]))
        return split_detections(bbox, bbox_num)

    def detect(self, image):
        """One ``load``-ed RGB array -> float32 [N, 6] detections (sliced when configured)."""
        if self.slicing is not None:
            return sliced_detections(image, self.slicing, self.detect_tiles, self.batch_size)
        return self.detect_tiles([image])[0]

    def predict(self, images):
        """images: list of paths / encoded bytes / BGR arrays -> list of [N_i, 6] detections."""
        if not images:
            return []
        if self.slicing is not None:
            return [self.detect(self.load(image)) for image in images]
        bbox, bbox_num = self.run(self.preprocessor.batch(images))
        return split_detections(bbox, bbox_num)


# ---------------------------------------------------------------- deployment post-processing
_SELECT_LOCK = threading.Lock()  # dygraph calls from the service's predictor threads, one at a time


def reselect(nms_boxes, nms_scores, nms, nms_threshold):
    """The exported selection re-run at ``nms_threshold`` on the graph's candidates
    (``DACNMSPostProcess.select`` in dygraph on the CPU, the kernels the graph runs; then
    infer_cfg.yml's ``label_map``, as the model maps labels after its selection): the
    (bbox, bbox_num) an export at that threshold outputs."""
    from ppdet_dac.modeling.post_process import DACNMSPostProcess

    post = DACNMSPostProcess(int(nms["nms_top_k"]), float(nms_threshold), int(nms["keep_top_k"]))
    cpu = paddle.CPUPlace()
    with _SELECT_LOCK, paddle.no_grad():
        bbox, bbox_num = post.select(
            paddle.to_tensor(np.asarray(nms_boxes, np.float32), place=cpu),
            paddle.to_tensor(np.asarray(nms_scores, np.float32), place=cpu))
        bbox, bbox_num = bbox.numpy().reshape(-1, 6), bbox_num.numpy().reshape(-1)
    label_map = nms.get("label_map")
    if label_map is None:
        return bbox, bbox_num.astype(np.int32)
    labels = np.asarray(label_map, np.int64)[bbox[:, 0].astype(np.int64)]
    keep = labels >= 0
    image = np.repeat(np.arange(len(bbox_num)), bbox_num)
    bbox = np.concatenate([labels[:, None].astype(np.float32), bbox[:, 1:]], axis=1)[keep]
    return bbox, np.bincount(image[keep], minlength=len(bbox_num)).astype(np.int32)


def filter_scores(bbox, bbox_num, threshold):
    """(bbox, bbox_num) without the rows scoring below ``threshold``."""
    bbox = np.asarray(bbox, dtype=np.float32).reshape(-1, 6)
    bbox_num = np.asarray(bbox_num).reshape(-1)
    keep = bbox[:, 1] >= threshold
    if keep.all():
        return bbox, bbox_num
    image = np.repeat(np.arange(len(bbox_num)), bbox_num.astype(np.int64))
    return bbox[keep], np.bincount(image[keep], minlength=len(bbox_num)).astype(bbox_num.dtype)


def image_sizes(feeds):
    """[B, 2] (height, width) of the original images of a feed dict, as the post-processor
    computes it: floor(im_shape / scale_factor + 0.5) in float32."""
    return np.floor(np.asarray(feeds["im_shape"], np.float32)
                    / np.asarray(feeds["scale_factor"], np.float32) + np.float32(0.5))


def clip_detections(bbox, bbox_num, sizes):
    """A copy of the rows with x clipped to [0, width] and y to [0, height] of their image
    (``sizes``: [B, 2] height, width)."""
    bbox = np.array(bbox, dtype=np.float32).reshape(-1, 6)
    sizes = np.asarray(sizes, np.float32).reshape(-1, 2)
    per_row = np.repeat(sizes, np.asarray(bbox_num).reshape(-1).astype(np.int64), axis=0)
    height, width = per_row[:, :1], per_row[:, 1:]
    bbox[:, [2, 4]] = np.clip(bbox[:, [2, 4]], 0, width)
    bbox[:, [3, 5]] = np.clip(bbox[:, [3, 5]], 0, height)
    return bbox


def split_detections(bbox, bbox_num):
    """[ΣN, 6] rows + per-image counts -> list of per-image [N_i, 6] float32 arrays."""
    bbox = np.asarray(bbox, dtype=np.float32).reshape(-1, 6)
    ends = np.cumsum(np.asarray(bbox_num).reshape(-1).astype(np.int64))
    return [bbox[s:e] for s, e in zip(np.concatenate([[0], ends[:-1]]), ends)]


# ---------------------------------------------------------------- command-line options
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _bool_value(text):
    value = str(text).strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def add_cpu_options(parser):
    """oneDNN and pixel-limit options shared by deploy/python/infer.py, the service and the
    benchmark: ``--disable_mkldnn``, ppdet's ``--enable_mkldnn`` (bare, or ``=True/False``; kept
    for compatibility, oneDNN being the default), ``--max_pixels``."""
    parser.add_argument("--enable_mkldnn", type=_bool_value, nargs="?", const=True, default=None,
                        help="oneDNN on CPU (the default; ppdet's flag, also --enable_mkldnn "
                             "False)")
    parser.add_argument("--disable_mkldnn", action="store_true",
                        help="run Paddle's plain CPU kernels instead of oneDNN (2-3x slower)")
    parser.add_argument("--max_pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="refuse images whose header declares more pixels (width x height), "
                             "before decoding them")


def mkldnn_from_args(args, parser=None):
    """True unless --disable_mkldnn or --enable_mkldnn False; both together is an error."""
    if args.disable_mkldnn and args.enable_mkldnn:
        message = "--enable_mkldnn and --disable_mkldnn contradict each other; give one"
        if parser is not None:
            parser.error(message)
        raise ValueError(message)
    return not args.disable_mkldnn and args.enable_mkldnn is not False


def add_detection_options(parser, nms=True):
    """The deployment options of deploy/python/infer.py, tools/infer.py and the service, in
    ppdet's names: ``--score_threshold``, ``--nms_threshold`` (unless ``nms`` is False),
    ``--slice_infer``, ``--slice_size H W``, ``--overlap_ratio H W``, ``--combine_method``,
    ``--match_threshold``, ``--match_metric``."""
    defaults = SliceConfig()
    if nms:
        parser.add_argument("--nms_threshold", type=float, default=None,
                            help="re-run the class-wise NMS at this IoU threshold (default: the "
                                 "exported one, infer_cfg.yml NMS.nms_threshold); the same "
                                 "detections as an export at that threshold")
    parser.add_argument("--score_threshold", type=float, default=0.0,
                        help="drop detections scoring below this (JSON, drawings and answers)")
    parser.add_argument("--slice_infer", action="store_true",
                        help="sliced inference for large images: overlapping tiles of "
                             "--slice_size, detections mapped back and merged")
    parser.add_argument("--slice_size", nargs=2, type=int, default=list(defaults.slice_size),
                        metavar=("H", "W"), help="tile height and width in pixels")
    parser.add_argument("--overlap_ratio", nargs=2, type=float,
                        default=list(defaults.overlap_ratio), metavar=("H", "W"),
                        help="overlap of neighbouring tiles, as a fraction of the tile side")
    parser.add_argument("--combine_method", choices=COMBINE_METHODS,
                        default=defaults.combine_method,
                        help="nms: one detection per object (class-wise NMS over the tiles); "
                             "concat: every tile's detections")
    parser.add_argument("--match_threshold", type=float, default=defaults.match_threshold,
                        help="nms merge: drop a detection whose overlap with a kept one of its "
                             "class is above this")
    parser.add_argument("--match_metric", choices=MATCH_METRICS, default=defaults.match_metric,
                        help="nms merge overlap: ios (intersection over the smaller box) or iou")


def detection_options_from_args(args, parser=None):
    """{'nms_threshold', 'score_threshold', 'slicing'} of ``add_detection_options``' flags (a
    parser error, or ValueError without a parser, naming the bad flag)."""
    try:
        nms = getattr(args, "nms_threshold", None)
        if nms is not None and not 0.0 <= nms <= 1.0:
            raise ValueError(f"--nms_threshold must be in [0, 1], got {nms}")
        if not 0.0 <= args.score_threshold <= 1.0:
            raise ValueError(f"--score_threshold must be in [0, 1], got {args.score_threshold}")
        slicing = None
        if args.slice_infer:
            slicing = SliceConfig(tuple(args.slice_size), tuple(args.overlap_ratio),
                                  args.combine_method, args.match_threshold, args.match_metric)
    except ValueError as err:
        message = str(err)
        for name in ("slice_size", "overlap_ratio", "combine_method", "match_threshold",
                     "match_metric"):
            if message.startswith(name):
                message = "--" + message
        if parser is not None:
            parser.error(message)
        raise ValueError(message) from None
    return {"nms_threshold": nms, "score_threshold": float(args.score_threshold),
            "slicing": slicing}


# ---------------------------------------------------------------- results
def detection_records(detections, label_list=None, threshold=0.0):
    """[N, 6] rows -> JSON-ready dicts {class_id, label, score, bbox [x1, y1, x2, y2]} with
    score >= threshold, highest score first."""
    rows = np.asarray(detections, dtype=np.float64).reshape(-1, 6)
    rows = rows[np.argsort(-rows[:, 1], kind="stable")]
    records = []
    for label, score, x1, y1, x2, y2 in rows:
        if score < threshold:
            continue
        cid = int(label)
        name = label_list[cid] if label_list and 0 <= cid < len(label_list) else str(cid)
        records.append({"class_id": cid, "label": name, "score": float(score),
                        "bbox": [float(x1), float(y1), float(x2), float(y2)]})
    return records


def list_images(image_file=None, image_dir=None):
    """The image paths of ``list_inputs`` (the tools use ``list_inputs``, which also returns
    the folder's files that are not read)."""
    return list_inputs(image_file, image_dir)[0]


def save_results(image_paths, detections, output_dir, label_list=None, threshold=0.5,
                 image_dir=None):
    """Write <output_dir>/<image file name>.png (``outputs.drawing_name``: x.jpg -> x.jpg.png)
    with the detections >= threshold drawn, and <output_dir>/detections.json {image path: all
    detection records}. Returns the JSON path. ValueError (``outputs.check_output_dir``) when
    ``output_dir`` holds the input images (or is ``image_dir``) or two drawings would share a
    name."""
    check_output_dir(output_dir, image_paths, image_dir)
    os.makedirs(output_dir, exist_ok=True)
    results = {}
    for path, dets in zip(image_paths, detections):
        image = read_bgr(path)   # the pixels the model saw (EXIF orientation ignored)
        if image is None:
            raise ValueError(f"cannot read image file {path}")
        canvas, _ = draw_detections(image, dets, label_list, threshold)
        out = os.path.join(output_dir, drawing_name(path))
        if not cv2.imwrite(out, canvas):
            raise OSError(f"cannot write {out}")
        results[path] = detection_records(dets, label_list)
        logger.info(f"{path}: {sum(r['score'] >= threshold for r in results[path])} detections "
                    f">= {threshold} drawn to {out}")
    return write_json(os.path.join(output_dir, "detections.json"), results)


def predict_files(predictor, paths, batch_size=1):
    """Run ``predictor`` over image files, going on past the ones it cannot take.

    Each file that cannot be read or decoded, is over the predictor's max_pixels, or has a size
    the model cannot take is logged (file and reason) and left out; the others are predicted in
    batches of ``batch_size`` (of tiles, one image at a time, when the predictor slices).
    Returns ({path: float32 [N, 6] detections} in input order, [{"file": path, "error":
    reason}] of the files left out).
    """
    batch_size = max(int(batch_size), 1)
    results, failures, pending = {}, [], []
    if predictor.slicing is not None:
        for path in paths:
            try:
                image = predictor.load(path)
            except (OSError, ValueError) as err:  # unreadable, not an image, too large, too thin
                logger.error(f"skipping {path}: {err}")
                failures.append({"file": path, "error": str(err)})
                continue
            results[path] = sliced_detections(image, predictor.slicing, predictor.detect_tiles,
                                              batch_size)
        return results, failures

    def flush():
        if pending:
            bbox, bbox_num = predictor.run(Preprocessor.stack([item for _, item in pending]))
            for (path, _), dets in zip(pending, split_detections(bbox, bbox_num)):
                results[path] = dets
            pending.clear()

    for path in paths:
        try:
            item = predictor.preprocessor.one(path)
        except (OSError, ValueError) as err:  # unreadable, not an image, too large, too thin
            logger.error(f"skipping {path}: {err}")
            failures.append({"file": path, "error": str(err)})
            continue
        pending.append((path, item))
        if len(pending) == batch_size:
            flush()
    flush()
    return results, failures
