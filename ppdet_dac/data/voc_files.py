"""VOC files: reading label lists, list files and annotation XML files, and writing XML files.

The file formats are those of ppdet's ``VOCDataSet``, described in ``ppdet_dac.data.voc``'s
module docstring, which also defines the VOC-to-COCO box conversion of ``voc_box_to_xywh``.
"""

import os
import xml.etree.ElementTree as ET

from ppdet_dac.data.annotations import is_number
from ppdet_dac.utils.atomic import write_with

BOX_TAGS = ("xmin", "ymin", "xmax", "ymax")


def read_label_list(path):
    """The class names of a label list file, one per line (trailing blank lines ignored).

    Raises FileNotFoundError naming a missing file, ValueError naming the file and line of a
    blank line between names or a repeated name, or an empty file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"label list file not found: {path}")
    with open(path, encoding="utf-8") as handle:
        lines = [line.strip() for line in handle.read().splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ValueError(f"{path}: the label list is empty (one class name per line)")
    seen = {}
    for number, name in enumerate(lines, 1):
        if not name:
            raise ValueError(
                f"{path}:{number}: blank line in the label list (one class name "
                "per line; the line number is the class id)"
            )
        if name in seen:
            raise ValueError(f"{path}:{number}: class {name!r} already named on line {seen[name]}")
        seen[name] = number
    return lines


def read_voc_list(path, need_image=True):
    """The samples of a VOC list file: [(line number, image path or None, xml path)].

    A line is ``<image path> <xml path>``; with ``need_image=False`` also a single field, the
    XML path or its name without '.xml' (ppdet's ImageSets/Main/*.txt id lists; '.xml' is then
    added). Blank lines are skipped. Raises FileNotFoundError / ValueError naming the file and
    line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation list file not found: {path}")
    samples = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) == 2:
                samples.append((number, fields[0], fields[1]))
            elif len(fields) == 1 and not need_image:
                xml = fields[0] if fields[0].endswith(".xml") else fields[0] + ".xml"
                samples.append((number, None, xml))
            else:
                shape = (
                    "'<image path> <xml path>'"
                    if need_image
                    else "'<image path> <xml path>' or '<xml path or id>'"
                )
                raise ValueError(f"{path}:{number}: expected {shape}, got {line.strip()!r}")
    if not samples:
        raise ValueError(f"{path}: the annotation list has no sample")
    return samples


def _text(element, tag):
    """The stripped text of child ``tag`` of ``element``; None when absent or empty."""
    child = element.find(tag) if element is not None else None
    text = child.text.strip() if child is not None and child.text else ""
    return text or None


def number_or_text(text):
    """float(text) when ``text`` reads as a number (also nan / inf; an int when whole), else
    ``text`` itself."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return text
    return int(value) if value.is_integer() else value


def voc_box_to_xywh(values):
    """COCO [x, y, w, h] of VOC [xmin, ymin, xmax, ymax] (1-based, inclusive; see
    ``ppdet_dac.data.voc``'s module docstring); ``values`` unchanged when one of them is not a
    number."""
    if not all(is_number(v) for v in values):
        return list(values)
    xmin, ymin, xmax, ymax = values
    return [xmin - 1.0, ymin - 1.0, xmax - xmin + 1.0, ymax - ymin + 1.0]


def parse_voc_xml(xml_path):
    """{'filename', 'width', 'height', 'objects': [{'name', 'difficult', 'bndbox'}]} of one VOC
    XML file, values as their text (None when absent); ValueError naming an invalid file."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"{xml_path} is not valid XML: {err}") from None
    size = root.find("size")
    objects = []
    for obj in root.findall("object"):
        box = obj.find("bndbox")
        objects.append(
            {
                "name": _text(obj, "name"),
                "difficult": _text(obj, "difficult"),
                "bndbox": [_text(box, tag) for tag in BOX_TAGS],
            }
        )
    return {
        "filename": _text(root, "filename"),
        "width": _text(size, "width"),
        "height": _text(size, "height"),
        "objects": objects,
    }


def write_voc_xml(path, filename, width, height, objects, depth=3):
    """Write one VOC XML file: ``objects`` is [(name, [xmin, ymin, xmax, ymax], difficult)],
    each value written as ``str(value)`` (None leaves the element out)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = str(filename)
    size = ET.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", depth)):
        if value is not None:
            ET.SubElement(size, tag).text = str(value)
    for name, box, difficult in objects:
        obj = ET.SubElement(root, "object")
        if name is not None:
            ET.SubElement(obj, "name").text = str(name)
        ET.SubElement(obj, "difficult").text = str(difficult)
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, value in zip(BOX_TAGS, box):
            if value is not None:
                ET.SubElement(bndbox, tag).text = str(value)
    ET.indent(root)
    tree = ET.ElementTree(root)
    write_with(path, lambda tmp: tree.write(tmp, encoding="utf-8", xml_declaration=True))
