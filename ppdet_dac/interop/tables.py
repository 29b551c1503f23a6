"""The name tables from PyTorch checkpoints onto ppdet_dac / ppdet parameter names.

A table is a sequence of rules ``(source regex, target, kind)``: the regex must match the whole
source key, ``target`` is a ``re`` replacement template (or a function of the match), and
``kind`` says how the tensor changes:

* ``COPY``   same layout (convolutions, norms, embeddings, biases, level_embed);
* ``LINEAR`` a ``nn.Linear`` weight: PyTorch stores [out, in], Paddle [in, out] -> transpose;
* ``QKV_WEIGHT`` / ``QKV_BIAS`` PyTorch ``nn.MultiheadAttention`` packs q, k, v into one
  ``in_proj_weight`` [3C, C] / ``in_proj_bias`` [3C]; Paddle has separate q/k/v projections:
  split into thirds (weights also transposed); ``{qkv}`` in the target becomes q, k, v.

The source regexes keep to the subset ``regex_strings.py`` reads (literals, groups with
alternatives, character sets, ``\\d``, ``?``, ``\\d+``, ``.+``), so ``inverse.py`` can list the
keys each rule matches. ``convert.py`` applies a table, ``inverse.py`` runs it backwards.
"""

import re

COPY, LINEAR, QKV_WEIGHT, QKV_BIAS = "copy", "linear", "qkv_weight", "qkv_bias"

# ---------------------------------------------------------------------------------------------
# torchvision ResNet (also the official DAC-DETR backbone, under 'backbone.0.body.')
# -> ppdet ResNet variant 'b' (stride in the 3x3 conv, as torchvision)
# ---------------------------------------------------------------------------------------------
_BN_PARAMS = {
    "weight": "weight",
    "bias": "bias",
    "running_mean": "_mean",
    "running_var": "_variance",
}
_BN = "(?P<param>weight|bias|running_mean|running_var)"
_BRANCH = {"1": "branch2a", "2": "branch2b", "3": "branch2c"}
# torchvision's ImageNet classifier and BN step counters have no ppdet counterpart.
TORCHVISION_RESNET_IGNORED = (r"fc\.(weight|bias)", r"(.+\.)?num_batches_tracked")


def ppdet_block_name(stage, index, count):
    """ppdet's NameAdapter: res{stage}{a,b,c..}; a stage-4 with > 10 blocks uses a, b1, b2, ..."""
    if stage == 4 and count > 10:
        return f"res4{'a' if index == 0 else 'b' + str(index)}"
    return f"res{stage}{chr(ord('a') + index)}"


def _stage_blocks(names, pattern, stage_offset):
    """{ppdet stage number: set of block ids} of the names ``pattern`` matches at their start
    (group 1: the stage number, minus ``stage_offset``; group 2: the block id)."""
    found = {}
    for name in names:
        m = pattern.match(name)
        if m:
            found.setdefault(int(m.group(1)) + stage_offset, set()).add(m.group(2))
    return found


def torchvision_block_counts(keys, prefix=""):
    """{ppdet stage number: number of blocks} read from torchvision 'layer{L}.{i}.' key names."""
    found = _stage_blocks(keys, re.compile(re.escape(prefix) + r"layer(\d)\.(\d+)\."), 1)
    return {stage: max(int(i) for i in ids) + 1 for stage, ids in found.items()}


def ppdet_block_counts(names, prefix=""):
    """{ppdet stage number: number of blocks} read from ppdet 'res{S}.res{S}<block>.' names."""
    found = _stage_blocks(names, re.compile(re.escape(prefix) + r"res(\d)\.(res\d[a-z]\d*)\."), 0)
    return {stage: len(ids) for stage, ids in found.items()}


def torchvision_resnet_rules(block_counts, src_prefix="", dst_prefix=""):
    """Rules for a torchvision ResNet under ``src_prefix`` onto ppdet names under ``dst_prefix``."""
    src, dst = re.escape(src_prefix), dst_prefix

    def block(m, part):
        stage = int(m.group("layer")) + 1
        name = ppdet_block_name(stage, int(m.group("i")), block_counts.get(stage, 0))
        return f"{dst}res{stage}.{name}.{part}"

    def bn(m):
        return _BN_PARAMS[m.group("param")]

    blk = src + r"layer(?P<layer>\d)\.(?P<i>\d+)\."
    return (
        (src + r"conv1\.weight", lambda m: f"{dst}conv1.conv1.conv.weight", COPY),
        (src + r"bn1\." + _BN, lambda m: f"{dst}conv1.conv1.norm.{bn(m)}", COPY),
        (
            blk + r"conv(?P<j>[123])\.weight",
            lambda m: block(m, f"{_BRANCH[m.group('j')]}.conv.weight"),
            COPY,
        ),
        (
            blk + r"bn(?P<j>[123])\." + _BN,
            lambda m: block(m, f"{_BRANCH[m.group('j')]}.norm.{bn(m)}"),
            COPY,
        ),
        (blk + r"downsample\.0\.weight", lambda m: block(m, "short.conv.weight"), COPY),
        (blk + r"downsample\.1\." + _BN, lambda m: block(m, f"short.norm.{bn(m)}"), COPY),
    )


