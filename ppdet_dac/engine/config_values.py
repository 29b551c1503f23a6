"""Value checks of a config's keys at load time: a learning rate of -1, a batch size of 0 or
an epoch count of 'abc' stops the tools before anything is built, with one ValueError naming
the file (or ``-o`` entry), the key, the rule and the value.

``check_config_values(cfg, where)`` checks the merged, unbuilt config (as
``config_keys.check_config_file`` reads it: ``!Class`` nodes kept as ``config_files.Tagged``;
``-o`` may also give built scheduler objects) against the tables below. A key that
is absent is not checked (the class default applies); ``None`` passes only where the rule
says so. The tables hold only rules that follow from what reads the key: a count of epochs,
images, queries or layers, a probability, an IoU or score threshold, a learning rate or a
divisor. Cross-key rules stay with their readers (``image_sizes``: caps against sizes;
``run_settings.schedule_mismatch``: milestones against ``epoch``, a warning).
"""

import math
import re

from .config_files import Tagged

__all__ = ["TOP_LEVEL", "SECTIONS", "SCHEDULERS", "TRANSFORMS", "check_config_values"]


class Rule:
    """A value rule. ``kind``: 'int' (a YAML integer), 'number' (an integer or a finite
    float) or 'bool' (true / false); ``shape``: 'one' (a value), 'list' (a list of values,
    non-empty unless ``empty``) or 'either'; ``low`` / ``high``: bounds, inclusive unless
    ``open_low`` / ``open_high``; ``increasing``: a list is strictly increasing;
    ``optional``: None passes."""

    def __init__(
        self,
        kind,
        low=None,
        high=None,
        open_low=False,
        open_high=False,
        shape="one",
        empty=False,
        increasing=False,
        optional=False,
    ):
        self.kind, self.low, self.high, self.shape = kind, low, high, shape
        self.empty = empty
        self.open_low, self.open_high = open_low, open_high
        self.increasing, self.optional = increasing, optional

    def _scalar_ok(self, value):
        if self.kind == "bool":
            return isinstance(value, bool)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not isinstance(value, int):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)

    def ok(self, value):
        if value is None:
            return self.optional
        if not isinstance(value, (list, tuple)):
            return self.shape != "list" and self._scalar_ok(value)
        if (
            self.shape == "one"
            or not (value or self.empty)
            or not all(self._scalar_ok(v) for v in value)
        ):
            return False
        return not self.increasing or all(a < b for a, b in zip(value, value[1:]))

    def text(self):
        """'an integer >= 1', 'a number in [0, 1]', 'a list of integers >= 0, strictly
        increasing', ..."""
        if self.kind == "bool":
            return "true or false"
        if self.low is not None and self.high is not None:
            bounds = (
                f" in {'(' if self.open_low else '['}{self.low}, {self.high}"
                f"{')' if self.open_high else ']'}"
            )
        elif self.low is not None:
            bounds = f" {'>' if self.open_low else '>='} {self.low}"
        elif self.high is not None:
            bounds = f" {'<' if self.open_high else '<='} {self.high}"
        else:
            bounds = ""
        one = {"int": "an integer", "number": "a number"}[self.kind] + bounds
        many = {"int": "integers", "number": "numbers"}[self.kind] + bounds
        listed = f"a {'' if self.empty else 'non-empty '}list of {many}"
        if self.increasing:
            listed += ", strictly increasing"
        text = {"one": one, "list": listed, "either": f"{one} or {listed}"}[self.shape]
        return text + (" (or null)" if self.optional else "")


def count(low=1, optional=False):
    """An integer >= ``low``."""
    return Rule("int", low, optional=optional)


def positive(optional=False):
    """A number > 0."""
    return Rule("number", 0, open_low=True, optional=optional)


def non_negative(optional=False):
    """A number >= 0."""
    return Rule("number", 0, optional=optional)


FLAG = Rule("bool")


def fraction(open_high=False):
    """A number in [0, 1] (a probability, an IoU or score threshold, a ratio)."""
    return Rule("number", 0, 1, open_high=open_high)


