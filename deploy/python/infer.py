"""Run an exported ppdet_dac model with Paddle Inference on images; write JSON and drawn images.

    python deploy/python/infer.py --model_dir output_inference/dac_demo \
        --image_file demo.jpg | --image_dir images/ \
        [--device CPU|GPU] [--run_mode paddle|trt_fp32|trt_fp16] [--cpu_threads N] \
        [--enable_mkldnn] \
        [--threshold T] [--batch_size B] [--output_dir output]

Writes <output_dir>/<image name>.png (boxes, labels and scores >= threshold) and
<output_dir>/detections.json ({image: [{class_id, label, score, bbox [x1, y1, x2, y2]}]}).
A model exported with ``--attention op`` needs the ms_deform_attn op library built
(``pip install --no-build-isolation -e .``); the predictor registers it.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from ppdet_dac.engine.predictor import (DEVICES, RUN_MODES, Predictor,  # noqa: E402
                                        list_images, save_results)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_dir", required=True, help="exported model directory")
    parser.add_argument("--image_file", default=None, help="one image")
    parser.add_argument("--image_dir", default=None, help="a directory of images")
    parser.add_argument("--device", default="CPU", type=str.upper, choices=DEVICES)
    parser.add_argument("--run_mode", default="paddle", choices=RUN_MODES,
                        help="GPU only: TensorRT fp32/fp16")
    parser.add_argument("--cpu_threads", type=int, default=1)
    parser.add_argument("--enable_mkldnn", action="store_true", help="use oneDNN on CPU")
    parser.add_argument("--threshold", type=float, default=None,
                        help="draw detections with score >= this (default: infer_cfg.yml's "
                             "draw_threshold)")
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--output_dir", default="output")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    paths = list_images(args.image_file, args.image_dir)
    predictor = Predictor(args.model_dir, device=args.device, cpu_threads=args.cpu_threads,
                          enable_mkldnn=args.enable_mkldnn, run_mode=args.run_mode)
    threshold = predictor.infer_cfg.draw_threshold if args.threshold is None else args.threshold
    detections, start = [], time.perf_counter()
    for i in range(0, len(paths), max(args.batch_size, 1)):
        detections.extend(predictor.predict(paths[i:i + max(args.batch_size, 1)]))
    elapsed = time.perf_counter() - start
    json_path = save_results(paths, detections, args.output_dir, predictor.label_list, threshold)
    for path, dets in zip(paths, detections):
        shown = dets[dets[:, 1] >= threshold]
        print(f"{path}: {len(shown)} detections with score >= {threshold}")
        for label, score, x1, y1, x2, y2 in shown[np.argsort(-shown[:, 1])]:
            name = predictor.label_list[int(label)] if int(label) < len(predictor.label_list) \
                else str(int(label))
            print(f"  {name:<12s} {score:.3f}  [{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}]")
    print(f"{len(paths)} images in {elapsed:.2f} s; results in {json_path} and {args.output_dir}/")


if __name__ == "__main__":
    main()
