"""Detect objects with a ppdet_dac model in dygraph (no export); write JSON and drawn images.

    python tools/infer.py -c configs/demo/dac_demo.yml -o weights=output/dac_demo/model_final \
        --infer_img demo.jpg | --infer_dir images/ [--output_dir output] [--draw_threshold 0.3] \
        [--max_pixels 40000000] [--score_threshold S] [--nms_threshold N] \
        [--slice_infer [--slice_size 640 640] [--overlap_ratio 0.25 0.25] \
         [--combine_method nms|concat] [--match_threshold 0.6] [--match_metric ios|iou]]

Writes <output_dir>/<image file name>.png (x.jpg -> x.jpg.png), <output_dir>/detections.json
and <output_dir>/summary.json, in the same format as deploy/python/infer.py (the exported
model), so the two can be compared directly; an --output_dir that holds the input images is
refused and files of other formats in --infer_dir are named at the end (as there); boxes are clipped to the image. A file that cannot be read, is
not an image, declares more than --max_pixels pixels (default: the TestReader's DACDecode
max_pixels) or has an aspect ratio the model cannot take is reported (name and reason) and
skipped; the others are processed and written, and the exit status is 1 when any file was
skipped.

``--nms_threshold`` sets the post-processor's NMS IoU threshold (as ``-o
DACNMSPostProcess.nms_iou_threshold=N``); ``--score_threshold`` drops lower-scoring detections;
``--slice_infer`` runs each image in overlapping tiles (ppdet's flags, ppdet_dac.deploy.slicing),
preprocessed as the exported model's predictor does (the TestReader's transforms).
"""

import _threads  # noqa: F401  (before paddle: CPU thread count)
import ppdet_dac  # noqa: F401  (first to load cv2: sets OpenCV's pixel limit; registers classes)

import os

import cv2
import numpy as np
import paddle
from ppdet.utils.cli import ArgsParser
from ppdet.utils.logger import setup_logger

from ppdet_dac.data.image_folder import accept_image_formats
from ppdet_dac.data.image_io import DEFAULT_MAX_PIXELS, check_max_pixels, decode_checked
from ppdet_dac.engine import DACTrainer, config_from_args
from ppdet_dac.deploy.export import (
    class_names,
    input_limits,
    num_output_labels,
    test_preprocess_steps,
)
from ppdet_dac.deploy.cli_options import (
    add_detection_options,
    add_drawing_options,
    detection_options_from_args,
    max_pixels_value,
)
from ppdet_dac.deploy.folder_run import save_results
from ppdet_dac.deploy.outputs import check_output_dir, list_inputs, print_run_outcome
from ppdet_dac.deploy.postprocess import (
    clip_detections,
    filter_scores,
    image_sizes,
    split_detections,
)
from ppdet_dac.deploy.preprocess import Preprocessor
from ppdet_dac.deploy.slicing import BigImageHint, sliced_detections
from ppdet_dac.utils.cli import run_cli

logger = setup_logger("tools.infer")


def parse_args(argv=None):
    parser = ArgsParser()
    parser.add_argument("--infer_img", default=None, help="one image")
    parser.add_argument("--infer_dir", default=None, help="a directory of images")
    parser.add_argument("--output_dir", default="output", help="where the PNGs and JSON go")
    parser.add_argument(
        "--draw_threshold", type=float, default=0.3, help="draw detections with score >= this"
    )
    parser.add_argument(
        "--max_pixels",
        type=max_pixels_value,
        default=None,
        help="refuse images whose header declares more pixels (default: the "
        f"TestReader's DACDecode max_pixels, else {DEFAULT_MAX_PIXELS})",
    )
    add_detection_options(parser)
    add_drawing_options(parser)
    args = parser.parse_args(argv)
    args.detection = detection_options_from_args(args, parser)
    return args


def _decode_steps(cfg):
    """The TestReader's DACDecode argument dicts (created when the entry has none)."""
    steps = []
    for transform in cfg["TestReader"]["sample_transforms"]:
        if "DACDecode" in transform:
            if transform["DACDecode"] is None:
                transform["DACDecode"] = {}
            steps.append(transform["DACDecode"])
    return steps


def pixel_limit(cfg, max_pixels):
    """--max_pixels, else the TestReader's DACDecode max_pixels, else the default; written into
    the TestReader's DACDecode so that the reader applies the limit the files were checked with."""
    steps = _decode_steps(cfg)
    if max_pixels is None:
        max_pixels = next((s["max_pixels"] for s in steps if "max_pixels" in s), DEFAULT_MAX_PIXELS)
    max_pixels = check_max_pixels(max_pixels, "--max_pixels")
    for step in steps:
        step["max_pixels"] = max_pixels
    return max_pixels


