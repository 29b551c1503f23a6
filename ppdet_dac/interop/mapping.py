"""Name tables from PyTorch checkpoints onto ppdet_dac / ppdet parameter names, in one place.

A table is a sequence of rules ``(source regex, target, kind)``: the regex must match the whole
source key, ``target`` is a ``re`` replacement template (or a function of the match), and
``kind`` says how the tensor changes:

* ``COPY``   same layout (convolutions, norms, embeddings, biases, level_embed);
* ``LINEAR`` a ``nn.Linear`` weight: PyTorch stores [out, in], Paddle [in, out] -> transpose;
* ``QKV_WEIGHT`` / ``QKV_BIAS`` PyTorch ``nn.MultiheadAttention`` packs q, k, v into one
  ``in_proj_weight`` [3C, C] / ``in_proj_bias`` [3C]; Paddle has separate q/k/v projections:
  split into thirds (weights also transposed); ``{qkv}`` in the target becomes q, k, v.

``convert_state_dict`` applies a table and checks the result against the target model's names
and shapes, raising one ``ValueError`` that lists every missing, unexpected and mis-shaped key.

The way back (model names -> checkpoint names, e.g. gradients in the official layout) is derived
from the same tables, not written a second time: ``invert_rules`` enumerates the checkpoint keys
each rule's regex can match (numbers up to the largest one in the model's names) and keeps those
the forward table maps onto a model name; ``to_source_layout`` undoes the layout changes
(transpose back, pack q/k/v) and repeats tied tensors under their alias names.
"""
import os
import re

import re._parser as _sre   # the regex parser of Python 3.11 (the project's Python)

import numpy as np
import paddle
from ppdet.utils.logger import setup_logger

from ppdet_dac.utils.atomic import write_with

logger = setup_logger(__name__)

COPY, LINEAR, QKV_WEIGHT, QKV_BIAS = "copy", "linear", "qkv_weight", "qkv_bias"

# ---------------------------------------------------------------------------------------------
# torchvision ResNet (also the official DAC-DETR backbone, under 'backbone.0.body.')
# -> ppdet ResNet variant 'b' (stride in the 3x3 conv, as torchvision)
# ---------------------------------------------------------------------------------------------
_BN_PARAMS = {"weight": "weight", "bias": "bias", "running_mean": "_mean",
              "running_var": "_variance"}
_BN = "(?P<param>weight|bias|running_mean|running_var)"
_BRANCH = {"1": "branch2a", "2": "branch2b", "3": "branch2c"}
# torchvision's ImageNet classifier and BN step counters have no ppdet counterpart.
TORCHVISION_RESNET_IGNORED = (r"fc\.(weight|bias)", r"(.+\.)?num_batches_tracked")


def ppdet_block_name(stage, index, count):
    """ppdet's NameAdapter: res{stage}{a,b,c..}; a stage-4 with > 10 blocks uses a, b1, b2, ..."""
    if stage == 4 and count > 10:
        return f"res4{'a' if index == 0 else 'b' + str(index)}"
    return f"res{stage}{chr(ord('a') + index)}"


def torchvision_block_counts(keys, prefix=""):
    """{ppdet stage number: number of blocks} read from torchvision 'layer{L}.{i}.' key names."""
    counts = {}
    pattern = re.compile(re.escape(prefix) + r"layer(\d)\.(\d+)\.")
    for key in keys:
        m = pattern.match(key)
        if m:
            stage = int(m.group(1)) + 1
            counts[stage] = max(counts.get(stage, 0), int(m.group(2)) + 1)
    return counts


