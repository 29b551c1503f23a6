"""Train a ppdet_dac model with ppdet's Trainer (single process or paddle.distributed.launch).

    python tools/train.py -c configs/demo/dac_demo.yml [--eval] [-r CKPT] [-o key=value ...]
"""
import _threads  # noqa: F401  (before paddle: CPU thread count)
import ppdet_dac  # noqa: F401  (registers ppdet_dac's classes; must precede load_config)

import paddle
from ppdet.engine import Trainer, init_parallel_env, set_random_seed
from ppdet.utils.cli import ArgsParser, merge_args
from ppdet.utils.logger import setup_logger

from ppdet_dac.engine import load_checked_config

logger = setup_logger("train")


def parse_args(argv=None):
    parser = ArgsParser()
    parser.add_argument("--eval", action="store_true", help="evaluate after every snapshot epoch")
    parser.add_argument("-r", "--resume", default=None, help="checkpoint to resume from")
    parser.add_argument("--amp", action="store_true", help="automatic mixed precision (GPU)")
    parser.add_argument("--use_vdl", action="store_true", help="log scalars to VisualDL")
    parser.add_argument("--vdl_log_dir", default="vdl_log_dir/scalar", help="VisualDL log dir")
    parser.add_argument("--seed", type=int, default=None, help="random seed")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_checked_config(args.config, args.opt)
    merge_args(cfg, args)
    paddle.set_device("gpu" if cfg.get("use_gpu", False) else "cpu")
    if args.seed is not None:
        set_random_seed(args.seed)
    init_parallel_env()
    trainer = Trainer(cfg, mode="train")
    if args.resume:
        trainer.resume_weights(args.resume)
    elif cfg.get("pretrain_weights"):
        trainer.load_weights(cfg.pretrain_weights)
    trainer.train(args.eval)


if __name__ == "__main__":
    main()
