"""Every key of a config must be read by something: an unknown key stops the tools, with the
closest known names as a suggestion.

ppdet ignores unknown top-level keys and passes unknown reader keys into ``**kwargs``, so a
typo (``epcoh: 1``, ``-o TrainReader.batchsize=1``) would change nothing without a word.
``check_config_file(path, opts)`` reads ``path`` and its ``_BASE_`` files as ppdet's
``load_config`` merges them (``!Class`` nodes left unbuilt, so their keys are checked too), adds
the ``-o`` overrides and checks every key of the result (``check_config_keys``; the keys no
class signature declares are listed in ``known_keys.py``):

* top level: a registered class (its section), a ``__shared__`` argument of one
  (``num_classes``, ``hidden_dim``, ...) or a key of ``TOP_LEVEL_KEYS``, where each key names
  what reads it;
* a registered class's section: its ``__init__`` arguments; an injected ``{name: Class, ...}``:
  that class's arguments;
* readers (``TrainReader``, ...): the reader's arguments and ``READER_KEYS``; each transform
  of ``sample_transforms`` / ``batch_transforms`` (also nested lists, e.g. RandomSelect's) by
  name in ``ppdet.data.transform``, with its ``__init__`` arguments;
* datasets (``TrainDataset``, ...): ``name`` in ``ppdet.data.source`` and that class's
  ``__init__`` arguments (ppdet's dataset classes drop their ``**kwargs``);
* ``OptimizerBuilder.optimizer``: ``type`` in ``paddle.optimizer`` and its arguments;
  ``OptimizerBuilder.regularizer``: ``type``, ``factor``; ``LearningRate.schedulers`` and any
  ``!Class`` node: the class's arguments.

The ValueError names the file that sets the key (or the ``-o`` entry) and the closest names.
The same pass checks the values (``config_values``: learning rate > 0, batch size >= 1, ...)
and names a ``_BASE_`` cycle (a -> b -> a) before ppdet's load_config would recurse into it.
"""

import copy
import inspect

import paddle
from ppdet.core.workspace import BASE_KEY, dict_merge, get_registered_modules
from ppdet.data import source, transform
from ppdet.data.reader import BaseDataLoader
from ppdet.data.source.dataset import CommonDataset, DetDataset
from ppdet.data.transform.operators import BaseOperator
from ppdet.optimizer import optimizer as ppdet_optimizer
from ppdet.optimizer.adamw import build_adamwdl

from .config_files import Tagged, owner_file, read_with_bases
from .config_names import check_names, classes_in, init_args, need_list, raise_unknown, render_keys
from .config_values import check_config_values
from .known_keys import (
    NESTED_KEYS,
    READER_KEYS,
    SET_BY_OPTIMIZER_BUILDER,
    TEST_READER_KEYS,
    TOP_LEVEL_KEYS,
    TRANSFORM_LISTS,
)

__all__ = ["TOP_LEVEL_KEYS", "READER_KEYS", "check_config_file", "check_config_keys"]


def _flat_opts(opts, prefix=()):
    for key, value in opts.items():
        if isinstance(value, dict) and value:
            yield from _flat_opts(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def _opts_source(path, opts, keys):
    """'<path> with -o <the entries of opts that lead to keys (all when none does)>'."""
    entries = list(_flat_opts(opts))
    related = [(k, v) for k, v in entries if keys[: len(k)] == k or k[: len(keys)] == keys]
    text = " ".join(f"{'.'.join(map(str, k))}={_shown(v)}" for k, v in related or entries)
    return f"{path} with -o {text}"


def _shown(value, top=True):
    """An -o value as str() shows it, with a ``!Class {...}`` that -o built shown so."""
    if isinstance(value, list):
        return "[" + ", ".join(_shown(item, False) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_shown(v, False)}" for k, v in value.items()) + "}"
    if hasattr(value, "__dict__") and not isinstance(value, type):
        args = ", ".join(f"{k}: {_shown(v, False)}" for k, v in vars(value).items())
        return f"!{type(value).__name__} {{{args}}}"
    return str(value) if top else repr(value)


def check_config_file(path, opts=None):
    """Check the keys and values of config file ``path`` (with its ``_BASE_`` files), then
    with the ``-o`` overrides ``opts`` (ppdet's ArgsParser dict) on top; see the module
    docstring and ``config_values``.

    Raises FileNotFoundError naming a missing file, ValueError naming the file or ``-o`` entry
    and the unknown key or bad value, or the files of a ``_BASE_`` cycle.
    """
    files = []
    merged = read_with_bases(path, files)

    def in_file(keys):
        owner = owner_file(files, keys)
        return path if owner == path else f"{path} ({BASE_KEY} {owner})"

    check_config_keys(merged, in_file)
    check_config_values(merged, in_file)
    if opts:
        merged = dict_merge(merged, copy.deepcopy(opts))
        check_config_keys(merged, lambda keys: _opts_source(path, opts, keys))
        check_config_values(merged, lambda keys: _opts_source(path, opts, keys))