def ppdet_block_counts(names, prefix=""):
    """{ppdet stage number: number of blocks} read from ppdet 'res{S}.res{S}<block>.' names."""
    blocks = {}
    pattern = re.compile(re.escape(prefix) + r"res(\d)\.(res\d[a-z]\d*)\.")
    for name in names:
        m = pattern.match(name)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(m.group(2))
    return {stage: len(found) for stage, found in blocks.items()}


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
        (blk + r"conv(?P<j>[123])\.weight",
         lambda m: block(m, f"{_BRANCH[m.group('j')]}.conv.weight"), COPY),
        (blk + r"bn(?P<j>[123])\." + _BN,
         lambda m: block(m, f"{_BRANCH[m.group('j')]}.norm.{bn(m)}"), COPY),
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
    (_DEC + r"self_attn\.in_proj_weight",
     r"transformer.decoder.layers.\1.self_attn.{qkv}_proj.weight", QKV_WEIGHT),
    (_DEC + r"self_attn\.in_proj_bias",
     r"transformer.decoder.layers.\1.self_attn.{qkv}_proj.bias", QKV_BIAS),
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
        return OFFICIAL_DAC_RULES + _prefixed(SWIN_RULES + SWIN_OUTPUT_NORM_RULES, body,
                                              "backbone.")
    return OFFICIAL_DAC_RULES + torchvision_resnet_rules(resnet_block_counts, body, "backbone.")


def _prefixed(rules, src_prefix, dst_prefix):
    """The same (string-template) rules for keys under ``src_prefix`` / ``dst_prefix``."""
    return tuple((re.escape(src_prefix) + pattern, dst_prefix + target, kind)
                 for pattern, target, kind in rules)


def torchvision_resnet_table(state_keys):
    """Rules for a bare torchvision ResNet state dict -> ppdet ResNet names (no prefix)."""
    return torchvision_resnet_rules(torchvision_block_counts(state_keys))


OFFICIAL_DAC_HINTS = (
    (r"-> transformer\.class_heads\.\d+\.\w+: model needs",
     "the official class heads have 91 outputs (raw COCO category ids 0-90): convert with a "
     "config that keeps DACDETR.class_id_mode: coco_raw (num_classes 91), e.g. "
     "configs/dac_cdn_ice_r50.yml"),
    (r"-> transformer\.input_proj\.\d\.0\.weight: model needs",
     "input_proj follows the backbone's channels: an R50 checkpoint (512/1024/2048) needs an R50 "
     "config, a Swin-L one (384/768/1536) a Swin-L config"),
)


# ---------------------------------------------------------------------------------------------
# Swin Transformer (microsoft/Swin-Transformer ImageNet checkpoints, e.g.
# swin_large_patch4_window12_384_22k.pth) -> ppdet SwinTransformer (same module names)
# ---------------------------------------------------------------------------------------------
_BLK = r"layers\.(\d+)\.blocks\.(\d+)\."
SWIN_RULES = (
    *_same(r"patch_embed\.(proj|norm)", r"patch_embed.\1"),
    *_same(_BLK + r"(norm1|norm2)", r"layers.\1.blocks.\2.\3"),
    (_BLK + r"attn\.(relative_position_bias_table|relative_position_index)",
     r"layers.\1.blocks.\2.attn.\3", COPY),
    *_linear(_BLK + r"(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)", r"layers.\1.blocks.\2.\3"),
    (r"layers\.(\d+)\.downsample\.reduction\.weight", r"layers.\1.downsample.reduction.weight",
     LINEAR),
    *_same(r"layers\.(\d+)\.downsample\.norm", r"layers.\1.downsample.norm"),
)
# The classifier (head, its final norm) and the precomputed shifted-window masks are not used by
# a detection backbone; ppdet's per-output norms norm{i} are new layers, absent from ImageNet
# checkpoints (the official DAC-DETR code also starts them from scratch).
SWIN_IGNORED = (r"head\.(weight|bias)", r"norm\.(weight|bias)", _BLK + r"attn_mask")
SWIN_NEW_LAYERS = (r"norm\d+\.(weight|bias)",)
# A detection checkpoint (the official Swin-L DAC-DETR) has trained per-output norms.
SWIN_OUTPUT_NORM_RULES = _same(r"(norm\d+)", r"\1")


def _describe(obj):
    if isinstance(obj, dict):
        return "a dict with keys " + ", ".join(repr(k) for k in list(obj)[:10])
    return f"a {type(obj).__name__}"


def find_state_dict(obj, source_name, keys=("model", "state_dict")):
    """The state dict inside a loaded checkpoint: ``obj[k]`` for the first k in ``keys``, or
    ``obj`` itself when it already maps names to arrays."""
    if isinstance(obj, dict):
        for key in keys:
            if isinstance(obj.get(key), dict):
                return obj[key]
        if obj and all(isinstance(v, np.ndarray) for v in obj.values()):
            return obj
    raise ValueError(f"{source_name}: expected a state dict of tensors or a checkpoint dict with "
                     f"one under {' or '.join(repr(k) for k in keys)}; found {_describe(obj)}")


