"""Label mapping on the way in: rename or merge the classes of VOC XML files, or leave some out,
without rewriting the files. Used by ``DACVOCDataSet`` (``label_map`` of a dataset section) and
``tools/x2coco.py`` (``--label_map``), both through ``ppdet_dac.data.voc.voc_to_coco``.

A label map takes an object's ``<name>`` to a class of the label list (``Dead: Tree`` and
``Alive: Tree`` merge both into Tree) or to ``null`` / ``__ignore__`` (the object and its box are
left out; one log line per set counts them by name). Names not in the map are taken as they are.
Every target must be a class of the label list, else one error names the entry; a name that is
neither in the label list nor in the map still stops the run, naming the XML file, the object and
the name.

A label map is written as
* a mapping: in a config ``label_map: {Dead: Tree, Alive: Tree, Unsure: null}``;
* text: ``Dead=Tree,Alive=Tree,Unsure=__ignore__`` (the command line's form);
* the path of a ``.yml`` / ``.yaml`` / ``.json`` file holding such a mapping (a dataset section
  reads it relative to ``dataset_dir``, as ``label_list``; x2coco relative to the current
  folder).
Names are text: YAML reads ``yes``, ``no``, ``null`` and numbers as other types, so quote such
names (``'No': Tree``); a key or target that is not text is refused by name.
"""

import json
import os

import yaml
from ppdet.utils.logger import setup_logger

logger = setup_logger(__name__)

__all__ = ["IGNORE", "LabelMap", "parse_label_map"]

IGNORE = "__ignore__"
FILE_SUFFIXES = (".yml", ".yaml", ".json")

# the --label_map flag of the tools that read VOC data (x2coco, slice_image)
LABEL_MAP_HELP = (
    "XML names to classes: 'Dead=Tree,Alive=Tree' (NAME=__ignore__ leaves those objects out) "
    "or a .yml/.json file of such a mapping"
)


class LabelMap:
    """{name in the XML files: class name, or IGNORE}; ``source`` names it in messages."""

    def __init__(self, mapping=None, source="label_map"):
        self.mapping = dict(mapping or {})
        self.source = source

    def __bool__(self):
        return bool(self.mapping)

    def check_targets(self, labels, label_source):
        """ValueError naming the entry when a target is not one of ``labels``."""
        for name, target in self.mapping.items():
            if target != IGNORE and target not in labels:
                raise ValueError(
                    f"{self.source}: {name!r} is mapped to {target!r}, which is not in "
                    f"{label_source} (classes: {labels}); map it to a class or to {IGNORE}"
                )

    def class_name(self, name):
        """The class an object labelled ``name`` belongs to, or IGNORE (left out)."""
        return self.mapping.get(name, name)

    def unknown_hint(self):
        """The end of the unknown-label error: the map was looked at too."""
        return f" nor in {self.source}" if self else ""

    def log_ignored(self, ignored, list_file):
        """One line counting the objects left out (``ignored``: Counter of names)."""
        if ignored:
            counts = ", ".join(f"{name}: {n}" for name, n in sorted(ignored.items()))
            logger.info(
                f"{list_file}: {sum(ignored.values())} objects left out by {self.source} ({counts})"
            )


def _checked(mapping, source):
    """{name: target or IGNORE} from a mapping read from anywhere; ValueError naming ``source``
    and the entry that is not text."""
    if not isinstance(mapping, dict):
        raise ValueError(
            f"{source} must map label names to class names, got {type(mapping).__name__} "
            f"{mapping!r}"
        )
    checked = {}
    for name, target in mapping.items():
        if target is None:
            target = IGNORE
        if not isinstance(name, str) or not isinstance(target, str) or not name or not target:
            raise ValueError(
                f"{source}: entry {name!r}: {target!r} is not a name mapped to a class name "
                f"(text; null or {IGNORE} leaves the objects out; quote names such as 'yes', "
                "'no', 'null' or numbers in YAML)"
            )
        checked[name] = target
    return checked


def _parse_pairs(text, source):
    mapping = {}
    for pair in text.split(","):
        name, sep, target = (part.strip() for part in pair.partition("="))
        if not sep or not name or not target:
            raise ValueError(
                f"{source}: {pair.strip()!r} is not NAME=CLASS (e.g. 'Dead=Tree,Alive=Tree'; "
                f"NAME={IGNORE} leaves those objects out; or the path of a .yml/.json file)"
            )
        if name in mapping:
            raise ValueError(f"{source}: {name!r} is mapped twice")
        mapping[name] = target
    return mapping


def _read_file(path, source):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{source} file not found: {path}")
    with open(path, encoding="utf-8") as handle:
        try:
            if path.lower().endswith(".json"):
                return json.load(handle)
            return yaml.safe_load(handle)
        except (json.JSONDecodeError, yaml.YAMLError) as err:
            raise ValueError(f"{path}: not a readable {source} file: {err}") from None


def parse_label_map(spec, base_dir=None, source="label_map"):
    """The LabelMap of ``spec`` (None or empty: no mapping; a dict; 'NAME=CLASS,...' text; the
    path of a .yml/.yaml/.json file, relative to ``base_dir`` when given). FileNotFoundError /
    ValueError name ``source`` (and the file) and the entry at fault."""
    if spec is None or (isinstance(spec, (str, dict)) and not spec):
        return LabelMap({}, source)
    if isinstance(spec, dict):
        return LabelMap(_checked(spec, source), source)
    if not isinstance(spec, str):
        raise ValueError(
            f"{source} must be a mapping, 'NAME=CLASS,...' text or a .yml/.json file, got {spec!r}"
        )
    if spec.strip().lower().endswith(FILE_SUFFIXES):
        path = spec.strip()
        if base_dir is not None and not os.path.isabs(path):
            path = os.path.join(base_dir, path)
        where = f"{source} file {path}"
        return LabelMap(_checked(_read_file(path, source), where), where)
    return LabelMap(_checked(_parse_pairs(spec, source), source), source)
