"""Helpers for the data tests: tiny hand-made COCO and VOC datasets, the loader probe runner."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PROBE = os.path.join(HERE, "loader_probe.py")

BOX_COLOUR = (255, 255, 255)  # RGB of the painted box region
BACKGROUND = (40, 90, 160)  # RGB of the rest of the image


def paint_image(path, width, height, boxes_xywh=()):
    """Write a lossless PNG: flat BACKGROUND with each [x, y, w, h] box painted BOX_COLOUR."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = BACKGROUND
    for x, y, w, h in boxes_xywh:
        image[int(y) : int(y + h), int(x) : int(x + w)] = BOX_COLOUR
    cv2.imwrite(path, image[:, :, ::-1])


def write_coco(
    root, images, annotations, categories, image_dir="images", anno_name="instances.json"
):
    """Write a COCO dataset under ``root``.

    images: list of dicts {id, width, height, file_name?, paint?: bool (default True)} -- the
        image file is painted with the boxes of its (non-crowd or crowd) annotations.
    annotations: list of dicts with at least {image_id, category_id, bbox}; id/area/iscrowd
        are filled in when absent.
    categories: list of (id, name).
    Returns the annotation file path.
    """
    os.makedirs(os.path.join(root, image_dir), exist_ok=True)
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    anns = []
    for i, ann in enumerate(annotations):
        ann = dict(ann)
        ann.setdefault("id", i + 1)
        ann.setdefault("iscrowd", 0)
        if len(ann["bbox"]) == 4:
            ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
        anns.append(ann)
    img_entries = []
    for img in images:
        img = dict(img)
        img.setdefault("file_name", f"{img['id']:04d}.png")
        if img.pop("paint", True):
            boxes = [
                a["bbox"]
                for a in anns
                if a["image_id"] == img["id"]
                and len(a["bbox"]) == 4
                and a["bbox"][2] > 0
                and a["bbox"][3] > 0
            ]
            paint_image(
                os.path.join(root, image_dir, img["file_name"]), img["width"], img["height"], boxes
            )
        img_entries.append(img)
    anno_path = os.path.join(root, "annotations", anno_name)
    with open(anno_path, "w") as f:
        json.dump(
            {
                "images": img_entries,
                "annotations": anns,
                "categories": [{"id": cid, "name": name} for cid, name in categories],
            },
            f,
        )
    return anno_path


def run_probe(args, timeout=120):
    """Run tests/data/loader_probe.py in a fresh interpreter (ppdet's config is process-global),
    importing ppdet_dac from this checkout.

    Returns the CompletedProcess; fails the test with the probe's output when it exits non-zero.
    """
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, PROBE] + list(args),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"loader probe {args} failed (rc {proc.returncode}):\n{proc.stdout[-4000:]}"
            f"\n{proc.stderr[-4000:]}"
        )
    return proc


def paint_voc_image(path, width, height, boxes_voc=()):
    """Write a lossless PNG: flat BACKGROUND with the pixels of each VOC box painted
    BOX_COLOUR, read as 1-based inclusive pixel indices (columns xmin..xmax, rows ymin..ymax)."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = BACKGROUND
    for xmin, ymin, xmax, ymax in boxes_voc:
        image[int(ymin) - 1 : int(ymax), int(xmin) - 1 : int(xmax)] = BOX_COLOUR
    cv2.imwrite(path, image[:, :, ::-1])


def write_voc(root, samples, labels, list_name="train.txt", label_name="label_list.txt"):
    """Write a Pascal-VOC set under ``root`` in ppdet's layout: images/<stem>.png,
    xml/<stem>.xml, the list file ('images/<stem>.png xml/<stem>.xml' per line, relative to
    ``root``) and the label list.

    samples: dicts {stem, width, height, objects: [(name, [xmin, ymin, xmax, ymax],
        difficult)], paint?: bool (default True), xml_size?: (width, height) written to the
        XML instead}; values are written as str(value) (None leaves the element out). Painted
        images get their boxes whose four values are integers (``paint_voc_image``).
    Returns (list file path, label file path)."""
    from ppdet_dac.data.voc_files import write_voc_xml

    for folder in ("images", "xml"):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    lines = []
    for sample in samples:
        stem = sample["stem"]
        if sample.get("paint", True):
            boxes = [
                box
                for _, box, _ in sample["objects"]
                if all(isinstance(v, int) and not isinstance(v, bool) for v in box)
            ]
            paint_voc_image(
                os.path.join(root, "images", f"{stem}.png"),
                sample["width"],
                sample["height"],
                boxes,
            )
        width, height = sample.get("xml_size", (sample["width"], sample["height"]))
        write_voc_xml(
            os.path.join(root, "xml", f"{stem}.xml"),
            f"{stem}.png",
            width,
            height,
            sample["objects"],
        )
        lines.append(f"images/{stem}.png xml/{stem}.xml\n")
    list_file = os.path.join(root, list_name)
    with open(list_file, "w") as f:
        f.writelines(lines)
    label_file = os.path.join(root, label_name)
    with open(label_file, "w") as f:
        f.writelines(f"{name}\n" for name in labels)
    return list_file, label_file
