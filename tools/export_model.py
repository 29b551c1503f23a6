"""Export a ppdet_dac model to Paddle Inference (model.json + model.pdiparams + infer_cfg.yml).

    python tools/export_model.py -c configs/demo/dac_demo.yml \
        -o weights=output/dac_demo/model_final \
        --output_dir output_inference [--attention op|reference]

As with ppdet, the model goes to <output_dir>/<config file name>/. ``--attention op`` bakes the
compiled ms_deform_attn op into the graph (fast; the predictor registers the op library);
``reference`` uses the pure-Paddle path (needed for paddle2onnx).

The class names of infer_cfg.yml come from TestDataset's annotation file, or from
``-o label_list=[cat,dog,...]`` (or a .txt file with one name per line). The export stops with
an error when their number differs from the model's classes, or when the annotation file is
missing and the model's classes are not COCO's 80.

The graph also outputs the post-processor's NMS candidates (infer_cfg.yml ``output_names``,
``NMS``), so the deployment tools' ``--nms_threshold`` gives the detections of an export at that
threshold without exporting again.
"""

import _threads  # noqa: F401  (before paddle: CPU thread count)
import ppdet_dac  # noqa: F401  (registers ppdet_dac's classes; must precede load_config)

import os

from ppdet.utils.cli import ArgsParser

from ppdet_dac.engine import config_from_args
from ppdet_dac.deploy.export import ATTENTION_MODES, export_model
from ppdet_dac.utils.cli import run_cli


def parse_args(argv=None):
    parser = ArgsParser()
    parser.add_argument(
        "--output_dir",
        default="output_inference",
        help="the model goes to <output_dir>/<config name>/",
    )
    parser.add_argument(
        "--attention",
        choices=ATTENTION_MODES,
        default="op",
        help="op: compiled ms_deform_attn (fast); reference: pure Paddle (ONNX)",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = config_from_args(args, device="cpu")
    name = os.path.splitext(os.path.basename(args.config))[0]
    out = export_model(
        cfg, cfg.get("weights"), os.path.join(args.output_dir, name), attention=args.attention
    )
    print(f"exported to {out}")


if __name__ == "__main__":
    run_cli(main)