def convert_official(checkpoint, target_specs, source_name="checkpoint"):
    """An official DAC-DETR checkpoint ({'model': state_dict, ...}) -> our DACDETR state dict."""
    state = find_state_dict(checkpoint, source_name, keys=("model",))
    if state and all(key.startswith("module.") for key in state):   # saved from the DDP wrapper
        state = {key[len("module."):]: value for key, value in state.items()}
    return convert_state_dict(state, target_specs, official_dac_rules(state),
                              aliases=OFFICIAL_DAC_ALIASES, ignored=OFFICIAL_DAC_IGNORED,
                              source_name=source_name, hints=OFFICIAL_DAC_HINTS)


def convert_swin(checkpoint, target_specs, source_name="checkpoint"):
    """A Swin Transformer ImageNet checkpoint ({'model': state_dict}) -> ppdet SwinTransformer
    names without a prefix; the per-output norms are left to their initialisation."""
    state = find_state_dict(checkpoint, source_name)
    return convert_state_dict(state, target_specs, SWIN_RULES, ignored=SWIN_IGNORED,
                              new_layers=SWIN_NEW_LAYERS, source_name=source_name)


def convert_torchvision_resnet(checkpoint, target_specs, source_name="checkpoint"):
    """A torchvision ResNet state dict -> ppdet ResNet (variant b) names, without a prefix, as
    ppdet's ``pretrain_weights`` expects (load_pretrain_weight matches names by suffix)."""
    state = find_state_dict(checkpoint, source_name)
    return convert_state_dict(state, target_specs, torchvision_resnet_table(state),
                              ignored=TORCHVISION_RESNET_IGNORED, source_name=source_name)


# ---------------------------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------------------------
def _apply(kind, value, target):
    if kind == COPY:
        return [(target, value)]
    if kind == LINEAR:
        if value.ndim != 2:
            raise _ShapeError(f"a Linear weight must be 2-D, got {list(value.shape)}")
        return [(target, np.ascontiguousarray(value.T))]
    if kind in (QKV_WEIGHT, QKV_BIAS):
        if value.shape[0] % 3 != 0 or (kind == QKV_WEIGHT and value.ndim != 2):
            raise _ShapeError(f"a packed q/k/v projection needs [3C, ...], got {list(value.shape)}")
        parts = np.split(value, 3, axis=0)
        if kind == QKV_WEIGHT:
            parts = [np.ascontiguousarray(p.T) for p in parts]
        return [(target.replace("{qkv}", name), p) for name, p in zip("qkv", parts)]
    raise ValueError(f"unknown conversion kind {kind!r}")


class _ShapeError(Exception):
    pass


def _fmt(shape):
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def _first_match(patterns, key):
    """(payload, match) of the first (compiled regex, payload) that matches all of ``key``."""
    return next(((payload, m) for p, payload in patterns for m in [p.fullmatch(key)] if m),
                (None, None))


