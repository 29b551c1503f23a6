"""Paddle Inference predictor for an exported ppdet_dac model (shared by deploy/ and tools/).

``Predictor(model_dir)`` reads ``infer_cfg.yml`` and the model (``model.json`` or
``model.pdmodel`` + ``model.pdiparams``) written by ``ppdet_dac.deploy.export``, registers the
ms_deform_attn op library when the model was exported with ``attention: op``, and turns images
(file paths, encoded bytes or BGR arrays) into detections: one float32 [N, 6] array per image,
rows (label, score, x1, y1, x2, y2) in original-image pixels, clipped to the image.

Deployment options (``Predictor(..., nms_threshold, score_threshold, slicing)``, the same flags
in deploy/python/infer.py, tools/infer.py and the service; ``ppdet_dac.deploy.cli_options``):

* ``nms_threshold``: the class-wise NMS re-run at this IoU threshold on the candidates the graph
  outputs (``nms_boxes``, ``nms_scores``), by the post-processor's own selection code: the result
  equals that of an export at this threshold, without re-exporting.
* ``score_threshold``: detections below it are dropped (the same as dropping them after an
  export, as a score filter commutes with greedy NMS and the top-k cut).
* ``slicing`` (``ppdet_dac.deploy.slicing.SliceConfig``): large images in overlapping tiles,
  detections mapped back and merged.

Boxes are clipped to the image in every output of ``run`` / ``predict`` (and so in the tools, the
service and the drawings); ``run_model`` gives the graph's own unclipped outputs, which the COCO
evaluation reports (the official code does not clip). Preprocessing and the size checks are
``ppdet_dac.deploy.preprocess``'s, the NMS re-run and clipping ``ppdet_dac.deploy.postprocess``'s.

On CPU the predictor runs with oneDNN (``enable_mkldnn=True``, the default): 2-3x faster than
Paddle's plain CPU kernels with the same detections (benchmarks/RESULTS.md, tests/deploy).
"""

import threading

import numpy as np
import paddle

from ppdet_dac import ops
from ppdet_dac.data.image_io import DEFAULT_MAX_PIXELS, check_max_pixels
from ppdet_dac.deploy.infer_config import InferConfig, find_model_file
from ppdet_dac.deploy.postprocess import (
    clip_detections,
    filter_scores,
    image_sizes,
    reselect,
    split_detections,
)
from ppdet_dac.deploy.preprocess import Preprocessor, decode_image, describe_image
from ppdet_dac.deploy.slicing import BigImageHint, SliceConfig, sliced_detections

DEVICES = ("CPU", "GPU")
RUN_MODES = ("paddle", "trt_fp32", "trt_fp16")