# ---------------------------------------------------------------------------------------------
# Official DAC-DETR (huzhengdongcs/DAC-DETR, H-DETR code base) -> ppdet_dac DACDETR
# ---------------------------------------------------------------------------------------------
_T = r"transformer\."
_ENC, _DEC = _T + r"encoder\.layers\.(\d+)\.", _T + r"decoder\.layers\.(\d+)\."
_MSDA = r"(sampling_offsets|attention_weights|value_proj|output_proj)"
_WB = r"\.(?P<wb>weight|bias)"


def _linear(src, dst):
    """A Linear layer: its weight transposed, its bias copied (``dst`` without .weight/.bias)."""
    return ((src + r"\.weight", dst + ".weight", LINEAR), (src + r"\.bias", dst + ".bias", COPY))


def _same(src, dst):
    """A layer whose weight and bias keep their layout (norms, convolutions)."""
    return ((src + _WB, dst + r".\g<wb>", COPY),)


OFFICIAL_DAC_RULES = (
    (_T + r"level_embed", r"transformer.level_embed", COPY),
    *_same(r"input_proj\.(\d+)\.([01])", r"transformer.input_proj.\1.\2"),
    # encoder layer: norm1 after deformable self-attention, linear1/2 + norm2 the FFN
    *_linear(_ENC + r"self_attn\." + _MSDA, r"transformer.encoder.layers.\1.self_attn.\2"),
    *_same(_ENC + r"norm1", r"transformer.encoder.layers.\1.norm"),
    *_linear(_ENC + r"linear([12])", r"transformer.encoder.layers.\1.ffn.linear\2"),
    *_same(_ENC + r"norm2", r"transformer.encoder.layers.\1.ffn.norm"),
    # decoder layer: self_attn + norm2, cross_attn + norm1, linear1/2 + norm3
    (
        _DEC + r"self_attn\.in_proj_weight",
        r"transformer.decoder.layers.\1.self_attn.{qkv}_proj.weight",
        QKV_WEIGHT,
    ),
    (
        _DEC + r"self_attn\.in_proj_bias",
        r"transformer.decoder.layers.\1.self_attn.{qkv}_proj.bias",
        QKV_BIAS,
    ),
    *_linear(_DEC + r"self_attn\.out_proj", r"transformer.decoder.layers.\1.self_attn.out_proj"),
    *_same(_DEC + r"norm2", r"transformer.decoder.layers.\1.norm_sa"),
    *_linear(_DEC + r"cross_attn\." + _MSDA, r"transformer.decoder.layers.\1.cross_attn.\2"),
    *_same(_DEC + r"norm1", r"transformer.decoder.layers.\1.norm_ca"),
    *_linear(_DEC + r"linear([12])", r"transformer.decoder.layers.\1.ffn.linear\2"),
    *_same(_DEC + r"norm3", r"transformer.decoder.layers.\1.ffn.norm"),
    # per-layer heads: clones 0-5 for the decoder layers, clone 6 for the encoder proposals
    *_linear(r"class_embed\.(\d+)", r"transformer.class_heads.\1"),
    *_linear(r"bbox_embed\.(\d+)\.layers\.(\d+)", r"transformer.box_heads.\1.layers.\2"),
    # two-stage proposal features and the query_pos projection (same sine layout as ours)
    *_linear(_T + r"(enc_output|pos_trans)", r"transformer.query_selection.\1"),
    *_same(_T + r"(enc_output_norm|pos_trans_norm)", r"transformer.query_selection.\1"),
    # content queries (mixed selection) and the denoising label embedding (92 = 91 classes + 1)
    (r"(query_embed|label_enc)\.weight", r"transformer.\1.weight", COPY),
)
# transformer.decoder.{class,bbox}_embed are the same modules as the top-level heads: these keys
# share storage with their twins and are checked for equality instead of converted twice.
OFFICIAL_DAC_ALIASES = ((_T + r"decoder\.((class|bbox)_embed\..+)", r"\1"),)
OFFICIAL_DAC_BACKBONE_PREFIX = "backbone.0.body."
OFFICIAL_DAC_IGNORED = (r"(.+\.)?num_batches_tracked",)


