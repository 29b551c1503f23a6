"""Reading a config file with its ``_BASE_`` files as ppdet's ``load_config`` merges them, but
with ``!Class`` nodes left unbuilt (``Tagged``) and each file's own keys kept, so that a check
can name the file that sets a key; a ``_BASE_`` cycle is one ValueError naming its files
(ppdet's loader would recurse until RecursionError).
"""

import copy
import os

import yaml
from ppdet.core.workspace import BASE_KEY, dict_merge

__all__ = ["Tagged", "owner_file", "read_with_bases"]


class Tagged:
    """A ``!Class`` node of a config file, not built: ``tag`` is the class name."""

    def __init__(self, tag, value):
        self.tag = tag
        self.value = value


def _construct_tagged(loader, suffix, node):
    if isinstance(node, yaml.MappingNode):
        return Tagged(suffix, loader.construct_mapping(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return Tagged(suffix, loader.construct_sequence(node, deep=True))
    return Tagged(suffix, loader.construct_scalar(node))


class _RawLoader(yaml.Loader):
    """ppdet's YAML loader with ``!Class`` nodes kept as ``Tagged`` instead of built."""


_RawLoader.yaml_constructors = {
    tag: fn
    for tag, fn in yaml.Loader.yaml_constructors.items()
    if tag is None or not tag.startswith("!")
}
_RawLoader.add_multi_constructor("!", _construct_tagged)


def read_with_bases(path, files, chain=()):
    """The merged config of ``path`` and its ``_BASE_`` files (as ppdet's load_config merges
    them); appends (file, its own keys) to ``files``, lowest priority first. ``chain``: the
    files whose ``_BASE_`` led here; a file already in it is a ValueError naming the cycle."""
    if not os.path.isfile(path):
        where = f" (a {BASE_KEY} file of {chain[-1]})" if chain else ""
        raise FileNotFoundError(f"config file not found: {path}{where}")
    real = [os.path.realpath(file) for file in chain]
    if os.path.realpath(path) in real:
        cycle = list(chain[real.index(os.path.realpath(path)) :]) + [path]
        raise ValueError(
            f"{chain[0]}: {BASE_KEY} cycle: {' -> '.join(cycle)} (each file "
            f"lists the next in {BASE_KEY}; ppdet would recurse forever)"
        )
    with open(path) as handle:
        own = yaml.load(handle, Loader=_RawLoader) or {}
    if not isinstance(own, dict):
        raise ValueError(
            f"{path}: a config file must be a mapping of keys, not {type(own).__name__}"
        )
    merged = {}
    bases = own.pop(BASE_KEY, None) or []
    if not isinstance(bases, list) or not all(isinstance(base, str) for base in bases):
        raise ValueError(
            f"{path}: {BASE_KEY} must be a list of config files, e.g. "
            f"{BASE_KEY}: ['base.yml'], not {bases!r}"
        )
    for base in bases:
        base = os.path.expanduser(base) if base.startswith("~") else base
        if not base.startswith("/"):
            base = os.path.join(os.path.dirname(path), base)
        merged = dict_merge(merged, read_with_bases(base, files, chain + (path,)))
    files.append((path, copy.deepcopy(own)))
    return dict_merge(merged, own)


def owner_file(files, keys):
    """The file of highest priority that sets the key path ``keys`` (a list or ``!Class`` value
    is set as a whole, by one file)."""
    for path, own in reversed(files):
        node = own
        for key in keys:
            if not isinstance(node, dict):
                return path
            if key not in node:
                break
            node = node[key]
        else:
            return path
    return files[-1][0]