def check_files(paths, preprocessor, max_pixels, slicing=None):
    """({readable path: (height, width)}, [{"file", "error"}]): each file is decoded once, as the
    reader will, and its size (its tiles' with ``slicing``) checked against max_pixels and the
    model's input-size limits."""
    good, failures = {}, []
    for path in paths:
        what = f"image file {path}"
        try:
            im = decode_checked(np.fromfile(path, dtype=np.uint8), max_pixels, what)
            height, width = im.shape[:2]
            if slicing is None:
                preprocessor.check_size(height, width, what)
            else:
                rows, cols = slicing.tile_size(height, width)
                preprocessor.check_size(rows, cols, f"a {cols} x {rows} tile of {what}")
        except (OSError, ValueError) as err:
            logger.error(f"skipping {path}: {err}")
            failures.append({"file": path, "error": str(err)})
            continue
        good[path] = (height, width)
    return good, failures


def dygraph_detector(model, preprocessor, score_threshold):
    """RGB tile arrays -> their [N_i, 6] detections by the dygraph ``model`` (score filter,
    boxes clipped to the tile): ``sliced_detections``' detect."""

    def detect(tiles):
        feeds = Preprocessor.stack([preprocessor.transform(t) for t in tiles])
        with paddle.no_grad():
            out = model({k: paddle.to_tensor(v) for k, v in feeds.items()})
        bbox, bbox_num = filter_scores(
            out["bbox"].numpy(), out["bbox_num"].numpy(), score_threshold
        )
        return split_detections(clip_detections(bbox, bbox_num, image_sizes(feeds)), bbox_num)

    return detect


def predict_whole(trainer, paths, sizes, draw_threshold, output_dir, score_threshold):
    """{path: [N, 6]} by ppdet's Trainer.predict (its TestReader), score-filtered and clipped to
    each image's ``sizes`` (height, width)."""
    by_path = {}
    accept_image_formats(trainer.dataset)  # ppdet's ImageFolder would drop .tif files
    with paddle.no_grad():
        results = trainer.predict(paths, draw_threshold, output_dir, visualize=False)
    imid2path = trainer.dataset.get_imid2path()
    sizes = {os.path.abspath(p): size for p, size in sizes.items()}
    for res in results:
        for im_id, dets in zip(
            res["im_id"].reshape(-1), split_detections(res["bbox"], res["bbox_num"])
        ):
            path = imid2path[int(im_id)]
            dets, _ = filter_scores(dets, [len(dets)], score_threshold)
            by_path[path] = clip_detections(dets, [len(dets)], [sizes[os.path.abspath(path)]])
    return by_path


def main(argv=None):
    args = parse_args(argv)
    options = vars(args).pop("detection")  # the tool's own, not merged into the config
    cfg = config_from_args(args)
    paths, unsupported = list_inputs(args.infer_img, args.infer_dir)
    check_output_dir(args.output_dir, paths, args.infer_dir)  # before the model is loaded
    max_pixels = pixel_limit(cfg, args.max_pixels)
    trainer = DACTrainer(cfg, mode="test")  # weights read without unpickling code
    trainer.load_weights(cfg.weights)
    names = class_names(cfg, num_output_labels(trainer.model, cfg))
    preprocessor = Preprocessor(
        test_preprocess_steps(cfg),
        f"{args.config} TestReader",
        max_pixels=max_pixels,
        **input_limits(trainer.model),
    )
    if options["nms_threshold"] is not None:
        trainer.model.post_process.nms_iou_threshold = options["nms_threshold"]
    slicing = options["slicing"]
    good, failures = check_files(paths, preprocessor, max_pixels, slicing)
    by_path = {}
    if slicing is None:
        hint = BigImageHint(preprocessor)
        for path, (height, width) in good.items():
            hint.check(height, width, f"image file {path}")
    if good and slicing is None:
        by_path = predict_whole(
            trainer,
            list(good),
            good,
            args.draw_threshold,
            args.output_dir,
            options["score_threshold"],
        )
    elif good:
        trainer.model.eval()
        detect = dygraph_detector(trainer.model, preprocessor, options["score_threshold"])
        for path in good:
            image = cv2.cvtColor(
                decode_checked(np.fromfile(path, dtype=np.uint8), max_pixels, f"image file {path}"),
                cv2.COLOR_BGR2RGB,
            )
            by_path[path] = sliced_detections(image, slicing, detect)
    ordered = sorted(by_path)
    json_path = save_results(
        ordered,
        [by_path[p] for p in ordered],
        args.output_dir,
        names,
        args.draw_threshold,
        args.infer_dir,
        args.draw_labels,
    )
    return print_run_outcome(
        len(ordered), len(paths), failures, json_path, args.output_dir, unsupported=unsupported
    )


if __name__ == "__main__":
    run_cli(main)
