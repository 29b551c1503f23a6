"""Apply a name table (``tables.py``) to a checkpoint's state dict and check it fits the model.

``convert_state_dict`` renames and re-lays-out the arrays and raises one ``ValueError`` that
lists every missing, unexpected and mis-shaped key; ``convert_official`` / ``convert_swin`` /
``convert_torchvision_resnet`` pick the table for each kind of checkpoint.
"""

import os
import re

import numpy as np
import paddle
from ppdet.utils.logger import setup_logger

from ppdet_dac.utils.atomic import write_with

from .tables import (
    COPY,
    LINEAR,
    OFFICIAL_DAC_ALIASES,
    OFFICIAL_DAC_HINTS,
    OFFICIAL_DAC_IGNORED,
    QKV_BIAS,
    QKV_WEIGHT,
    SWIN_IGNORED,
    SWIN_NEW_LAYERS,
    SWIN_RULES,
    TORCHVISION_RESNET_IGNORED,
    official_dac_rules,
    torchvision_resnet_table,
)

# the logger keeps the name of the module these functions came from, so the log lines read as before
logger = setup_logger("ppdet_dac.interop.mapping")


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
    raise ValueError(
        f"{source_name}: expected a state dict of tensors or a checkpoint dict with "
        f"one under {' or '.join(repr(k) for k in keys)}; found {_describe(obj)}"
    )


def convert_official(checkpoint, target_specs, source_name="checkpoint"):
    """An official DAC-DETR checkpoint ({'model': state_dict, ...}) -> our DACDETR state dict."""
    state = find_state_dict(checkpoint, source_name, keys=("model",))
    if state and all(key.startswith("module.") for key in state):  # saved from the DDP wrapper
        state = {key[len("module.") :]: value for key, value in state.items()}
    return convert_state_dict(
        state,
        target_specs,
        official_dac_rules(state),
        aliases=OFFICIAL_DAC_ALIASES,
        ignored=OFFICIAL_DAC_IGNORED,
        source_name=source_name,
        hints=OFFICIAL_DAC_HINTS,
    )


def convert_swin(checkpoint, target_specs, source_name="checkpoint"):
    """A Swin Transformer ImageNet checkpoint ({'model': state_dict}) -> ppdet SwinTransformer
    names without a prefix; the per-output norms are left to their initialisation."""
    state = find_state_dict(checkpoint, source_name)
    return convert_state_dict(
        state,
        target_specs,
        SWIN_RULES,
        ignored=SWIN_IGNORED,
        new_layers=SWIN_NEW_LAYERS,
        source_name=source_name,
    )


def convert_torchvision_resnet(checkpoint, target_specs, source_name="checkpoint"):
    """A torchvision ResNet state dict -> ppdet ResNet (variant b) names, without a prefix, as
    ppdet's ``pretrain_weights`` expects (load_pretrain_weight matches names by suffix)."""
    state = find_state_dict(checkpoint, source_name)
    return convert_state_dict(
        state,
        target_specs,
        torchvision_resnet_table(state),
        ignored=TORCHVISION_RESNET_IGNORED,
        source_name=source_name,
    )


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


def first_match(patterns, key):
    """(payload, match) of the first (compiled regex, payload) that matches all of ``key``."""
    return next(
        ((payload, m) for p, payload in patterns for m in [p.fullmatch(key)] if m), (None, None)
    )


class _Conversion:
    """One pass over a source state dict; collects every problem before reporting any."""

    def __init__(self, source, target_specs, rules, aliases, source_name):
        self.source, self.specs, self.source_name = source, target_specs, source_name
        self.rules = [(re.compile(pattern), (target, kind)) for pattern, target, kind in rules]
        self.aliases = [(re.compile(pattern), twin) for pattern, twin in aliases]
        self.converted, self.origin = {}, {}
        self.unexpected, self.misshaped, self.tied = [], [], []
        self.misshaped_targets = set()  # reported once, as mis-shaped rather than also missing
        self.num_tied = 0

    def add(self, key, value):
        if not isinstance(value, np.ndarray):
            self.unexpected.append(f"{key} (a {type(value).__name__}, not a tensor)")
            return
        twin, m = first_match(self.aliases, key)
        if m:
            self._check_tied(key, value, m.expand(twin))
            return
        rule, m = first_match(self.rules, key)
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
            self.unexpected.append(
                f"{source} (maps to {name}, already filled by {self.origin[name]})"
            )
        elif tuple(array.shape) != tuple(self.specs[name][0]):
            shown = _fmt(array.shape) + (f" after {kind}" if kind != COPY else "")
            self.misshaped.append(
                f"{source} -> {name}: model needs "
                f"{_fmt(self.specs[name][0])}, checkpoint gives {shown}"
            )
            self.misshaped_targets.add(name)
        else:
            self.converted[name], self.origin[name] = array, key

    def raise_problems(self, missing, hints):
        problems = [
            ("missing from the checkpoint", missing),
            ("unexpected in the checkpoint", self.unexpected),
            ("mis-shaped", self.misshaped),
            ("inconsistent tied weights", self.tied),
        ]
        if not any(lines for _, lines in problems):
            return
        text = [
            f"{self.source_name} does not match the model ({len(self.converted)} of "
            f"{len(self.specs)} parameters converted):"
        ]
        for title, lines in problems:
            if lines:
                text.append(f"  {len(lines)} {title}:")
                text.extend(f"    {line}" for line in lines)
        listing = "\n".join(text)
        text.extend(f"  hint: {advice}" for pattern, advice in hints if re.search(pattern, listing))
        raise ValueError("\n".join(text))


def convert_state_dict(
    source,
    target_specs,
    rules,
    aliases=(),
    ignored=(),
    new_layers=(),
    source_name="checkpoint",
    hints=(),
):
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
    left = [
        name
        for name in target_specs
        if name not in run.converted and name not in run.misshaped_targets
    ]
    fresh = [name for name in left if any(p.fullmatch(name) for p in new_layers)]
    run.raise_problems(
        [f"{name} {_fmt(target_specs[name][0])}" for name in left if name not in fresh], hints
    )
    logger.info(
        f"{source_name}: converted {len(run.converted)} parameters "
        f"({run.num_tied} tied duplicates checked, {num_ignored} ignored entries"
        + (
            f", {len(fresh)} new model parameters left to their initialisation: {', '.join(fresh)}"
            if fresh
            else ""
        )
        + ")"
    )
    return {
        name: run.converted[name].astype(spec[1], copy=False)
        for name, spec in target_specs.items()
        if name in run.converted
    }


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
    write_with(
        dst, lambda tmp: paddle.save({k: paddle.to_tensor(v) for k, v in state.items()}, tmp)
    )
    logger.info(f"wrote {len(state)} tensors to {dst}")
    return dst


def load_and_save(layer, state, dst):
    """Load the converted ``state`` into ``layer`` (a last check that it fits), then save it."""
    layer.set_state_dict(state)
    return save_pdparams(state, dst)