class _Conversion:
    """One pass over a source state dict; collects every problem before reporting any."""

    def __init__(self, source, target_specs, rules, aliases, source_name):
        self.source, self.specs, self.source_name = source, target_specs, source_name
        self.rules = [(re.compile(pattern), (target, kind)) for pattern, target, kind in rules]
        self.aliases = [(re.compile(pattern), twin) for pattern, twin in aliases]
        self.converted, self.origin = {}, {}
        self.unexpected, self.misshaped, self.tied = [], [], []
        self.misshaped_targets = set()   # reported once, as mis-shaped rather than also missing
        self.num_tied = 0

    def add(self, key, value):
        if not isinstance(value, np.ndarray):
            self.unexpected.append(f"{key} (a {type(value).__name__}, not a tensor)")
            return
        twin, m = _first_match(self.aliases, key)
        if m:
            self._check_tied(key, value, m.expand(twin))
            return
        rule, m = _first_match(self.rules, key)
        if not m:
            self.unexpected.append(f"{key} {_fmt(value.shape)}")
            return
        target, kind = rule
        target = target(m) if callable(target) else m.expand(target)
        try:
            outputs = _apply(kind, value, target)
        except _ShapeError as exc:
            self.misshaped.append(f"{key} {_fmt(value.shape)}: {exc}")
            self.misshaped_targets.update(target.replace("{qkv}", part) for part in "qkv")
            return
        for name, array in outputs:
            self._place(key, value, kind, name, array)

    def _check_tied(self, key, value, twin_key):
        self.num_tied += 1
        twin = self.source.get(twin_key)
        if not isinstance(twin, np.ndarray):
            self.tied.append(f"{key} is a second name of {twin_key}, which is missing")
        elif twin.shape != value.shape or not np.array_equal(twin, value):
            self.tied.append(f"{key} should be the same tensor as {twin_key} but differs")

    def _place(self, key, value, kind, name, array):
        source = f"{key} {_fmt(value.shape)}"
        if name not in self.specs:
            self.unexpected.append(f"{source} (maps to {name}, which the model does not have)")
        elif name in self.converted:
            self.unexpected.append(f"{source} (maps to {name}, already filled by "
                                   f"{self.origin[name]})")
        elif tuple(array.shape) != tuple(self.specs[name][0]):
            shown = _fmt(array.shape) + (f" after {kind}" if kind != COPY else "")
            self.misshaped.append(f"{source} -> {name}: model needs "
                                  f"{_fmt(self.specs[name][0])}, checkpoint gives {shown}")
            self.misshaped_targets.add(name)
        else:
            self.converted[name], self.origin[name] = array, key

    def raise_problems(self, missing, hints):
        problems = [("missing from the checkpoint", missing),
                    ("unexpected in the checkpoint", self.unexpected),
                    ("mis-shaped", self.misshaped), ("inconsistent tied weights", self.tied)]
        if not any(lines for _, lines in problems):
            return
        text = [f"{self.source_name} does not match the model ({len(self.converted)} of "
                f"{len(self.specs)} parameters converted):"]
        for title, lines in problems:
            if lines:
                text.append(f"  {len(lines)} {title}:")
                text.extend(f"    {line}" for line in lines)
        listing = "\n".join(text)
        text.extend(f"  hint: {advice}" for pattern, advice in hints if re.search(pattern, listing))
        raise ValueError("\n".join(text))


def convert_state_dict(source, target_specs, rules, aliases=(), ignored=(), new_layers=(),
                       source_name="checkpoint", hints=()):
    """Rename and re-lay-out ``source`` for a model.

    source: {name: numpy array} in the checkpoint's layout.
    target_specs: {model parameter name: (shape tuple, dtype str)} of the model to load into.
    rules / aliases / ignored: a table (see the module docstring); ``aliases`` are
      ``(regex, twin template)``: keys that must equal their twin and are otherwise skipped;
      ``ignored`` regexes are dropped silently (counted in the log); ``new_layers`` regexes
      name model parameters the checkpoint is not expected to have (left out of the result).
    hints: ``(regex over the problem lines, advice)``; advice is appended when a line matches.
    Returns {model name: numpy array of the model's dtype}, in ``target_specs`` order (without
    the ``new_layers``).
    Raises ValueError naming ``source_name`` and listing all missing, unexpected and mis-shaped
    keys when the checkpoint does not fill the model exactly.
    """
    ignored = [re.compile(pattern) for pattern in ignored]
    new_layers = [re.compile(pattern) for pattern in new_layers]
    run = _Conversion(source, target_specs, rules, aliases, source_name)
    num_ignored = 0
    for key, value in source.items():
        if any(p.fullmatch(key) for p in ignored):
            num_ignored += 1
        else:
            run.add(key, value)
    left = [name for name in target_specs
            if name not in run.converted and name not in run.misshaped_targets]
    fresh = [name for name in left if any(p.fullmatch(name) for p in new_layers)]
    run.raise_problems([f"{name} {_fmt(target_specs[name][0])}" for name in left
                        if name not in fresh], hints)
    logger.info(f"{source_name}: converted {len(run.converted)} parameters "
                f"({run.num_tied} tied duplicates checked, {num_ignored} ignored entries"
                + (f", {len(fresh)} new model parameters left to their initialisation: "
                   f"{', '.join(fresh)}" if fresh else "") + ")")
    return {name: run.converted[name].astype(spec[1], copy=False)
            for name, spec in target_specs.items() if name in run.converted}


