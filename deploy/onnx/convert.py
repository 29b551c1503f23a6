"""Convert a reference-attention export to ONNX and check it against Paddle Inference.

    make onnx        # installs requirements-onnx.txt (paddle2onnx, onnx, onnxruntime)
    python tools/export_model.py -c configs/demo/dac_demo.yml -o weights=... \
        --output_dir output_inference --attention reference
    python deploy/onnx/convert.py --model_dir output_inference/dac_demo \
        [--save_file output_inference/dac_demo/model.onnx] [--check_image demo.jpg ...]

Steps:

1. ``paddle2onnx --model_dir DIR --model_filename model.json --params_filename model.pdiparams
   --save_file model.onnx --opset_version 17 --optimize_tool None``. ``--optimize_tool None``
   always: the default optimiser pip-installs packages while it converts.
2. One fix to the converted graph: paddle2onnx 2.1.0 turns multiclass_nms3's "no limit per
   class" (nms_top_k = -1) into NonMaxSuppression's max_output_boxes_per_class = -1, which ONNX
   defines as "select nothing"; the constant is set to 2**31 - 1 (no limit) instead.
3. With ``--check_image``: onnxruntime's detections must equal the Paddle Inference predictor's
   within ``--atol`` (1e-4) on every row.

Only ``attention: reference`` exports convert (ONNX has no ms_deform_attn op); the ONNX model
takes batch size 1 (a paddle2onnx limit of multiclass_nms3). Its outputs are the graph's
(infer_cfg.yml ``output_names``): ``bbox`` and ``bbox_num`` unclipped at the exported NMS
threshold, then the NMS candidates; clipping to the image and the inference-time thresholds are
the Paddle predictor's (ppdet_dac.deploy.postprocess), to be reproduced by an ONNX application.
The steps are ppdet_dac.deploy.onnx_export's; this file is their command line.
"""

import argparse

from ppdet_dac.deploy.onnx_export import OPSET, check, convert
from ppdet_dac.utils.cli import run_cli


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_dir", required=True, help="export made with --attention reference")
    parser.add_argument("--save_file", default=None, help="default: <model_dir>/model.onnx")
    parser.add_argument("--opset_version", type=int, default=OPSET)
    parser.add_argument(
        "--check_image",
        nargs="*",
        default=[],
        help="images to compare onnxruntime with Paddle Inference on",
    )
    parser.add_argument("--atol", type=float, default=1e-4)
    args = parser.parse_args(argv)
    onnx_file = convert(args.model_dir, args.save_file, args.opset_version)
    print(f"ONNX model: {onnx_file}")
    if args.check_image:
        worst = check(args.model_dir, onnx_file, args.check_image, args.atol)
        print(
            f"onnxruntime matches Paddle Inference on {len(args.check_image)} image(s): "
            f"max |diff| = {worst:.3g} <= {args.atol}"
        )


if __name__ == "__main__":
    run_cli(main)