SIZES = Rule("int", 1, shape="list")  # pixels
SIZE = count(1)  # pixels

# Top-level keys.
TOP_LEVEL = {
    "epoch": count(1),  # training epochs
    "snapshot_epoch": count(1),  # checkpoint / evaluation period in epochs (a divisor)
    "snapshot_iter": count(0),  # iteration checkpoint period (0: none)
    "max_checkpoints": count(1),  # iteration checkpoints kept
    "max_epoch_checkpoints": count(0),  # numbered epoch checkpoints kept (0: all)
    "log_iter": count(1),  # log period in iterations (a divisor)
    "worker_num": count(0),  # data loader workers (0: in the training process)
    "num_classes": count(1),
    "hidden_dim": count(1),
    "draw_threshold": fraction(),  # lowest score drawn (a sigmoid score)
    "ema_decay": fraction(),
    "init_loss_scaling": positive(),
    **{
        flag: FLAG
        for flag in (
            "use_gpu",
            "use_npu",
            "use_xpu",
            "use_mlu",
            "use_dac",
            "use_ema",
            "use_vdl",
            "print_flops",
            "print_params",
            "find_unused_parameters",
            "save_prediction_only",
            "epoch_checkpoint_weights_only",
        )
    },
}

# Keys of a section, by section name; a registered class's rules also apply to a
# ``{name: Class, ...}`` mapping given as another section's argument (DACCriterion.matcher).
_READER = {
    "batch_size": count(1),
    "shuffle": FLAG,
    "drop_last": FLAG,
    "collate_batch": FLAG,
    "use_shared_memory": FLAG,
}
SECTIONS = {
    "TrainReader": _READER,
    "EvalReader": _READER,
    "TestReader": _READER,
    "LearningRate": {"base_lr": positive()},
    "OptimizerBuilder": {
        "clip_grad_by_norm": positive(optional=True),
        "clip_grad_by_value": positive(optional=True),
    },
    "DACDETR": {"num_classes": count(1), "backbone_lr_mult": positive()},
    "DACTransformer": {
        "num_classes": count(1),
        "hidden_dim": count(1),
        "num_queries": count(1),
        "num_levels": count(1),
        "num_heads": count(1),
        "num_encoder_layers": count(0),
        "num_decoder_layers": count(1),
        "dim_feedforward": count(1),
        "dropout": fraction(open_high=True),
        "num_encoder_points": count(1),
        "num_decoder_points": count(1),
        "offset_lr_mult": non_negative(),
        "num_denoising": count(0),
        "label_noise_ratio": fraction(),
        "box_noise_scale": non_negative(),
        "use_dac": FLAG,
        "two_stage": FLAG,
    },
    "DACCriterion": {
        "num_classes": count(1),
        "o2m_max_k": count(1),
        "o2m_threshold": fraction(),
        "o2m_num_queries_cap": count(1),
        "o2m_normalizer": positive(),
        "rank_tau": positive(),
        "use_dac": FLAG,
    },
    "DACHungarianMatcher": {
        "cost_class": non_negative(),
        "cost_bbox": non_negative(),
        "cost_giou": non_negative(),
        "alpha": fraction(),
        "gamma": non_negative(),
    },
    "DACNMSPostProcess": {
        "num_top_candidates": count(1),
        "nms_iou_threshold": fraction(),
        "max_detections": count(1),
    },
}
# Keys of a mapping inside a section.
NESTED = {
    ("OptimizerBuilder", "optimizer"): {"weight_decay": non_negative(optional=True)},
    ("OptimizerBuilder", "regularizer"): {"factor": non_negative()},
}
# LearningRate.schedulers items, by class.
SCHEDULERS = {
    "PiecewiseDecay": {
        "milestones": Rule("int", 0, shape="list", empty=True, increasing=True),
        "use_warmup": FLAG,
        "gamma": Rule("number", 0, open_low=True, shape="either", empty=True),
    },
    "LinearWarmup": {
        "steps": count(0),
        "start_factor": fraction(),
        "epochs": count(0, optional=True),
    },
    "CosineDecay": {
        "max_epochs": count(1),
        "min_lr_ratio": fraction(),
        "use_warmup": FLAG,
        "last_plateau_epochs": count(0),
    },
}
# Reader transforms (also inside another transform's list, e.g. RandomSelect's), by class.
TRANSFORMS = {
    "RandomFlip": {"prob": fraction()},
    "RandomShortSideResize": {"short_side_sizes": SIZES, "max_size": count(1, optional=True)},
    "RandomSizeCrop": {"min_size": SIZE, "max_size": SIZE},
    "Resize": {"target_size": Rule("int", 1, shape="either")},
}


