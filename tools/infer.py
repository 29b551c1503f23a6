"""Detect objects with a ppdet_dac model in dygraph (no export); write JSON and drawn images.

    python tools/infer.py -c configs/demo/dac_demo.yml -o weights=output/dac_demo/model_final \
        --infer_img demo.jpg | --infer_dir images/ [--output_dir output] [--draw_threshold 0.3] \
        [--max_pixels 40000000]

Writes <output_dir>/<image name>.png, <output_dir>/detections.json and
<output_dir>/summary.json, in the same format as deploy/python/infer.py (the exported model), so
the two can be compared directly. A file that cannot be read, is not an image, declares more
than --max_pixels pixels (default: the TestReader's DACDecode max_pixels) or has an aspect ratio
the model cannot take is reported (name and reason) and skipped; the others are processed and
written, and the exit status is 1 when any file was skipped.
"""
import _threads  # noqa: F401  (before paddle: CPU thread count)
import ppdet_dac  # noqa: F401  (registers ppdet_dac's classes; must precede load_config)

import sys

import numpy as np
import paddle
from ppdet.engine import Trainer
from ppdet.utils.cli import ArgsParser
from ppdet.utils.logger import setup_logger

from ppdet_dac.data.image_io import DEFAULT_MAX_PIXELS, check_max_pixels, decode_checked
from ppdet_dac.engine import config_from_args
from ppdet_dac.engine.export import (class_names, input_limits, num_output_labels,
                                     test_preprocess_steps)
from ppdet_dac.engine.predictor import (Preprocessor, list_images, save_results,
                                        split_detections, write_summary)

logger = setup_logger("tools.infer")


def parse_args(argv=None):
    parser = ArgsParser()
    parser.add_argument("--infer_img", default=None, help="one image")
    parser.add_argument("--infer_dir", default=None, help="a directory of images")
    parser.add_argument("--output_dir", default="output", help="where the PNGs and JSON go")
    parser.add_argument("--draw_threshold", type=float, default=0.3,
                        help="draw detections with score >= this")
    parser.add_argument("--max_pixels", type=int, default=None,
                        help="refuse images whose header declares more pixels (default: the "
                             f"TestReader's DACDecode max_pixels, else {DEFAULT_MAX_PIXELS})")
    return parser.parse_args(argv)


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
        max_pixels = next((s["max_pixels"] for s in steps if "max_pixels" in s),
                          DEFAULT_MAX_PIXELS)
    max_pixels = check_max_pixels(max_pixels, "--max_pixels")
    for step in steps:
        step["max_pixels"] = max_pixels
    return max_pixels


def check_files(paths, preprocessor, max_pixels):
    """(readable paths, [{"file", "error"}]): each file is decoded once, as the reader will, and
    its size checked against max_pixels and the model's input-size limits."""
    good, failures = [], []
    for path in paths:
        what = f"image file {path}"
        try:
            im = decode_checked(np.fromfile(path, dtype=np.uint8), max_pixels, what)
            preprocessor.check_size(im.shape[0], im.shape[1], what)
        except (OSError, ValueError) as err:
            logger.error(f"skipping {path}: {err}")
            failures.append({"file": path, "error": str(err)})
            continue
        good.append(path)
    return good, failures


def main(argv=None):
    args = parse_args(argv)
    cfg = config_from_args(args)
    paths = list_images(args.infer_img, args.infer_dir)
    max_pixels = pixel_limit(cfg, args.max_pixels)
    trainer = Trainer(cfg, mode="test")
    trainer.load_weights(cfg.weights)
    names = class_names(cfg, num_output_labels(trainer.model, cfg))
    preprocessor = Preprocessor(test_preprocess_steps(cfg), f"{args.config} TestReader",
                                max_pixels=max_pixels, **input_limits(trainer.model))
    good, failures = check_files(paths, preprocessor, max_pixels)
    by_path = {}
    if good:
        with paddle.no_grad():
            results = trainer.predict(good, args.draw_threshold, args.output_dir,
                                      visualize=False)
        imid2path = trainer.dataset.get_imid2path()
        for res in results:
            for im_id, dets in zip(res["im_id"].reshape(-1),
                                   split_detections(res["bbox"], res["bbox_num"])):
                by_path[imid2path[int(im_id)]] = dets
    ordered = sorted(by_path)
    json_path = save_results(ordered, [by_path[p] for p in ordered], args.output_dir, names,
                             args.draw_threshold)
    summary = write_summary(args.output_dir, len(paths), failures, json_path)
    print(f"{len(ordered)} of {len(paths)} images; results in {json_path} and "
          f"{args.output_dir}/")
    if failures:
        print(f"{len(failures)} file(s) skipped (listed in {summary}):")
        for failure in failures:
            print(f"  {failure['file']}: {failure['error']}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
