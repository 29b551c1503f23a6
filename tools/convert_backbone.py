r"""Convert ImageNet backbone weights (PyTorch .pth) into ppdet backbone weights. No torch needed.

    python tools/convert_backbone.py --src resnet50-19c8e357.pth \
        --dst output/weights/resnet50.pdparams
    python tools/convert_backbone.py --src swin_large_patch4_window12_384_22k.pth \
        --dst output/weights/swin_large_384_22k.pdparams

torchvision ResNets (18/34/50/101/152) become ppdet ResNet variant b names (the stride sits in the
3x3 conv, as in torchvision); Swin checkpoints (microsoft/Swin-Transformer, {'model': ...}) become
ppdet SwinTransformer names. Names carry no 'backbone.' prefix, as ppdet's ImageNet weights:
point a config's `pretrain_weights` at the output and ppdet matches them to `backbone.*`.
"""

import argparse
import math

import ppdet_dac  # noqa: F401

import paddle
from ppdet.modeling.backbones.resnet import ResNet
from ppdet.modeling.backbones.swin_transformer import SwinTransformer

from ppdet_dac.interop import read_pth
from ppdet_dac.interop.mapping import (
    convert_swin,
    convert_torchvision_resnet,
    find_state_dict,
    load_and_save,
    state_specs,
    torchvision_block_counts,
)
from ppdet_dac.utils.cli import run_cli

RESNET_DEPTHS = {
    (2, 2, 2, 2, False): 18,
    (3, 4, 6, 3, False): 34,
    (3, 4, 6, 3, True): 50,
    (3, 4, 23, 3, True): 101,
    (3, 8, 36, 3, True): 152,
}


def detect_architecture(state, source_name):
    if "layer1.0.conv1.weight" in state:
        return "resnet"
    if "patch_embed.proj.weight" in state:
        return "swin"
    raise ValueError(
        f"{source_name}: neither a torchvision ResNet ('layer1.0.conv1.weight') nor a "
        f"Swin Transformer ('patch_embed.proj.weight') state dict; first keys: "
        f"{', '.join(list(state)[:8])}"
    )


def resnet_target(state, source_name):
    """ppdet ResNet variant b of the depth the torchvision block counts imply."""
    counts = torchvision_block_counts(state)
    layout = tuple(counts.get(stage, 0) for stage in (2, 3, 4, 5)) + (
        "layer1.0.conv3.weight" in state,
    )
    if layout not in RESNET_DEPTHS:
        raise ValueError(
            f"{source_name}: blocks per stage {layout[:4]} (bottleneck={layout[4]}) "
            "match no ResNet depth (18, 34, 50, 101, 152)"
        )
    return ResNet(
        depth=RESNET_DEPTHS[layout],
        variant="b",
        norm_type="bn",
        freeze_norm=True,
        freeze_at=-1,
        return_idx=[0, 1, 2, 3],
        num_stages=4,
    )


def swin_target(state, source_name, out_indices=(1, 2, 3)):
    """ppdet SwinTransformer with the width, depths, heads and window the checkpoint implies."""
    embed_dim = int(state["patch_embed.proj.weight"].shape[0])
    depths, heads, window = [], [], None
    while f"layers.{len(depths)}.blocks.0.norm1.weight" in state:
        i = len(depths)
        depths.append(
            sum(
                1
                for k in state
                if k.startswith(f"layers.{i}.blocks.") and k.endswith(".norm1.weight")
            )
        )
        table = state[f"layers.{i}.blocks.0.attn.relative_position_bias_table"]
        heads.append(int(table.shape[1]))
        window = int(round((math.sqrt(table.shape[0]) + 1) / 2))
    if not depths:
        raise ValueError(f"{source_name}: no 'layers.0.blocks.0.*' keys; not a Swin checkpoint")
    return SwinTransformer(
        embed_dim=embed_dim,
        depths=depths,
        num_heads=heads,
        window_size=window,
        out_indices=out_indices,
        drop_path_rate=0.0,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--src", required=True, help="ImageNet checkpoint (.pth, torch.save)")
    parser.add_argument("--dst", required=True, help="output weights (.pdparams)")
    parser.add_argument(
        "--arch",
        choices=["auto", "resnet", "swin"],
        default="auto",
        help="source architecture (auto: from the key names)",
    )
    args = parser.parse_args(argv)

    paddle.set_device("cpu")
    checkpoint = read_pth(args.src)
    state = find_state_dict(checkpoint, args.src)
    arch = detect_architecture(state, args.src) if args.arch == "auto" else args.arch
    if arch == "resnet":
        target = resnet_target(state, args.src)
        converted = convert_torchvision_resnet(state, state_specs(target), source_name=args.src)
    else:
        target = swin_target(state, args.src)
        converted = convert_swin(state, state_specs(target), source_name=args.src)
    return load_and_save(target, converted, args.dst)


if __name__ == "__main__":
    run_cli(main)
