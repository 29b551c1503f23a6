"""Evaluate a ppdet_dac model (COCO mAP via pycocotools).

    python tools/eval.py -c configs/demo/dac_demo.yml -o weights=output/dac_demo/model_final
"""
import _threads  # noqa: F401  (before paddle: CPU thread count)
import ppdet_dac  # noqa: F401  (registers ppdet_dac's classes; must precede load_config)

import argparse

from ppdet.engine import init_parallel_env
from ppdet.utils.cli import ArgsParser

from ppdet_dac.engine import DACTrainer, config_from_args


def parse_args(argv=None):
    parser = ArgsParser()
    parser.add_argument("--classwise", action=argparse.BooleanOptionalAction, default=True,
                        help="print the per-class AP table (default on)")
    parser.add_argument("--output_eval", default=None, help="directory for bbox.json")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = config_from_args(args)
    init_parallel_env()
    trainer = DACTrainer(cfg, mode="eval")
    trainer.load_weights(cfg.weights)
    trainer.evaluate()


if __name__ == "__main__":
    main()
