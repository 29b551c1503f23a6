"""Run an exported ppdet_dac model with Paddle Inference on images; write JSON and drawn images.

    python deploy/python/infer.py --model_dir output_inference/dac_demo \
        --image_file demo.jpg | --image_dir images/ \
        [--device CPU|GPU] [--run_mode paddle|trt_fp32|trt_fp16] [--cpu_threads N] \
        [--disable_mkldnn] [--max_pixels 40000000] \
        [--threshold T] [--score_threshold S] [--nms_threshold N] \
        [--slice_infer [--slice_size 640 640] [--overlap_ratio 0.25 0.25] \
         [--combine_method nms|concat] [--match_threshold 0.6] [--match_metric ios|iou]] \
        [--batch_size B] [--output_dir output]

Writes <output_dir>/<image file name>.png (x.jpg -> x.jpg.png; boxes, labels and scores >=
threshold), <output_dir>/detections.json ({image: [{class_id, label, score, bbox [x1, y1, x2,
y2]}]}, the detections >= --score_threshold) and <output_dir>/summary.json ({images, succeeded,
failed: [{file, error}], unsupported: [files of --image_dir not read], detections}). Boxes are
clipped to the image. An --output_dir that holds the input images is refused
(ppdet_dac/deploy/outputs.py); files of other formats than JPEG/PNG/BMP/TIFF in --image_dir are
not read and are named at the end.

``--nms_threshold`` re-runs the class-wise NMS at another IoU threshold (the detections of an
export at that threshold, without re-exporting); ``--slice_infer`` runs large images in
overlapping tiles of ``--slice_size`` (``--batch_size`` tiles per run) and merges the tiles'
detections (ppdet's flags; see ppdet_dac/deploy/slicing.py).

On CPU oneDNN is on unless ``--disable_mkldnn`` (ppdet's ``--enable_mkldnn`` is accepted).
A file that cannot be read, is not an image, declares more than ``--max_pixels`` pixels or has
an aspect ratio the model cannot take is reported (name and reason) and skipped; the others
are processed and written, and the exit status is 1 when any file was skipped.
A model exported with ``--attention op`` needs the ms_deform_attn op library built
(``pip install --no-build-isolation -e .``); the predictor registers it.
"""

import ppdet_dac  # noqa: F401  (first, before anything loads cv2: sets OpenCV's pixel limit)

import argparse
import time

import numpy as np
from ppdet.utils.logger import setup_logger

from ppdet_dac.deploy.cli_options import (
    add_cpu_options,
    add_detection_options,
    add_drawing_options,
    detection_options_from_args,
    mkldnn_from_args,
)
from ppdet_dac.deploy.folder_run import predict_files, save_results
from ppdet_dac.deploy.outputs import check_output_dir, list_inputs, print_run_outcome
from ppdet_dac.deploy.postprocess import format_box
from ppdet_dac.deploy.predictor import DEVICES, RUN_MODES, Predictor
from ppdet_dac.utils.cli import run_cli

logger = setup_logger("dac_detr_infer")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_dir", required=True, help="exported model directory")
    parser.add_argument("--image_file", default=None, help="one image")
    parser.add_argument("--image_dir", default=None, help="a directory of images")
    parser.add_argument("--device", default="CPU", type=str.upper, choices=DEVICES)
    parser.add_argument(
        "--run_mode", default="paddle", choices=RUN_MODES, help="GPU only: TensorRT fp32/fp16"
    )
    parser.add_argument("--cpu_threads", type=int, default=1)
    add_cpu_options(parser)
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="draw detections with score >= this (default: infer_cfg.yml's draw_threshold)",
    )
    add_detection_options(parser)
    add_drawing_options(parser)
    parser.add_argument(
        "--batch_size",
        type=int,
        default=1,
        help="images per model run (tiles per run with --slice_infer)",
    )
    parser.add_argument("--output_dir", default="output")
    args = parser.parse_args(argv)
    args.enable_mkldnn = mkldnn_from_args(args, parser)
    args.detection = detection_options_from_args(args, parser)
    return args


def run(args):
    """Predict, write the results; returns the exit status (1 when a file was skipped)."""
    paths, unsupported = list_inputs(args.image_file, args.image_dir)
    check_output_dir(args.output_dir, paths, args.image_dir)  # before the model is loaded
    predictor = Predictor(
        args.model_dir,
        device=args.device,
        cpu_threads=args.cpu_threads,
        enable_mkldnn=args.enable_mkldnn,
        run_mode=args.run_mode,
        max_pixels=args.max_pixels,
        batch_size=args.batch_size,
        **args.detection,
    )
    threshold = predictor.infer_cfg.draw_threshold if args.threshold is None else args.threshold
    start = time.perf_counter()
    results, failures = predict_files(predictor, paths, args.batch_size)
    elapsed = time.perf_counter() - start
    good = list(results)
    json_path = save_results(
        good,
        [results[p] for p in good],
        args.output_dir,
        predictor.label_list,
        threshold,
        args.image_dir,
        args.draw_labels,
    )
    for path in good:
        dets = results[path]
        shown = dets[dets[:, 1] >= threshold]
        print(f"{path}: {len(shown)} detections with score >= {threshold}")
        for label, score, *box in shown[np.argsort(-shown[:, 1])]:
            name = (
                predictor.label_list[int(label)]
                if int(label) < len(predictor.label_list)
                else str(int(label))
            )
            print(f"  {name:<12s} {score:.3f}  {format_box(box)}")
    return print_run_outcome(
        len(good), len(paths), failures, json_path, args.output_dir, elapsed, unsupported
    )


def main(argv=None):
    return run(parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
