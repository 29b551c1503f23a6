"""The way back: model names -> checkpoint names and layout, derived from the forward tables.

Nothing is written a second time: ``invert_rules`` lists the checkpoint keys each rule's regex
matches (``regex_strings.pattern_strings``, numbers up to the largest one in the model's names),
runs the forward rule on each and keeps the keys that land on a model name; ``to_source_layout``
undoes the layout changes (transpose back, pack q/k/v) and repeats tied tensors under their
alias names.
"""

import re

import numpy as np

from .convert import first_match
from .regex_strings import pattern_strings
from .tables import (
    COPY,
    LINEAR,
    OFFICIAL_DAC_ALIASES,
    OFFICIAL_DAC_IGNORED,
    QKV_BIAS,
    QKV_WEIGHT,
    official_dac_rules_for_model,
)


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
        for key in pattern_strings(pattern, numbers, ()):
            m = regex.fullmatch(key)
            name = target(m) if callable(target) else m.expand(target)
            parts = (
                [(name.replace("{qkv}", qkv), i) for i, qkv in enumerate("qkv")]
                if kind in (QKV_WEIGHT, QKV_BIAS)
                else [(name, None)]
            )
            parts = [(n, part) for n, part in parts if n in names]
            if (
                not parts
                or first_match(compiled, key)[0] != index
                or any(p.fullmatch(key) for p in taken)
            ):
                continue
            for n, part in parts:
                if n in inverse and inverse[n][0] != key:
                    raise ValueError(
                        f"cannot invert the table: {n} comes from both {inverse[n][0]} and {key}"
                    )
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
        for alias in pattern_strings(pattern, range(0), texts):
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
            raise ValueError(
                f"{key}: packing q/k/v needs all three projections, {'/'.join(missing)} missing"
            )
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
        raise ValueError(
            f"{len(unknown)} model name(s) have no {source_name} key: " + ", ".join(unknown)
        )
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
    return invert_rules(
        official_dac_rules_for_model(names),
        names,
        aliases=OFFICIAL_DAC_ALIASES,
        ignored=OFFICIAL_DAC_IGNORED,
    )
