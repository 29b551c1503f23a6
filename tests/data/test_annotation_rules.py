"""ppdet_dac.data.annotations: the box and size rules shared by the COCO and VOC readers and
x2coco, called directly; and no module reaches into another's private names for them."""

import ast
import os

from _common import REPO

from ppdet_dac.data.annotations import (
    CocoNames,
    annotations_by_image,
    checked_image_size,
    class_ids,
    clean_boxes,
    first_few,
    new_skip_logs,
)


def test_boxes_are_clamped_and_bad_ones_skipped_by_kind():
    names = CocoNames("instances.json")
    skips = new_skip_logs(names)
    img = {"id": 7, "width": 100, "height": 50}
    anns = [
        {"id": 1, "bbox": [-10, 5, 30, 100]},  # clamped to [0, 5, 20, 50]
        {"id": 2, "bbox": [120, 0, 10, 10]},  # right of the image: no area
        {"id": 3, "bbox": [0, 0, float("nan"), 4]},  # not finite
        {"id": 4, "bbox": [0, 0, True, 4]},  # a boolean is no number
        {"id": 5, "bbox": [1, 2, 3]},  # not [x, y, w, h]
        {"id": 6, "bbox": [1, 1, 2, 2], "iscrowd": 1},
        {"id": 8, "bbox": [1, 1, 2, 2], "ignore": True},
    ]
    size = checked_image_size(img, names, skips, "img7.jpg")
    assert size == (100.0, 50.0)
    kept = clean_boxes(img, *size, anns, names, skips)
    assert [(ann["id"], box) for ann, box in kept] == [(1, [0.0, 5.0, 20.0, 50.0])]
    assert skips["degenerate"].ids == [2] and skips["malformed"].ids == [3, 4, 5]
    crowd = clean_boxes(img, *size, anns[5:], names, new_skip_logs(names), load_crowd=True)
    assert [ann["id"] for ann, _ in crowd] == [6]
    assert checked_image_size({"id": 9, "width": 0, "height": 5}, names, skips, "x") is None
    assert skips["size"].ids == [9]


def test_structure_checks_and_class_order():
    anno = {
        "categories": [{"id": 5, "name": "b"}, {"id": 2, "name": "a"}],
        "annotations": [
            {"id": 1, "image_id": 3, "category_id": 2},
            {"id": 2, "image_id": 3, "category_id": 5},
        ],
    }
    catid2clsid, cname2cid = class_ids("f.json", anno)
    assert catid2clsid == {5: 0, 2: 1} and cname2cid == {"b": 0, "a": 1}
    assert [a["id"] for a in annotations_by_image("f.json", anno, catid2clsid)[3]] == [1, 2]
    assert first_few(range(7)) == "0, 1, 2, 3, 4 and 2 more"


def test_no_module_imports_another_modules_private_names():
    """Shared rules have public names (voc.py once imported dataset.py's ``_is_number``) in the
    data and engine rooms and the tools; a private submodule (``_library.py``) may be imported."""
    found = []
    for room in ("ppdet_dac/data", "ppdet_dac/engine", "tools"):
        for folder, _, files in os.walk(os.path.join(REPO, *room.split("/"))):
            for name in (f for f in files if f.endswith(".py")):
                path = os.path.join(folder, name)
                for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                    if not isinstance(node, ast.ImportFrom):
                        continue
                    module = node.module or ""
                    if not (node.level or module.startswith("ppdet_dac")):
                        continue
                    base = folder if node.level else REPO
                    for _ in range(max(node.level - 1, 0)):
                        base = os.path.dirname(base)
                    package = os.path.join(base, *module.split(".")) if module else base
                    for alias in node.names:
                        private = alias.name.startswith("_") and not alias.name.startswith("__")
                        submodule = os.path.isfile(os.path.join(package, alias.name + ".py"))
                        if private and not submodule:
                            found.append(
                                f"{os.path.relpath(path, REPO)}: {alias.name} from {module or '.'}"
                            )
    assert found == []