def check_config_keys(cfg, source):
    """Raise one ValueError when a key of the merged config ``cfg`` is not known.

    ``source`` names where the config comes from: a str, or a function of the key path (a tuple
    of keys and list indices) that returns it.
    """
    where = source if callable(source) else (lambda keys: source)
    registered = get_registered_modules()
    shared = {key for schema in registered.values() for key in schema.shared}
    known = set(TOP_LEVEL_KEYS) | set(registered) | shared
    for key, value in cfg.items():
        if key in registered:
            _check_section(key, value, registered[key], registered, where)
        elif key not in known:
            raise_unknown(where, (), key, known)
        elif key in NESTED_KEYS and isinstance(value, dict):
            check_names(value, NESTED_KEYS[key], (key,), where)
        _check_tagged_nodes(value, (key,), where)


def _check_section(name, value, schema, registered, where):
    """A registered class's section."""
    if not isinstance(value, dict):
        return
    cls = getattr(schema.pymodule, schema.name)
    keys = (name,)
    if issubclass(cls, BaseDataLoader):
        _check_reader(name, value, cls, where)
        return
    if issubclass(cls, CommonDataset):
        _check_dataset(name, value, where)
        return
    if schema.strict:
        check_names(value, schema.schema, keys, where)
    for arg in schema.inject:
        target = value.get(arg)
        if isinstance(target, dict):
            _check_injected(keys + (arg,), target, registered, where)
    if issubclass(cls, ppdet_optimizer.OptimizerBuilder):
        _check_optimizer_builder(name, value, where)
    elif issubclass(cls, ppdet_optimizer.LearningRate) and "schedulers" in value:
        schedulers = value["schedulers"]
        need_list(
            schedulers,
            keys + ("schedulers",),
            "schedulers (!PiecewiseDecay {...} or {name: PiecewiseDecay, ...})",
            where,
        )
        for index, scheduler in enumerate(schedulers):
            if isinstance(scheduler, dict):
                _check_named(
                    scheduler,
                    ppdet_optimizer,
                    object,
                    keys + ("schedulers", index),
                    "scheduler",
                    where,
                )


def _check_injected(keys, target, registered, where):
    """``{name: RegisteredClass, arg: value, ...}`` as a value of an injected argument."""
    name = target.get("name")
    if name is None:
        raise ValueError(
            f"{where(keys)}: {render_keys(keys)} is a mapping without 'name', so ppdet "
            f"would build no {keys[-1]} at all; give 'name: <registered class>', "
            f"or set the arguments in that class's own section"
        )
    if name not in registered:
        raise_unknown(
            where,
            keys + ("name",),
            name,
            registered,
            what="registered class",
            section=render_keys(keys + ("name",)),
        )
    schema = registered[name]
    if schema.strict:
        check_names(
            {k: v for k, v in target.items() if k != "name"},
            schema.schema,
            keys,
            where,
            section=f"{render_keys(keys)} ({name})",
        )


def _check_named(mapping, module, base, keys, what, where):
    """``{name: Class, arg: value, ...}``: Class in ``module`` (a subclass of ``base``) and its
    ``__init__`` arguments."""
    name = mapping.get("name")
    if name is None:
        raise ValueError(
            f"{where(keys + ('name',))}: {render_keys(keys)} has no 'name' (its {what} class)"
        )
    candidates = classes_in(module, base)
    if name not in candidates:
        raise_unknown(
            where,
            keys + ("name",),
            name,
            candidates,
            what=f"{what} class",
            section=render_keys(keys + ("name",)),
        )
    accepted = init_args(candidates[name], drop_kwargs=True) | {"name"}
    check_names(mapping, accepted, keys, where, section=f"{render_keys(keys)} ({name})")


def _check_dataset(name, value, where):
    _check_named(value, source, DetDataset, (name,), "dataset", where)


def _check_reader(name, value, cls, where):
    keys = (name,)
    extra = TEST_READER_KEYS if name == "TestReader" else {}
    known = init_args(cls, drop_kwargs=True) | init_args(BaseDataLoader, drop_kwargs=True)
    check_names(value, known | READER_KEYS | set(extra), keys, where)
    for key, sub_keys in extra.items():
        if isinstance(value.get(key), dict):
            check_names(value[key], sub_keys, keys + (key,), where)
    for key in TRANSFORM_LISTS:
        if value.get(key) is not None:
            _check_transforms(value[key], keys + (key,), where)


