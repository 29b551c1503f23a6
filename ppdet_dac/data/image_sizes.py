"""Image sizes as four top-level config keys, filled into the readers' resize ops.

ppdet's readers are plain lists of transforms and YAML has no variables, so a config based on
another inherits its image sizes inside three ``sample_transforms`` lists. When set (in a config
file or with ``-o``), these keys replace the size arguments of those lists as the config is
loaded (``apply_image_sizes``, called by ``ppdet_dac.engine.config.load_checked_config``, which
every tool uses):

* ``train_sizes`` (list of int): the short sides drawn per training image:
  ``short_side_sizes`` of the last ``RandomShortSideResize`` of ``TrainReader.sample_transforms``
  and of each transform list nested in it (each ``RandomSelect`` branch). In the COCO recipe
  these are the final resizes of both branches; the crop branch's first resize (400/500/600)
  and its crop (384-600) stay.
* ``train_max_size`` (int): the long-side cap (``max_size``) of those same ops.
* ``eval_size`` (int): the short side of evaluation and inference: in ``EvalReader`` and
  ``TestReader`` (the export's and predictors' sizes), the last ``RandomShortSideResize``
  (``short_side_sizes: [eval_size]``) or ``Resize`` with keep_ratio (the smaller entry of
  ``target_size``) of each transform list.
* ``eval_max_size`` (int): their long-side cap (``max_size``; ``Resize``: the larger entry of
  ``target_size``).

A key that is not set leaves every reader exactly as its config file wrote it. A value that is
not a positive integer (``train_sizes``: a non-empty list of them), a cap below the short side
it caps, and a reader without an op to take a key that is set are ValueErrors naming the config
(and the ``-o`` entry) and the key.
"""

from ppdet.utils.logger import setup_logger

logger = setup_logger(__name__)

__all__ = ["SIZE_KEYS", "apply_image_sizes", "describe_image_sizes"]

SIZE_KEYS = ("train_sizes", "train_max_size", "eval_size", "eval_max_size")
TRAIN_READERS = ("TrainReader",)
EVAL_READERS = ("EvalReader", "TestReader")
TRAIN_OPS = ("RandomShortSideResize",)
EVAL_OPS = ("RandomShortSideResize", "Resize")


def _is_size(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _checked_values(cfg, where):
    """{key: value} of the size keys set in ``cfg``; ValueError for a bad value."""
    values = {key: cfg[key] for key in SIZE_KEYS if cfg.get(key) is not None}
    sizes = values.get("train_sizes")
    if sizes is not None and not (
        isinstance(sizes, (list, tuple)) and sizes and all(_is_size(s) for s in sizes)
    ):
        raise ValueError(
            f"{where('train_sizes')}: train_sizes must be a non-empty list of "
            f"integers > 0 (short sides drawn per training image, e.g. "
            f"[480, 512, 544]), got {sizes!r}"
        )
    for key in ("train_max_size", "eval_size", "eval_max_size"):
        if key in values and not _is_size(values[key]):
            raise ValueError(
                f"{where(key)}: {key} must be an integer > 0 (pixels), got {values[key]!r}"
            )
    return values


def _is_transform_list(value):
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(item, dict) and len(item) == 1 for item in value)
    )


def _transform_lists(ops, keys):
    """(key path, list) of ``ops`` and of every transform list nested in its ops' arguments."""
    yield keys, ops
    for index, item in enumerate(ops):
        for name, args in item.items():
            for arg, value in args.items() if isinstance(args, dict) else ():
                if _is_transform_list(value):
                    yield from _transform_lists(value, keys + (index, name, arg))


def _size_ops(reader, names):
    """[(path, op name, its argument dict)]: the last op named in ``names`` of each transform
    list of ``reader``'s sample_transforms."""
    ops = reader.get("sample_transforms") if isinstance(reader, dict) else None
    if not _is_transform_list(ops):
        return []
    found = []
    for keys, transforms in _transform_lists(ops, ("sample_transforms",)):
        for index in reversed(range(len(transforms))):
            ((name, args),) = transforms[index].items()
            if name in names and isinstance(args, dict):
                found.append((keys + (index, name), name, args))
                break
    return found


def _render(reader, keys):
    text = reader
    for key in keys:
        text += f"[{key}]" if isinstance(key, int) else f".{key}"
    return text


