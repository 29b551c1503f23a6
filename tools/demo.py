"""`make demo`: the whole job on the bundled demo data, on CPU.

1. writes the synthetic shapes dataset to dataset/demo (skipped when present);
2. trains the demo config (DAC-DETR by default; ``--eval_every_epoch`` adds COCO AP after each
   epoch);
3. evaluates the final weights and prints the COCO AP;
4. draws the detections of one val image to output/demo/<config>_val_detections.png;
5. prints the time of each part and the total. ``make demo`` passes ``--started_at`` (the time
   it began, before setting up), so the total includes the setup.

    python tools/demo.py [-c configs/demo/dac_demo.yml] [--started_at SECONDS] [-o key=value ...]
"""

import time

STARTED = time.time()  # before the imports: they are part of the demo's time
import _threads  # noqa: F401  (before paddle: CPU thread count)
import ppdet_dac  # noqa: F401  (first to load cv2: sets OpenCV's pixel limit; registers classes)

import os

import paddle
from ppdet.data.source.category import get_categories
from ppdet.engine import set_random_seed
from ppdet.utils.cli import ArgsParser
from ppdet.utils.logger import setup_logger

from ppdet_dac.data.demo_data import make_demo_data
from ppdet_dac.deploy.visualize import save_detections
from ppdet_dac.engine import (
    DACTrainer,
    check_pretrain_weights,
    fetch_pretrain_weights,
    load_checked_config,
    load_pretrain_weights,
)
from ppdet_dac.engine.evaluation import evaluate_metrics
from ppdet_dac.utils.cli import run_cli

logger = setup_logger("demo")


class Stopwatch:
    """Seconds per named part of the demo, measured back to back from ``start``: the parts add
    up to the time from ``start`` to the last lap."""

    def __init__(self, start):
        self.mark = start
        self.parts = {}

    def lap(self, name, now=None):
        """The part ``name`` ends at ``now`` (default: this moment); the next one starts there."""
        now = time.time() if now is None else now
        self.parts[name] = now - self.mark
        self.mark = now

    def summary(self):
        total = sum(self.parts.values())
        minutes, seconds = divmod(round(total), 60)
        detail = ", ".join(f"{name} {value:.0f} s" for name, value in self.parts.items())
        return f"demo total: {minutes} min {seconds:02d} s ({detail})"


def main(argv=None):
    parser = ArgsParser()
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--output_dir", default="output/demo", help="where the PNG goes")
    parser.add_argument(
        "--draw_threshold",
        type=float,
        default=0.3,
        help="draw detections scoring at least this (IA-BCE scores follow the "
        "predicted IoU, so they run lower than focal-loss scores)",
    )
    parser.add_argument(
        "--eval_every_epoch",
        action="store_true",
        help="also evaluate after every epoch (slower; shows the AP per epoch)",
    )
    parser.add_argument(
        "--keep_data",
        action="store_true",
        help="use the datasets the config names as they are (no generation)",
    )
    parser.add_argument(
        "--started_at",
        type=float,
        default=None,
        help="time.time() when the whole job began (make demo: before its "
        "setup); the total printed at the end counts from it",
    )
    parser.set_defaults(config="configs/demo/dac_demo.yml")
    args = parser.parse_args(argv)
    if args.started_at is not None and not 0 <= STARTED - args.started_at < 86400:
        parser.error(
            f"--started_at {args.started_at} is not a time of the last day "
            f"(this process started at {STARTED:.0f})"
        )
    watch = Stopwatch(STARTED if args.started_at is None else args.started_at)
    if args.started_at is not None:
        watch.lap("setup", now=STARTED)  # make setup: everything before this process

    cfg = load_checked_config(args.config, args.opt)
    pretrain = check_pretrain_weights(cfg, args.config)  # the demo configs say `none`
    watch.lap("start-up")
    if not args.keep_data:
        make_demo_data(cfg["TrainDataset"]["dataset_dir"])
        watch.lap("data")
    paddle.set_device("cpu")
    set_random_seed(args.seed)

    if pretrain:
        pretrain = fetch_pretrain_weights(pretrain, args.config)
    trainer = DACTrainer(cfg, mode="train")
    trainer.set_seed(args.seed)
    if pretrain:
        load_pretrain_weights(trainer.model, pretrain)
    trainer.train(validate=args.eval_every_epoch)
    watch.lap("training")

    evaluator = DACTrainer(cfg, mode="eval")  # outputs in output/<config>/, not ./
    evaluator.load_weights(cfg.weights)
    stats = evaluate_metrics(evaluator)["COCOMetric"]["bbox"]
    logger.info(f"demo COCO AP (IoU 0.50:0.95) = {stats[0]:.4f}, AP50 = {stats[1]:.4f}")
    watch.lap("evaluation")

    image_path = evaluator.dataset.roidbs[0]["im_file"]
    predictor = DACTrainer(cfg, mode="test")
    predictor.load_weights(cfg.weights)
    results = predictor.predict([image_path], visualize=False)
    clsid2catid, catid2name = get_categories(cfg.metric, anno_file=predictor.dataset.get_anno())
    names = [catid2name[clsid2catid[i]] for i in sorted(clsid2catid)]
    name = os.path.splitext(os.path.basename(args.config))[0]
    out_path = os.path.join(args.output_dir, f"{name}_val_detections.png")
    drawn = save_detections(
        image_path, results[0]["bbox"], out_path, names, threshold=args.draw_threshold
    )
    logger.info(
        f"drew {drawn} detections (score >= {args.draw_threshold}) of {image_path} to {out_path}"
    )
    watch.lap("drawing")
    logger.info(watch.summary())
    return {"ap": stats[0], "ap50": stats[1], "drawn": drawn, "parts": watch.parts}


if __name__ == "__main__":
    run_cli(main)