def _looks_like_transforms(value):
    return (
        isinstance(value, list)
        and value
        and all(
            isinstance(item, dict)
            and item
            and all(args is None or isinstance(args, dict) for args in item.values())
            for item in value
        )
    )


def _check_transforms(ops, keys, where):
    """A list of ``{Transform: {arg: value}}`` as ppdet's reader Compose builds it."""
    need_list(ops, keys, "{Transform: {arguments}}", where)
    for index, item in enumerate(ops):
        if not isinstance(item, dict):
            raise ValueError(
                f"{where(keys + (index,))}: {render_keys(keys + (index,))} must be "
                f"{{Transform: {{arguments}}}}, not {item!r}"
            )
        for name, args in item.items():
            op = getattr(transform, str(name), None)
            if not isinstance(op, type):
                raise_unknown(
                    where,
                    keys + (index,),
                    name,
                    classes_in(transform, BaseOperator),
                    what="transform",
                )
            if not isinstance(args, dict):
                raise ValueError(
                    f"{where(keys + (index, name))}: the arguments of {name} in "
                    f"{render_keys(keys + (index,))} must be a mapping ({{}} for none), "
                    f"not {args!r}"
                )
            accepted = init_args(op)
            for arg, arg_value in args.items():
                if accepted is not None and arg not in accepted:
                    raise_unknown(where, keys + (index, name), arg, accepted)
                if _looks_like_transforms(arg_value):
                    _check_transforms(arg_value, keys + (index, name, arg), where)


def _check_optimizer_builder(name, value, where):
    keys = (name,)
    optimizer = value.get("optimizer")
    if isinstance(optimizer, dict):
        opt_keys = keys + ("optimizer",)
        kind = optimizer.get("type")
        if kind is None:
            raise ValueError(
                f"{where(opt_keys + ('type',))}: {render_keys(opt_keys)} has no 'type' "
                "(a paddle.optimizer class, e.g. AdamW)"
            )
        if kind == "AdamWDL":
            accepted = set(inspect.signature(build_adamwdl).parameters) - {"model", "lr"}
        else:
            candidates = classes_in(paddle.optimizer, paddle.optimizer.Optimizer)
            if kind not in candidates:
                raise_unknown(
                    where,
                    opt_keys + ("type",),
                    kind,
                    set(candidates) | {"AdamWDL"},
                    what="optimizer type",
                    section=render_keys(opt_keys + ("type",)),
                )
            accepted = init_args(candidates[kind])
        section = f"{render_keys(opt_keys)} ({kind})"
        for key in optimizer:
            if key in SET_BY_OPTIMIZER_BUILDER or (key == "weight_decay" and kind != "AdamW"):
                reason = SET_BY_OPTIMIZER_BUILDER.get(key, "from regularizer")
                raise ValueError(
                    f"{where(opt_keys + (key,))}: {key!r} in {section} is replaced "
                    f"by OptimizerBuilder ({reason})"
                )
        if accepted is not None:
            check_names(
                optimizer, accepted | {"type", "param_groups"}, opt_keys, where, section=section
            )
    regularizer = value.get("regularizer")
    if isinstance(regularizer, dict):
        check_names(regularizer, {"type", "factor"}, keys + ("regularizer",), where)


def _tagged_class(tag):
    """The class of a ``!tag`` node: an LR scheduler, dataset, reader op or registered class."""
    for module in (ppdet_optimizer, source, transform):
        cls = getattr(module, tag, None)
        if isinstance(cls, type):
            return cls
    schema = get_registered_modules().get(tag)
    return getattr(schema.pymodule, tag, None) if schema is not None else None


def _check_tagged_nodes(value, keys, where):
    """The arguments of every ``!Class`` node under ``value``."""
    if isinstance(value, Tagged):
        cls = _tagged_class(value.tag)
        if cls is not None and isinstance(value.value, dict):
            accepted = init_args(cls)
            if accepted is not None:
                check_names(
                    value.value,
                    accepted,
                    keys,
                    where,
                    section=f"{render_keys(keys)} (!{value.tag})",
                )
        children = value.value.items() if isinstance(value.value, dict) else []
    elif isinstance(value, dict):
        children = value.items()
    elif isinstance(value, list):
        children = enumerate(value)
    else:
        children = []
    for key, child in children:
        _check_tagged_nodes(child, keys + (key,), where)