def official_dac_rules(state_keys):
    """The full table for an official checkpoint: transformer rules + its backbone's (a
    torchvision ResNet, or for the Swin-L models the detection Swin with per-output norms)."""
    body = OFFICIAL_DAC_BACKBONE_PREFIX
    if any(key.startswith(body + "patch_embed.") for key in state_keys):
        return _official_dac_table(None)
    return _official_dac_table(torchvision_block_counts(state_keys, body))


def official_dac_rules_for_model(model_names):
    """The same table as ``official_dac_rules``, chosen from our model's names instead of the
    checkpoint's (Swin: 'backbone.patch_embed.*'; ResNet block counts from 'backbone.res*')."""
    if any(name.startswith("backbone.patch_embed.") for name in model_names):
        return _official_dac_table(None)
    return _official_dac_table(ppdet_block_counts(model_names, "backbone."))


def _official_dac_table(resnet_block_counts):
    """Transformer rules + a Swin backbone's (``resnet_block_counts`` None) or a torchvision
    ResNet's with {ppdet stage: number of blocks}."""
    body = OFFICIAL_DAC_BACKBONE_PREFIX
    if resnet_block_counts is None:
        return OFFICIAL_DAC_RULES + _prefixed(
            SWIN_RULES + SWIN_OUTPUT_NORM_RULES, body, "backbone."
        )
    return OFFICIAL_DAC_RULES + torchvision_resnet_rules(resnet_block_counts, body, "backbone.")


def _prefixed(rules, src_prefix, dst_prefix):
    """The same (string-template) rules for keys under ``src_prefix`` / ``dst_prefix``."""
    return tuple(
        (re.escape(src_prefix) + pattern, dst_prefix + target, kind)
        for pattern, target, kind in rules
    )


def torchvision_resnet_table(state_keys):
    """Rules for a bare torchvision ResNet state dict -> ppdet ResNet names (no prefix)."""
    return torchvision_resnet_rules(torchvision_block_counts(state_keys))


OFFICIAL_DAC_HINTS = (
    (
        r"-> transformer\.class_heads\.\d+\.\w+: model needs",
        "the official class heads have 91 outputs (raw COCO category ids 0-90): convert with a "
        "config that keeps DACDETR.class_id_mode: coco_raw (num_classes 91), e.g. "
        "configs/dac_cdn_ice_r50.yml",
    ),
    (
        r"-> transformer\.input_proj\.\d\.0\.weight: model needs",
        "input_proj follows the backbone's channels: an R50 checkpoint (512/1024/2048) needs an R50 "
        "config, a Swin-L one (384/768/1536) a Swin-L config",
    ),
)


# ---------------------------------------------------------------------------------------------
# Swin Transformer (microsoft/Swin-Transformer ImageNet checkpoints, e.g.
# swin_large_patch4_window12_384_22k.pth) -> ppdet SwinTransformer (same module names)
# ---------------------------------------------------------------------------------------------
_BLK = r"layers\.(\d+)\.blocks\.(\d+)\."
SWIN_RULES = (
    *_same(r"patch_embed\.(proj|norm)", r"patch_embed.\1"),
    *_same(_BLK + r"(norm1|norm2)", r"layers.\1.blocks.\2.\3"),
    (
        _BLK + r"attn\.(relative_position_bias_table|relative_position_index)",
        r"layers.\1.blocks.\2.attn.\3",
        COPY,
    ),
    *_linear(_BLK + r"(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)", r"layers.\1.blocks.\2.\3"),
    (
        r"layers\.(\d+)\.downsample\.reduction\.weight",
        r"layers.\1.downsample.reduction.weight",
        LINEAR,
    ),
    *_same(r"layers\.(\d+)\.downsample\.norm", r"layers.\1.downsample.norm"),
)
# The classifier (head, its final norm) and the precomputed shifted-window masks are not used by
# a detection backbone; ppdet's per-output norms norm{i} are new layers, absent from ImageNet
# checkpoints (the official DAC-DETR code also starts them from scratch).
SWIN_IGNORED = (r"head\.(weight|bias)", r"norm\.(weight|bias)", _BLK + r"attn_mask")
SWIN_NEW_LAYERS = (r"norm\d+\.(weight|bias)",)
# A detection checkpoint (the official Swin-L DAC-DETR) has trained per-output norms.
SWIN_OUTPUT_NORM_RULES = _same(r"(norm\d+)", r"\1")
