"""Helpers of the config key check (``config_keys``): key paths as text, the "unknown key" error
with the closest known names, and the arguments a class accepts."""

import difflib
import inspect

__all__ = ["check_names", "classes_in", "init_args", "need_list", "raise_unknown", "render_keys"]


def render_keys(keys):
    """A key path as a config shows it: ('TrainReader', 'sample_transforms', 0) ->
    'TrainReader.sample_transforms[0]'."""
    text = ""
    for key in keys:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text


def raise_unknown(where, keys, key, known, what="key", section=None):
    """Raise the ValueError for ``key`` under ``keys``: where it is set (``where(path)``), the
    section, and the closest names of ``known`` (all of them when few and none is close)."""
    place = f"in {section or render_keys(keys)}" if keys else "(top level)"
    close = difflib.get_close_matches(str(key), sorted(map(str, known)), n=3, cutoff=0.6)
    if close:
        hint = "; did you mean " + " or ".join(repr(name) for name in close) + "?"
    elif len(known) <= 30:
        hint = "; known: " + ", ".join(sorted(map(str, known)))
    else:
        hint = ""
    raise ValueError(f"{where(keys + (key,))}: unknown {what} {key!r} {place}{hint}")


def check_names(mapping, known, keys, where, section=None):
    """``raise_unknown`` for the first key of ``mapping`` not in ``known``."""
    for key in mapping:
        if key not in known:
            raise_unknown(where, keys, key, known, section=section)


def init_args(cls, drop_kwargs=False):
    """The named ``__init__`` arguments of ``cls``; None when it takes ``**kwargs`` (unless
    ``drop_kwargs``: the class ignores them), except for a class that declares
    ``forwards_kwargs_to_base = True``: its own arguments and those of its first base."""
    params = inspect.signature(cls.__init__).parameters.values()
    named = {
        p.name
        for p in params
        if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    if any(p.kind is p.VAR_KEYWORD for p in params):
        if "forwards_kwargs_to_base" in vars(cls) and cls.forwards_kwargs_to_base:
            base = init_args(cls.__bases__[0], drop_kwargs)
            return None if base is None else named | base
        if not drop_kwargs:
            return None
    return named


def classes_in(module, base):
    return {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, base)
    }


def need_list(value, keys, items, where):
    if not isinstance(value, list):
        raise ValueError(
            f"{where(keys)}: {render_keys(keys)} must be a list of {items} (-o cannot "
            f"set one item of a list; give the whole list), not "
            f"{type(value).__name__}"
        )