def make_inference_config(
    model_dir,
    device="CPU",
    cpu_threads=1,
    enable_mkldnn=True,
    gpu_id=0,
    run_mode="paddle",
    min_subgraph_size=3,
    trt_max_shape=1333,
):
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
            raise ValueError(
                "device GPU needs a CUDA build of Paddle; this one is CPU-only "
                f"(paddle {paddle.__version__}); use --device CPU"
            )
        config.enable_use_gpu(200, int(gpu_id))
        if run_mode != "paddle":
            precision = (
                inference.PrecisionType.Half
                if run_mode == "trt_fp16"
                else inference.PrecisionType.Float32
            )
            config.enable_tensorrt_engine(
                workspace_size=1 << 30,
                max_batch_size=1,
                min_subgraph_size=int(min_subgraph_size),
                precision_mode=precision,
                use_static=False,
                use_calib_mode=False,
            )
            m = int(trt_max_shape)
            config.set_trt_dynamic_shape_info(
                {"image": [1, 3, 32, 32], "pad_mask": [1, 32, 32]},
                {"image": [1, 3, m, m], "pad_mask": [1, m, m]},
                {"image": [1, 3, 640, 640], "pad_mask": [1, 640, 640]},
            )
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

    engine (keywords): ``device``, ``cpu_threads``, ``enable_mkldnn``, ``gpu_id``, ``run_mode``
        as make_inference_config takes them (its defaults: CPU, 1 thread, oneDNN on).
    max_pixels: images whose header declares more pixels are refused before decoding.
    nms_threshold: re-run the class-wise NMS at this IoU threshold (None: the exported one).
    score_threshold: drop detections scoring below it. slicing: a SliceConfig for sliced
    inference (None: whole images). batch_size: tiles per model run when slicing.
    """

    def __init__(
        self,
        model_dir,
        max_pixels=DEFAULT_MAX_PIXELS,
        nms_threshold=None,
        score_threshold=0.0,
        slicing=None,
        batch_size=1,
        _predictor=None,
        _infer_cfg=None,
        **engine,
    ):
        self.model_dir = model_dir
        self.infer_cfg = _infer_cfg or InferConfig(model_dir)
        self.max_pixels = check_max_pixels(max_pixels)
        self.preprocessor = Preprocessor(
            self.infer_cfg.preprocess,
            self.infer_cfg.path,
            self.infer_cfg.feature_strides,
            self.infer_cfg.num_queries,
            self.max_pixels,
        )
        self.label_list = self.infer_cfg.label_list
        self.nms_threshold = self._check_nms_threshold(nms_threshold)
        self.score_threshold = float(score_threshold)
        if slicing is not None and not isinstance(slicing, SliceConfig):
            raise ValueError(f"slicing must be a SliceConfig or None, got {slicing!r}")
        self.slicing, self.batch_size = slicing, max(int(batch_size), 1)
        self.big_image_hint = BigImageHint(self.preprocessor)  # runs without slicing
        self._lock = threading.Lock()
        if _predictor is None:
            if self.infer_cfg.attention == "op":
                ops.register_op_library()  # raises naming why when the op library is missing
            from paddle import inference

            config = make_inference_config(
                model_dir, min_subgraph_size=self.infer_cfg.min_subgraph_size, **engine
            )
            engine["enable_mkldnn"] = bool(config.mkldnn_enabled())
            _predictor = inference.create_predictor(config)
        self.enable_mkldnn = engine.get("enable_mkldnn", True)  # as the inference config has it
        self._predictor = _predictor
        self.input_names = list(self._predictor.get_input_names())
        self.output_names = list(self._predictor.get_output_names())
        if len(self.output_names) < len(self.infer_cfg.output_names):
            raise ValueError(
                f"{self.infer_cfg.path}: output_names lists "
                f"{self.infer_cfg.output_names}, but the model has "
                f"{len(self.output_names)} outputs; re-export the model"
            )
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
            raise ValueError(
                f"{self.infer_cfg.path}: this export has no NMS candidates output "
                "(nms_boxes, nms_scores) to re-run the NMS on; re-export the model "
                "with tools/export_model.py to use nms_threshold"
            )
        return value

    def clone(self):
        """Another Predictor on the same weights and options (for a pool of threads)."""
        return Predictor(
            self.model_dir,
            enable_mkldnn=self.enable_mkldnn,
            max_pixels=self.max_pixels,
            nms_threshold=self.nms_threshold,
            score_threshold=self.score_threshold,
            slicing=self.slicing,
            batch_size=self.batch_size,
            _predictor=self._predictor.clone(),
            _infer_cfg=self.infer_cfg,
        )

    def run_model(self, feeds, outputs=("bbox", "bbox_num")):
        """feeds: {input name: array} -> {output: array} for the named graph outputs (infer_cfg's
        output_names: bbox, bbox_num, nms_boxes, nms_scores), as the graph computes them:
        boxes unclipped, at the exported NMS threshold, no score filter."""
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ValueError(f"inputs {missing} missing; the model takes {self.input_names}")
        unknown = [n for n in outputs if n not in self._outputs]
        if unknown:
            raise ValueError(
                f"outputs {unknown} not in this export's "
                f"{list(self._outputs)} ({self.infer_cfg.path})"
            )
        with self._lock:
            for name in self.input_names:
                self._predictor.get_input_handle(name).copy_from_cpu(
                    np.ascontiguousarray(feeds[name])
                )
            self._predictor.run()
            return {
                n: self._predictor.get_output_handle(self._outputs[n]).copy_to_cpu()
                for n in outputs
            }

    def run(self, feeds):
        """feeds -> (bbox float32 [N, 6], bbox_num int32 [B]): the deployment detections (NMS at
        nms_threshold, score >= score_threshold, boxes clipped to each image)."""
        nms = self.nms_threshold is not None and self.nms_threshold != float(
            self.infer_cfg.nms["nms_threshold"]
        )
        out = self.run_model(
            feeds, ("bbox", "bbox_num", "nms_boxes", "nms_scores") if nms else ("bbox", "bbox_num")
        )
        if nms:
            bbox, bbox_num = reselect(
                out["nms_boxes"], out["nms_scores"], self.infer_cfg.nms, self.nms_threshold
            )
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
            rows,
            cols,
            f"a {cols} x {rows} tile of {what} ({width} x {height}, slice_size "
            f"{list(self.slicing.slice_size)})",
        )

    def load(self, image):
        """A path / encoded bytes / BGR array -> RGB uint8 array, after the size checks
        (FileNotFoundError / ValueError naming the image)."""
        im = decode_image(image, self.max_pixels)
        self.check_size(im.shape[0], im.shape[1], describe_image(image))
        return im

    def detect_tiles(self, tiles):
        """RGB arrays (decoded, checked) -> their [N_i, 6] detections, as one batch."""
        bbox, bbox_num = self.run(
            Preprocessor.stack([self.preprocessor.transform(t) for t in tiles])
        )
        return split_detections(bbox, bbox_num)

    def prepare(self, image, what=None):
        """``load``, then the big-image hint (without slicing), then the model's transform:
        ``Preprocessor.one``'s (CHW float32, info) for ``Preprocessor.stack``."""
        im = self.load(image)
        self.big_image_hint.check(*im.shape[:2], what or describe_image(image))
        return self.preprocessor.transform(im)

    def detect(self, image, what="an image"):
        """One ``load``-ed RGB array -> float32 [N, 6] detections (sliced when configured)."""
        if self.slicing is not None:
            return sliced_detections(image, self.slicing, self.detect_tiles, self.batch_size)
        self.big_image_hint.check(*image.shape[:2], what)
        return self.detect_tiles([image])[0]

    def predict(self, images):
        """images: list of paths / encoded bytes / BGR arrays -> list of [N_i, 6] detections."""
        if not images:
            return []
        if self.slicing is not None:
            return [self.detect(self.load(image)) for image in images]
        bbox, bbox_num = self.run(Preprocessor.stack([self.prepare(image) for image in images]))
        return split_detections(bbox, bbox_num)
