"""Dump a model's raw outputs (or training losses and gradients) on a preprocessed input to an .npz.

For exact comparisons with another implementation of the same model, or for checking a weight
conversion. Eval mode (keys: see ppdet_dac/analysis/dump.py):

    python tools/dump_outputs.py -c configs/dac_cdn_ice_r50.yml -o weights=W.pdparams \\
        --input X.npy [--mask M.npy] [--topk-indices I.npy] [--dtype float64] \\
        [--orig-size H W] --out OUT.npz

X.npy: [B, 3, H, W] float, already resized and normalised; M.npy: [B, H, W] bool, True =
padding (all False when absent); I.npy: [B, num_queries] int, replaces the two-stage top-k.

Training mode: forward, then backward of loss_total:

    python tools/dump_outputs.py -c CONFIG -o weights=W --input X.npy [--mask M.npy] --train \\
        --targets T.json --dn-noise N.npz [--topk-indices I.npy] [--dtype float64] \\
        [--seed 0] --out LOSSES.npz

T.json: per image {"boxes": [[cx, cy, w, h], ...] (normalised), "labels": [ids]} in the
model's class space (COCO category ids for class_id_mode coco_raw). N.npz: dn_label_noise_p
[P], dn_new_label [K], dn_rand_sign [P, 4], dn_rand_part_raw [P, 4]
(docs/algorithm.md#4-contrastive-denoising). I.npy and --dtype as in eval mode (float64: the
whole model, targets, noise and losses in float64).
Keys written:
  loss/<name> []               every unweighted loss term (the official loss_dict names)
  loss_weight/<name> []        its weight;  loss_total [] the weighted sum that is backpropagated
  grad_total_norm []           float64 L2 norm of all parameter gradients before clipping (the
                               value official clip_grad_norm_ returns)
  grad/<official key> [shape]  gradient of loss_total under the official checkpoint's name and
                               layout (Linear [out, in], in_proj_weight [3C, C] / in_proj_bias
                               [3C], backbone.0.body.* torchvision / Swin names); the tied
                               transformer.decoder.{class,bbox}_embed.* keys repeat the arrays of
                               {class,bbox}_embed.*; frozen parameters have no entry.
"""

import _threads  # noqa: F401  (before paddle: CPU thread count)
import ppdet_dac  # noqa: F401  (first to load cv2: sets OpenCV's pixel limit; registers classes)

import paddle
from ppdet.utils.cli import ArgsParser

from ppdet_dac.engine import load_checked_config
from ppdet_dac.analysis.dump import (
    DTYPES,
    build_model,
    dump_eval_outputs,
    dump_train_losses,
    save_npz,
)
from ppdet_dac.analysis.dump_inputs import load_dn_noise, load_input, load_targets
from ppdet_dac.utils.cli import run_cli


def parse_args(argv=None):
    parser = ArgsParser()
    parser.add_argument("--input", required=True, help="preprocessed input [B, 3, H, W] (.npy)")
    parser.add_argument("--mask", default=None, help="padding mask [B, H, W] (.npy, True = pad)")
    parser.add_argument(
        "--topk-indices",
        default=None,
        help="[B, num_queries] indices replacing the two-stage top-k (.npy)",
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=DTYPES,
        help="run the whole model (and with --train targets, noise and losses) in this precision",
    )
    parser.add_argument(
        "--orig-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="scale post-processed boxes to this image size (default: input)",
    )
    parser.add_argument(
        "--train",
        action="store_true",
        help="training forward and backward: dump the losses and gradients",
    )
    parser.add_argument("--targets", default=None, help="T.json targets (with --train)")
    parser.add_argument("--dn-noise", default=None, help="N.npz denoising draws (with --train)")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the one-to-many subsampling (and of DN noise without N.npz)",
    )
    parser.add_argument("--out", required=True, help="output .npz")
    args = parser.parse_args(argv)
    if args.train:
        if args.targets is None:
            parser.error("--train needs --targets T.json")
        if args.orig_size:
            parser.error("--orig-size applies to the eval dump only")
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
        labels, boxes = load_targets(args.targets, image.shape[0], tr.num_classes, dtype=args.dtype)
        noise = None
        if args.dn_noise:
            noise = load_dn_noise(
                args.dn_noise,
                [len(l) for l in labels],
                tr.num_denoising,
                tr.num_classes,
                tr.label_noise_ratio,
            )
        arrays = dump_train_losses(
            model,
            image,
            mask,
            labels,
            boxes,
            noise,
            seed=args.seed,
            topk_indices=topk,
            dtype=args.dtype,
        )
    else:
        arrays = dump_eval_outputs(
            model, image, mask, topk, dtype=args.dtype, orig_size=args.orig_size
        )
    save_npz(args.out, arrays)
    return arrays


if __name__ == "__main__":
    run_cli(main)