# ---------------------------------------------------------------------------------------------
# the way back: model names -> checkpoint names and layout, derived from the same tables
# ---------------------------------------------------------------------------------------------
_DIGIT = [(_sre.IN, [(_sre.CATEGORY, _sre.CATEGORY_DIGIT)])]   # the parsed form of \d


def _regex_strings(items, numbers, texts):
    r"""Every string the parsed regex ``items`` matches, with each run of digits (``\d+``) taken
    from ``numbers`` and each ``.+`` from ``texts``. Supports the constructs of the tables above
    (literals, character sets, groups, alternatives, ``?``); anything else raises ValueError."""
    strings = [""]
    for op, arg in items:
        options = _regex_item_strings(op, arg, numbers, texts)
        strings = [head + tail for head in strings for tail in options]
    return strings


def _charset(arg):
    chars = []
    for kind, value in arg:
        if kind == _sre.LITERAL:
            chars.append(chr(value))
        elif kind == _sre.RANGE:
            chars.extend(chr(c) for c in range(value[0], value[1] + 1))
        elif kind == _sre.CATEGORY and value == _sre.CATEGORY_DIGIT:
            chars.extend("0123456789")
        else:
            raise ValueError(f"cannot invert a table rule with the character set item {kind}")
    return chars


def _regex_item_strings(op, arg, numbers, texts):
    if op == _sre.LITERAL:
        return [chr(arg)]
    if op == _sre.IN:
        return _charset(arg)
    if op == _sre.SUBPATTERN:
        return _regex_strings(arg[-1], numbers, texts)
    if op == _sre.BRANCH:
        return [text for branch in arg[1] for text in _regex_strings(branch, numbers, texts)]
    if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT):
        low, high, item = arg
        if (low, high) == (0, 1):
            return [""] + _regex_strings(item, numbers, texts)
        if (low, high) == (1, _sre.MAXREPEAT) and list(item) == _DIGIT:
            return [str(n) for n in numbers]
        if (low, high) == (1, _sre.MAXREPEAT) and list(item) == [(_sre.ANY, None)]:
            return list(texts)
    raise ValueError(f"cannot invert a table rule with the regex construct {op} {arg}")


def _numbers_in(names):
    r"""0 .. the largest number written in ``names``: the values a rule's ``\d+`` can take."""
    found = [int(run) for name in names for run in re.findall(r"\d+", name)]
    return range(max(found, default=0) + 1)


def invert_rules(rules, target_names, aliases=(), ignored=()):
    r"""The inverse of a table on ``target_names``.

    Every rule's source regex is enumerated (``\d+`` over 0 .. the largest number in the
    names); a source key counts when ``convert_state_dict`` would map it with that rule (no
    earlier rule, alias or ignored pattern takes it) onto one of ``target_names``.
    Returns {target name: (source key, kind, part)}; ``part`` is None, or 0 / 1 / 2 for the
    q / k / v third of a packed projection. Names no rule reaches are left out; two source keys
    for one name raise ValueError.
    """
    names = set(target_names)
    numbers = _numbers_in(names)
    compiled = [(re.compile(pattern), index) for index, (pattern, _, _) in enumerate(rules)]
    taken = [re.compile(pattern) for pattern, _ in aliases] + [re.compile(p) for p in ignored]
    inverse = {}
    for index, (pattern, target, kind) in enumerate(rules):
        regex = compiled[index][0]
        for key in _regex_strings(_sre.parse(pattern), numbers, ()):
            m = regex.fullmatch(key)
            name = target(m) if callable(target) else m.expand(target)
            parts = ([(name.replace("{qkv}", qkv), i) for i, qkv in enumerate("qkv")]
                     if kind in (QKV_WEIGHT, QKV_BIAS) else [(name, None)])
            parts = [(n, part) for n, part in parts if n in names]
            if not parts or _first_match(compiled, key)[0] != index or \
                    any(p.fullmatch(key) for p in taken):
                continue
            for n, part in parts:
                if n in inverse and inverse[n][0] != key:
                    raise ValueError(f"cannot invert the table: {n} comes from both "
                                     f"{inverse[n][0]} and {key}")
                inverse[n] = (key, kind, part)
    return inverse