def _render(keys):
    text = ""
    for key in keys:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text


def _check(mapping, rules, keys, where):
    for key, rule in rules.items():
        if key in mapping and not rule.ok(mapping[key]):
            value = mapping[key]
            hint = ""
            match = _EXPONENT.fullmatch(value) if isinstance(value, str) else None
            if match:
                sign = match.group(3) or "+"
                hint = (
                    f" (YAML reads {value} as text: a float needs a decimal point and a "
                    f"signed exponent, e.g. {match.group(1)}.{match.group(2) or '0'}e"
                    f"{sign}{match.group(4)})"
                )
            raise ValueError(
                f"{where(keys + (key,))}: {_render(keys + (key,))} must be "
                f"{rule.text()}, got {value!r}{hint}"
            )


# A number in exponent form that PyYAML (YAML 1.1) reads as a string: 1e-4, 2E-3, 1.0e4.
_EXPONENT = re.compile(r"([-+]?\d+)(?:\.(\d*))?[eE]([-+]?)(\d+)")


def _node(value):
    """(class name, argument mapping) of a ``!Class`` node, a ``{name: Class, ...}`` mapping or
    a built object (-o builds ``!Class`` values); (None, None) otherwise."""
    if isinstance(value, Tagged):
        return value.tag, value.value if isinstance(value.value, dict) else {}
    if isinstance(value, dict):
        return value.get("name"), value
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return type(value).__name__, vars(value)
    return None, None


def _transform_lists(ops, keys):
    """(key path, list) of a reader's transform list and of every list nested in its ops."""
    if not isinstance(ops, list):
        return
    yield keys, ops
    for index, item in enumerate(ops):
        for name, args in item.items() if isinstance(item, dict) else ():
            for arg, value in args.items() if isinstance(args, dict) else ():
                if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                    yield from _transform_lists(value, keys + (index, name, arg))


def check_config_values(cfg, where):
    """Raise one ValueError for the first value of the merged config ``cfg`` that breaks its
    rule (module docstring). ``where(keys)`` names the file or ``-o`` entry of the key path
    ``keys`` (a tuple of keys and list indices)."""
    _check(cfg, TOP_LEVEL, (), where)
    for name, section in cfg.items():
        if not isinstance(section, dict):
            continue
        _check(section, SECTIONS.get(name, {}), (name,), where)
        for arg, value in section.items():
            if isinstance(value, dict):
                _check(value, NESTED.get((name, arg), {}), (name, arg), where)
                _check(value, SECTIONS.get(value.get("name"), {}), (name, arg), where)
        if name == "LearningRate" and isinstance(section.get("schedulers"), list):
            for index, scheduler in enumerate(section["schedulers"]):
                kind, args = _node(scheduler)
                _check(args or {}, SCHEDULERS.get(kind, {}), (name, "schedulers", index), where)
        for list_key in ("sample_transforms", "batch_transforms"):
            for keys, ops in _transform_lists(section.get(list_key), (name, list_key)):
                for index, item in enumerate(ops):
                    for op, args in item.items() if isinstance(item, dict) else ():
                        if isinstance(args, dict):
                            _check(args, TRANSFORMS.get(op, {}), keys + (index, op), where)
