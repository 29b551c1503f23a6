"""Evaluate a ppdet_dac model (COCO mAP via pycocotools), in one process or sharded over the
processes of paddle.distributed.launch (each evaluates its share of the batches, rank 0 runs
pycocotools once on all detections: the same AP as one process). bbox.json and the per-class
precision/recall curves go to --output_eval (default: save_dir/<config name>, the run's
checkpoint folder); -v shows pycocotools' own prints. On CPU, ``--engine inference`` exports the
weights in memory once and evaluates with Paddle Inference and oneDNN (about 3x faster for R-50;
the same detections up to the kernels' rounding).

    python tools/eval.py -c configs/demo/dac_demo.yml -o weights=output/dac_demo/model_final
    python -m paddle.distributed.launch tools/eval.py -c configs/dac_cdn_r50.yml -o weights=...
    python tools/eval.py -c configs/dac_cdn_r50.yml -o weights=... --engine inference
"""

import _threads  # noqa: F401  (before paddle: CPU thread count)
import ppdet_dac  # noqa: F401  (first to load cv2: sets OpenCV's pixel limit; registers classes)

import argparse

from ppdet.utils.cli import ArgsParser

from ppdet_dac.deploy.exported_eval import ENGINES, ExportedModel, check_engine, cpu_threads
from ppdet_dac.engine import DACTrainer, config_from_args
from ppdet_dac.engine.distributed import RankFailureGuard, init_parallel_env
from ppdet_dac.utils.cli import run_cli


def parse_args(argv=None):
    parser = ArgsParser()
    parser.add_argument(
        "--classwise",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="print the per-class AP table (default on)",
    )
    parser.add_argument(
        "--output_eval",
        default=None,
        help="folder for bbox.json and bbox_pr_curve/ (default: the config's "
        "output_eval, else save_dir/<config name>)",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="dygraph",
        help="dygraph: the model itself (default); inference: the model exported in memory "
        "and run by Paddle Inference with oneDNN (CPU; faster)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show pycocotools' own prints (default: a summary line)",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    output_eval, engine = args.output_eval, args.engine
    del args.output_eval, args.engine  # merge_args would set them as config keys
    cfg = config_from_args(args)
    if output_eval:
        cfg["output_eval"] = output_eval
    check_engine(engine, cfg)
    init_parallel_env()
    with RankFailureGuard():
        trainer = DACTrainer(cfg, mode="eval")
        trainer.load_weights(cfg.weights)
        if engine == "dygraph":
            return trainer.evaluate()
        exported = ExportedModel(cfg, trainer.model, cpu_threads())
        try:
            return trainer.evaluate(exported)
        finally:
            exported.close()


if __name__ == "__main__":
    run_cli(main)