def invert_aliases(aliases, source_keys):
    """{source key: [its alias keys]}: the keys an ``aliases`` table ties to ``source_keys``
    (each ``.+`` of an alias regex is enumerated over the keys' dotted suffixes)."""
    keys = set(source_keys)
    texts = sorted({key.split(".", i)[-1] for key in keys for i in range(key.count(".") + 1)})
    found = {}
    for pattern, twin in aliases:
        regex = re.compile(pattern)
        for alias in _regex_strings(_sre.parse(pattern), range(0), texts):
            m = regex.fullmatch(alias)
            if m and m.expand(twin) in keys and alias not in keys:
                found.setdefault(m.expand(twin), []).append(alias)
    return found


def _unapply(kind, parts, key):
    """The inverse of ``_apply``: ``parts`` {None: array} or {0: q, 1: k, 2: v} in the model's
    layout -> the checkpoint's array for ``key``."""
    if kind == COPY:
        return parts[None]
    if kind == LINEAR:
        return np.ascontiguousarray(parts[None].T)
    if kind in (QKV_WEIGHT, QKV_BIAS):
        missing = [qkv for i, qkv in enumerate("qkv") if i not in parts]
        if missing:
            raise ValueError(f"{key}: packing q/k/v needs all three projections, "
                             f"{'/'.join(missing)} missing")
        thirds = [parts[i].T if kind == QKV_WEIGHT else parts[i] for i in range(3)]
        return np.ascontiguousarray(np.concatenate(thirds, axis=0))
    raise ValueError(f"unknown conversion kind {kind!r}")


def to_source_layout(arrays, inverse, aliases=(), source_name="checkpoint"):
    """Model arrays -> checkpoint keys and layout (Linear weights transposed back to [out, in],
    q/k/v packed into in_proj_*); tied keys (``aliases``) get the very same array as their twin.

    arrays: {model name: numpy array in the model's layout}; inverse: from ``invert_rules``.
    Returns {checkpoint key: array}. A name without a checkpoint key raises ValueError listing
    every such name.
    """
    unknown = sorted(name for name in arrays if name not in inverse)
    if unknown:
        raise ValueError(f"{len(unknown)} model name(s) have no {source_name} key: "
                         + ", ".join(unknown))
    grouped = {}
    for name, array in arrays.items():
        key, kind, part = inverse[name]
        grouped.setdefault(key, (kind, {}))[1][part] = array
    result = {key: _unapply(kind, parts, key) for key, (kind, parts) in grouped.items()}
    for twin, names in invert_aliases(aliases, result).items():
        for alias in names:
            result[alias] = result[twin]
    return result


def official_dac_inverse(model_names):
    """{our DACDETR name: (official checkpoint key, kind, part)} for ``model_names`` (see
    ``invert_rules``); with ``to_source_layout(arrays, inverse, OFFICIAL_DAC_ALIASES)`` it
    writes model arrays (e.g. gradients) as an official state dict would hold them."""
    names = list(model_names)
    return invert_rules(official_dac_rules_for_model(names), names,
                        aliases=OFFICIAL_DAC_ALIASES, ignored=OFFICIAL_DAC_IGNORED)


def state_specs(layer):
    """{name: (shape, numpy dtype name)} of a paddle Layer's state_dict (parameters + buffers)."""
    specs = {}
    for name, tensor in layer.state_dict().items():
        dtype = str(tensor.dtype).replace("paddle.", "")
        specs[name] = (tuple(int(s) for s in tensor.shape), dtype)
    return specs


def save_pdparams(state, dst):
    """paddle.save ``state`` to ``dst`` atomically (temporary file in the same folder + rename)."""
    dst = os.path.abspath(os.fspath(dst))
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    write_with(dst, lambda tmp: paddle.save({k: paddle.to_tensor(v) for k, v in state.items()},
                                            tmp))
    logger.info(f"wrote {len(state)} tensors to {dst}")
    return dst


def load_and_save(layer, state, dst):
    """Load the converted ``state`` into ``layer`` (a last check that it fits), then save it."""
    layer.set_state_dict(state)
    return save_pdparams(state, dst)
