"""Queries per object above an IoU threshold, for one checkpoint or a folder of epochs.

For every GT object of a dataset split, count the O-decoder (and, for a DAC model, C-decoder)
queries whose last-layer box has IoU > t with it (optionally only queries scoring >= a gate for
the object's class), averaged per object. Writes a CSV and a PNG plot.

    python tools/analyze_queries.py -c configs/demo/dac_demo.yml -o weights=output/dac_demo/model_final \\
        --iou 0.6 0.7 0.8 --out output/queries/dac
    python tools/analyze_queries.py -c configs/demo/dac_demo.yml --epochs-dir output/dac_demo \\
        --iou 0.6 0.7 0.8 --label DAC --extra-csv output/queries/dino.csv --out output/queries/dac

--out PREFIX writes PREFIX.csv and PREFIX.png; --extra-csv adds the rows of earlier runs (for
instance the baseline's) to the plot, not to the CSV. With --plot-only nothing is run: the rows
of the --extra-csv files are plotted to PREFIX.png.
"""

import _threads  # noqa: F401  (before paddle: CPU thread count)
import ppdet_dac  # noqa: F401  (first to load cv2: sets OpenCV's pixel limit; registers classes)

import os

import paddle
from ppdet.utils.cli import ArgsParser
from ppdet.utils.logger import setup_logger

from ppdet_dac.engine import load_checked_config
from ppdet_dac.analysis.queries import (
    analyze_checkpoint,
    build_eval_loader,
    checkpoint_epochs,
    plot_curves,
    read_csv,
    write_csv,
)
from ppdet_dac.analysis.dump import build_model, load_model_weights
from ppdet_dac.utils.cli import run_cli

logger = setup_logger("analyze_queries")


def parse_args(argv=None):
    parser = ArgsParser()
    parser.add_argument(
        "--epochs-dir",
        default=None,
        help="folder of per-epoch checkpoints (epoch_*.pdparams, N.pdparams, "
        "model_final.pdparams); default: the single -o weights=",
    )
    parser.add_argument(
        "--iou",
        type=float,
        nargs="+",
        default=[0.6, 0.7, 0.8],
        help="IoU thresholds (a query counts when IoU > t)",
    )
    parser.add_argument(
        "--score-gate",
        type=float,
        default=None,
        help="also require the query's score for the GT's class >= this (default: off)",
    )
    parser.add_argument(
        "--split",
        default="eval",
        choices=("eval", "train"),
        help="dataset split (EvalReader transforms either way)",
    )
    parser.add_argument("--max-images", type=int, default=None, help="use only the first N images")
    parser.add_argument(
        "--label", default=None, help="model name in CSV and plot (default: the config's file name)"
    )
    parser.add_argument(
        "--extra-csv",
        nargs="*",
        default=[],
        help="CSV files of earlier runs to draw in the same plot",
    )
    parser.add_argument(
        "--plot-only", action="store_true", help="only plot the --extra-csv files (no model is run)"
    )
    parser.add_argument(
        "--out",
        default="output/query_affinity/queries",
        help="output prefix: writes PREFIX.csv and PREFIX.png",
    )
    args = parser.parse_args(argv)
    if args.plot_only and not args.extra_csv:
        parser.error("--plot-only needs --extra-csv CSV [CSV ...]")
    for t in args.iou:
        if not 0 <= t < 1:
            parser.error(f"--iou thresholds must lie in [0, 1), got {t}")
    return args


def main(argv=None):
    args = parse_args(argv)
    extra_rows = [row for path in args.extra_csv for row in read_csv(path)]
    if args.plot_only:
        plot_curves(extra_rows, args.out + ".png")
        return extra_rows
    cfg = load_checked_config(args.config, args.opt)
    paddle.set_device("cpu")
    label = args.label or os.path.splitext(os.path.basename(args.config))[0]
    if args.epochs_dir:
        checkpoints = checkpoint_epochs(args.epochs_dir)
    elif cfg.get("weights"):
        checkpoints = [("", cfg.weights)]
    else:
        raise ValueError(f"{args.config}: no weights; pass -o weights=PATH or --epochs-dir DIR")

    model = build_model(cfg)
    rows = []
    for epoch, path in checkpoints:
        load_model_weights(model, path)
        loader, _ = build_eval_loader(cfg, args.split)  # a fresh pass from the first image
        counter = analyze_checkpoint(
            model,
            loader,
            args.iou,
            args.score_gate,
            args.max_images,
            desc=os.path.basename(str(path)),
        )
        for row in counter.rows(model=label, checkpoint=str(path), epoch=epoch):
            logger.info(
                f"{label} {os.path.basename(str(path))} stream {row['stream']} "
                f"IoU>{row['iou']}: {row['mean_queries_per_object']} queries/object "
                f"({row['num_objects']} objects)"
            )
            rows.append(row)
    write_csv(rows, args.out + ".csv")
    plot_curves(rows + extra_rows, args.out + ".png")
    return rows


if __name__ == "__main__":
    run_cli(main)
