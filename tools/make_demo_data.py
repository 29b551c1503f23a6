"""Write the synthetic shapes dataset used by the demo configs (no network needed).

    python tools/make_demo_data.py [--root dataset/demo] [--seed 0] [--num-train 240] [--num-val 60]
        [--voc] [--crowded]

Skips a split that is already complete with the same settings; --force rewrites it. --voc also
writes the splits as Pascal VOC (root/voc/: XML files, train.txt / val.txt, label_list.txt).
--crowded writes the crowded variant (default root dataset/demo_crowded): the same shapes, 10-24
per image, 10-36 % of the image side, aspect ratios 1:3..3:1, a shape hiding up to half of
another (ppdet_dac.data.crowding.Crowding; --max-objects is not used). The demo configs train
on it with -o TrainDataset.dataset_dir=dataset/demo_crowded EvalDataset.dataset_dir=...
(configs/demo/demo_data_crowded.yml names the folders).
"""

import argparse
import time

from ppdet.utils.logger import setup_logger

from ppdet_dac.data.crowding import Crowding
from ppdet_dac.data.demo_data import make_demo_data
from ppdet_dac.utils.cli import run_cli

logger = setup_logger("make_demo_data")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        default=None,
        help="output directory (default dataset/demo, with --crowded dataset/demo_crowded)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    parser.add_argument("--num-train", type=int, default=240, help="train images")
    parser.add_argument("--num-val", type=int, default=60, help="val images")
    parser.add_argument(
        "--num-empty-train", type=int, default=8, help="train images without any object"
    )
    parser.add_argument("--min-size", type=int, default=224, help="smallest image side (px)")
    parser.add_argument("--max-size", type=int, default=288, help="largest image side (px)")
    parser.add_argument("--max-objects", type=int, default=6, help="objects per image, at most")
    parser.add_argument("--force", action="store_true", help="regenerate even when complete")
    parser.add_argument(
        "--voc",
        action="store_true",
        help="also write Pascal VOC annotations of the same boxes (root/voc/)",
    )
    parser.add_argument(
        "--crowded",
        action="store_true",
        help="the crowded variant: many overlapping shapes of varied sizes and aspect ratios",
    )
    args = parser.parse_args(argv)
    if args.root is None:
        args.root = "dataset/demo_crowded" if args.crowded else "dataset/demo"
    return args


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    status = make_demo_data(
        args.root,
        seed=args.seed,
        num_train=args.num_train,
        num_val=args.num_val,
        num_empty_train=args.num_empty_train,
        min_size=args.min_size,
        max_size=args.max_size,
        max_objects=args.max_objects,
        force=args.force,
        voc=args.voc,
        crowding=Crowding() if args.crowded else None,
    )
    logger.info(f"demo data in {args.root}: {status} ({time.time() - start:.1f} s)")
    return status


if __name__ == "__main__":
    run_cli(main)
