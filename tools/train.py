"""Train a ppdet_dac model: one process, or several with paddle.distributed.launch (one or
several machines).

    python tools/train.py -c configs/demo/dac_demo.yml [--eval] [-r CKPT|auto] [-o key=value ...]
        [--history FILE.json]
    python -m paddle.distributed.launch tools/train.py -c configs/dac_cdn_r50.yml   # all GPUs
    python -m paddle.distributed.launch --nproc_per_node 2 tools/train.py -c ...    # CPU, gloo
    python -m paddle.distributed.launch --master HOST:PORT --nnodes 2 tools/train.py -c ... -r auto

A rank that fails stops every rank with its error (ppdet_dac.engine.distributed).
"""

import _threads  # noqa: F401  (before paddle: CPU thread count)
import ppdet_dac  # noqa: F401  (first to load cv2: sets OpenCV's pixel limit; registers classes)

import json
import os

import paddle.distributed as dist
from ppdet.engine import set_random_seed
from ppdet.utils.cli import ArgsParser
from ppdet.utils.logger import setup_logger

from ppdet_dac.engine import (
    DACTrainer,
    check_pretrain_weights,
    config_from_args,
    fetch_pretrain_weights,
    load_pretrain_weights,
)
from ppdet_dac.engine.distributed import RankFailureGuard, init_parallel_env
from ppdet_dac.engine.trainer import AUTO_RESUME, auto_resume_checkpoint
from ppdet_dac.utils.atomic import write_text
from ppdet_dac.utils.cli import run_cli

logger = setup_logger("train")


def parse_args(argv=None):
    parser = ArgsParser()
    parser.add_argument("--eval", action="store_true", help="evaluate (COCO AP) at snapshot epochs")
    parser.add_argument(
        "-r",
        "--resume",
        default=None,
        help="checkpoint to resume from, or `auto`: the newest complete "
        "checkpoint in save_dir/<config name>, a fresh start when there is "
        "none (the same command can be run again after a failure)",
    )
    parser.add_argument("--amp", action="store_true", help="automatic mixed precision (GPU only)")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="with --eval: show pycocotools' own prints (default: a summary)",
    )
    parser.add_argument("--use_vdl", action="store_true", help="log scalars to VisualDL")
    parser.add_argument("--vdl_log_dir", default="vdl_log_dir/scalar", help="VisualDL log dir")
    parser.add_argument(
        "--seed",
        type=int,
        default=42,
        help="random seed, 42 as in the official recipe (rank r uses seed + r); "
        "the same seed gives the same run, also across a resume",
    )
    parser.add_argument(
        "--history",
        default=None,
        help="write the run's per-epoch record to this JSON file at the end (rank 0): a list "
        "of {epoch, loss, ap, stats (the 12 COCO numbers with --eval), seconds, steps}",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = config_from_args(args)
    # a resumed run takes every weight from its checkpoint; otherwise the config must name the
    # backbone's pretrained weights (or `none`): checked and fetched before the dataset is read
    # (with -r auto checked always: the same command may start the run)
    auto = args.resume == AUTO_RESUME
    pretrain = None if args.resume and not auto else check_pretrain_weights(cfg, args.config)
    init_parallel_env()
    with RankFailureGuard():
        resume = auto_resume_checkpoint(cfg) if auto else args.resume
        if resume:
            pretrain = None
        elif pretrain:
            pretrain = fetch_pretrain_weights(pretrain, args.config)  # every rank (one collective)
        rank = dist.get_rank()
        set_random_seed(args.seed + rank)
        trainer = DACTrainer(cfg, mode="train")
        trainer.set_seed(args.seed + rank)
        if resume:
            trainer.resume_weights(resume)
        elif pretrain:
            load_pretrain_weights(trainer.model, pretrain)
        trainer.train(args.eval)
        if args.history and rank == 0:
            os.makedirs(os.path.dirname(os.path.abspath(args.history)), exist_ok=True)
            write_text(args.history, json.dumps(trainer.history, indent=1))
    return trainer


if __name__ == "__main__":
    run_cli(main)
