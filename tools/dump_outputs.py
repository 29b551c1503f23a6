"""Dump a model's raw outputs (or training losses) on a preprocessed input to an .npz file.

For exact comparisons with another implementation of the same model, or for checking a weight
conversion. Eval mode (keys: see ppdet_dac/engine/dump.py):

    python tools/dump_outputs.py -c configs/dac_cdn_ice_r50.yml -o weights=W.pdparams \\
        --input X.npy [--mask M.npy] [--topk-indices I.npy] [--dtype float64] \\
        [--orig-size H W] --out OUT.npz

X.npy: [B, 3, H, W] float, already resized and normalised; M.npy: [B, H, W] bool, True =
padding (all False when absent); I.npy: [B, num_queries] int, replaces the two-stage top-k.

Training mode (writes loss/<name> for every term, loss_weight/<name> and loss_total):

    python tools/dump_outputs.py -c CONFIG -o weights=W --input X.npy --train \\
        --targets T.json --dn-noise N.npz [--seed 0] --out LOSSES.npz

T.json: per image {"boxes": [[cx, cy, w, h], ...] (normalised), "labels": [ids]} in the
model's class space (COCO category ids for class_id_mode coco_raw). N.npz: dn_label_noise_p
[P], dn_new_label [K], dn_rand_sign [P, 4], dn_rand_part_raw [P, 4] (spec 1.9).
"""
import _threads  # noqa: F401  (before paddle: CPU thread count)
import ppdet_dac  # noqa: F401  (registers ppdet_dac's classes; must precede load_config)

import paddle
from ppdet.utils.cli import ArgsParser

from ppdet_dac.engine import load_checked_config
from ppdet_dac.engine.dump import (DTYPES, build_model, dump_eval_outputs, dump_train_losses,
                                   load_dn_noise, load_input, load_targets, save_npz)


def parse_args(argv=None):
    parser = ArgsParser()
    parser.add_argument("--input", required=True, help="preprocessed input [B, 3, H, W] (.npy)")
    parser.add_argument("--mask", default=None, help="padding mask [B, H, W] (.npy, True = pad)")
    parser.add_argument("--topk-indices", default=None,
                        help="[B, num_queries] indices replacing the two-stage top-k (.npy)")
    parser.add_argument("--dtype", default="float32", choices=DTYPES,
                        help="run the whole model in this precision (eval dump)")
    parser.add_argument("--orig-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="scale post-processed boxes to this image size (default: input)")
    parser.add_argument("--train", action="store_true", help="training forward: dump the losses")
    parser.add_argument("--targets", default=None, help="T.json targets (with --train)")
    parser.add_argument("--dn-noise", default=None, help="N.npz denoising draws (with --train)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the one-to-many subsampling (and of DN noise without N.npz)")
    parser.add_argument("--out", required=True, help="output .npz")
    args = parser.parse_args(argv)
    if args.train:
        if args.targets is None:
            parser.error("--train needs --targets T.json")
        if args.dtype != "float32" or args.topk_indices or args.orig_size:
            parser.error("--dtype, --topk-indices and --orig-size apply to the eval dump only")
    elif args.targets or args.dn_noise:
        parser.error("--targets and --dn-noise need --train")
    return args


def main(argv=None):
    args = parse_args(argv)
    cfg = load_checked_config(args.config, args.opt)
    paddle.set_device("cpu")
    if not cfg.get("weights"):
        raise ValueError(f"{args.config}: no weights given; pass -o weights=PATH")
    model = build_model(cfg, cfg.weights)
    num_queries = model.transformer.num_queries
    image, mask, topk = load_input(args.input, args.mask, args.topk_indices, num_queries)
    if args.train:
        tr = model.transformer
        labels, boxes = load_targets(args.targets, image.shape[0], tr.num_classes)
        noise = None
        if args.dn_noise:
            noise = load_dn_noise(args.dn_noise, [len(l) for l in labels], tr.num_denoising,
                                  tr.num_classes, tr.label_noise_ratio)
        arrays = dump_train_losses(model, image, mask, labels, boxes, noise, seed=args.seed)
    else:
        arrays = dump_eval_outputs(model, image, mask, topk, dtype=args.dtype,
                                   orig_size=args.orig_size)
    save_npz(args.out, arrays)
    return arrays


if __name__ == "__main__":
    main()