def _apply_train(cfg, values, where):
    sizes, cap = values.get("train_sizes"), values.get("train_max_size")
    if sizes is None and cap is None:
        return
    given = "train_sizes" if sizes is not None else "train_max_size"
    ops = [(reader, op) for reader in TRAIN_READERS for op in _size_ops(cfg.get(reader), TRAIN_OPS)]
    if not ops:
        raise ValueError(
            f"{where(given)}: {given} is set, but TrainReader.sample_transforms has "
            f"no {' / '.join(TRAIN_OPS)} to take it"
        )
    for reader, (keys, _, args) in ops:
        new_sizes = list(sizes) if sizes is not None else args.get("short_side_sizes")
        new_cap = cap if cap is not None else args.get("max_size")
        if new_cap is not None and new_sizes and new_cap < max(new_sizes):
            raise ValueError(
                f"{where(given)}: {_render(reader, keys)} would resize the short "
                f"side to {max(new_sizes)} but cap the long side at {new_cap} "
                "(train_max_size); give train_max_size >= max(train_sizes)"
            )
        if sizes is not None:
            args["short_side_sizes"] = list(sizes)
        if cap is not None:
            args["max_size"] = cap


def _apply_eval(cfg, values, where):
    size, cap = values.get("eval_size"), values.get("eval_max_size")
    if size is None and cap is None:
        return
    given = "eval_size" if size is not None else "eval_max_size"
    for reader in EVAL_READERS:
        if cfg.get(reader) is None:
            continue
        ops = _size_ops(cfg[reader], EVAL_OPS)
        if not ops:
            raise ValueError(
                f"{where(given)}: {given} is set, but {reader}.sample_transforms "
                f"has no {' / '.join(EVAL_OPS)} to take it"
            )
        for keys, name, args in ops:
            if name == "Resize":
                if not args.get("keep_ratio", True):
                    raise ValueError(
                        f"{where(given)}: {_render(reader, keys)} has keep_ratio "
                        "false (a fixed [h, w]); eval_size / eval_max_size need "
                        "keep_ratio: true"
                    )
                target = args.get("target_size")
                target = [target, target] if isinstance(target, int) else list(target or [])
                short = size if size is not None else min(target)
                long = cap if cap is not None else max(target)
            else:
                short = size if size is not None else max(args.get("short_side_sizes") or [0])
                long = cap if cap is not None else args.get("max_size")
            if long is not None and long < short:
                raise ValueError(
                    f"{where(given)}: {_render(reader, keys)} would resize the "
                    f"short side to {short} but cap the long side at {long} "
                    "(eval_max_size); give eval_max_size >= eval_size"
                )
            if name == "Resize":
                args["target_size"] = [short, long]
            else:
                if size is not None:
                    args["short_side_sizes"] = [size]
                if cap is not None:
                    args["max_size"] = cap


def apply_image_sizes(cfg, where=None):
    """Fill the size keys set in the config ``cfg`` into its readers (module docstring),
    in place; returns {key: value} of the keys applied.

    ``where(key)`` names the config (and -o entry) of a key in errors (default: 'config')."""
    where = where or (lambda key: "config")
    values = _checked_values(cfg, where)
    _apply_train(cfg, values, where)
    _apply_eval(cfg, values, where)
    return values


def describe_image_sizes(cfg):
    """One line: the short sides and long-side caps of the readers' resize ops."""
    parts = []
    for reader, names in [(r, TRAIN_OPS) for r in TRAIN_READERS] + [
        (r, EVAL_OPS) for r in EVAL_READERS
    ]:
        seen = []
        for _, name, args in _size_ops(cfg.get(reader), names):
            if name == "Resize":
                target = args.get("target_size")
                target = [target, target] if isinstance(target, int) else list(target or [])
                text = (
                    f"short side {min(target)}, long side <= {max(target)}"
                    if target
                    else "Resize without target_size"
                )
            else:
                cap, sizes = args.get("max_size"), args.get("short_side_sizes")
                sizes = sizes[0] if isinstance(sizes, list) and len(sizes) == 1 else sizes
                text = f"short side {sizes}" + (f", long side <= {cap}" if cap is not None else "")
            if text not in seen:
                seen.append(text)
        if seen:
            parts.append(f"{reader} {' | '.join(seen)}")
    return "; ".join(parts)
