"""A small, seeded, COCO-format shape-detection dataset that needs no network.

Each image has a textured, noisy background and 0-6 filled shapes (circle, square, triangle)
of random colour, size (25-60 % of the image side) and position; shapes may overlap a little.
The crowded variant (``crowding=Crowding()``, ``tools/make_demo_data.py --crowded``) draws the
same shapes, many per image (``Crowding``: 10-24 asked, at least 8 placed), smaller (10-36 % of
the side), stretched to aspect ratios 1:3..3:1 (ellipses, rectangles, long triangles) and
overlapping more (a new shape may hide up to half of an earlier one).
Boxes are the tight extent of each shape's drawn pixels. Category ids are deliberately not
0..K-1 (1, 3, 5) so that every consumer has to go through ``catid2clsid``.

Layout written under ``root`` (``dataset/demo`` by default)::

    train/000001.jpg ...          val/000001.jpg ...
    annotations/instances_train.json, annotations/instances_val.json

and, with ``voc=True``, the same boxes as Pascal VOC in ppdet's VOCDataSet layout (the images
are shared; list paths are relative to ``root``)::

    voc/train/000001.xml ...      voc/val/000001.xml ...
    voc/train.txt, voc/val.txt    ('train/000001.jpg voc/train/000001.xml' per line)
    voc/label_list.txt            (circle, square, triangle: category ids 1, 3, 5 in order)

Generation is deterministic: every image is drawn from its own generator seeded by
``(seed, split, index)``, so the same arguments give byte-identical files. A split is skipped
when its annotation file already exists, records the same generator settings and all its
images are present; the annotation file is written last (atomically), so an interrupted run is
detected as incomplete and redone.
"""

import dataclasses
import json
import os
import time

import cv2
import numpy as np
from ppdet.utils.logger import setup_logger

from ppdet_dac.data.crowding import crowding_range
from ppdet_dac.data.voc_files import write_voc_xml
from ppdet_dac.utils.atomic import atomic_open, write_text

logger = setup_logger(__name__)

# (category id, name); ids are intentionally not contiguous and do not start at 0.
DEMO_CATEGORIES = ((1, "circle"), (3, "square"), (5, "triangle"))
SPLIT_SEED_OFFSET = {"train": 0, "val": 1}
JPEG_QUALITY = 92
MAX_OCCLUSION = 0.35  # a new shape may hide at most this fraction of an earlier box
MAX_PLACEMENT_TRIES = 60  # per image; fewer objects are kept when the image is crowded
VOC_DIR = "voc"


def _rng(seed, split, index):
    """Independent generator for one image, so images do not depend on the split size."""
    return np.random.default_rng([seed, SPLIT_SEED_OFFSET[split], index])


def _background(rng, height, width):
    """Smooth two-colour gradient + a random stripe or blob texture + pixel noise, uint8 [H, W, 3]."""
    c0, c1 = rng.uniform(40, 215, size=(2, 3))
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t = np.cos(angle) * xx / width + np.sin(angle) * yy / height
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    image = c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]
    if rng.random() < 0.5:  # low-contrast stripes
        period = rng.uniform(8, 40)
        phase = rng.uniform(0, 2 * np.pi)
        theta = rng.uniform(0, np.pi)
        stripes = np.sin((np.cos(theta) * xx + np.sin(theta) * yy) * 2 * np.pi / period + phase)
        image += rng.uniform(6, 18) * stripes[..., None]
    else:  # soft blobs: upsampled coarse noise
        coarse = rng.normal(0, 1, size=(rng.integers(4, 10), rng.integers(4, 10), 3))
        image += rng.uniform(8, 20) * cv2.resize(
            coarse.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC
        )
    return image


def _shape_mask(rng, category_name, height, width, size, aspect=1.0):
    """Filled mask (uint8 [H, W]) of one shape whose extent is about ``size`` pixels, stretched
    to width / height ``aspect`` before its rotation (1: the demo's shapes, drawn as always)."""
    mask = np.zeros((height, width), np.uint8)
    stretch = np.array([np.sqrt(aspect), 1 / np.sqrt(aspect)])
    cx = rng.uniform(size * stretch[0] * 0.35, width - size * stretch[0] * 0.35)
    cy = rng.uniform(size * stretch[1] * 0.35, height - size * stretch[1] * 0.35)
    if category_name == "circle" and aspect == 1.0:
        cv2.circle(
            mask, (int(round(cx)), int(round(cy))), int(round(size / 2)), 1, -1, lineType=cv2.LINE_8
        )
        return mask
    if category_name == "circle":  # an ellipse
        axes = tuple(int(round(v)) for v in size / 2 * stretch)
        centre = (int(round(cx)), int(round(cy)))
        cv2.ellipse(mask, centre, axes, rng.uniform(0, 180), 0, 360, 1, -1, lineType=cv2.LINE_8)
        return mask
    if category_name == "square":
        half = size / 2 / np.sqrt(2) * rng.uniform(1.2, 1.4)  # side ~ 0.85-1.0 x size
        angle = np.deg2rad(rng.uniform(-15, 15))
        corners = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
    else:  # triangle: near-equilateral, any rotation
        radius = size / 2 * 1.1
        angle = rng.uniform(0, 2 * np.pi)
        angles = np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.15, 0.15, 3)
        corners = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = (corners * stretch) @ rot.T + np.array([cx, cy])
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1, lineType=cv2.LINE_8)
    return mask


def _mask_box(mask):
    """Tight [x, y, w, h] (pixel edges) of a non-empty mask, or None when empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0]


def _overlap_ok(new_mask, placed, max_occlusion=MAX_OCCLUSION):
    """False when the new shape would hide more than ``max_occlusion`` of an earlier shape."""
    for earlier in placed:
        visible = earlier["visible"]
        hidden = np.count_nonzero(visible & new_mask)
        if hidden > max_occlusion * max(earlier["pixels"], 1):
            return False
    return True


def _contrasting_colour(rng, background_mean):
    """A saturated colour at least ~80 (L2 in RGB) away from the background mean."""
    for _ in range(20):
        colour = rng.uniform(0, 255, size=3)
        colour[rng.integers(3)] = rng.choice([rng.uniform(0, 50), rng.uniform(205, 255)])
        if np.linalg.norm(colour - background_mean) > 80:
            return colour
    return 255.0 - background_mean


def draw_image(rng, height, width, num_objects, crowding=None):
    """Draw one image (``crowding``: a ``Crowding`` layout, None for the demo's).
    Returns (RGB uint8 [H, W, 3], list of (category id, [x, y, w, h]))."""
    image = _background(rng, height, width)
    side = min(height, width)
    # fuller images get smaller shapes so that they can still fit with little occlusion
    max_frac = 0.6 if num_objects <= 2 else (0.5 if num_objects <= 4 else 0.42)
    max_tries, max_occlusion, aspect = MAX_PLACEMENT_TRIES, MAX_OCCLUSION, 1.0
    if crowding is not None:
        max_tries, max_occlusion = crowding.tries, crowding.max_occlusion
    placed = []
    tries = 0
    while len(placed) < num_objects and tries < max_tries:
        tries += 1
        cat_id, name = DEMO_CATEGORIES[rng.integers(len(DEMO_CATEGORIES))]
        if crowding is None:
            size = rng.uniform(0.25, max_frac) * side
        else:
            size = rng.uniform(crowding.min_size, crowding.max_size) * side
            aspect = float(crowding.max_aspect ** rng.uniform(-1, 1))
        mask = _shape_mask(rng, name, height, width, size, aspect).astype(bool)
        if not _overlap_ok(mask, placed, max_occlusion):
            continue
        for earlier in placed:
            earlier["visible"] &= ~mask
        placed.append(
            {"cat_id": cat_id, "mask": mask, "visible": mask.copy(), "pixels": int(mask.sum())}
        )
        colour = _contrasting_colour(rng, image[mask].mean(axis=0))
        # a faint left-right shading so that fills are not perfectly flat
        shade = 1.0 + rng.uniform(-0.12, 0.12) * np.linspace(-1, 1, width)
        image[mask] = colour[None, :] * np.broadcast_to(shade, (height, width))[mask][:, None]
    image += rng.normal(0, rng.uniform(3, 10), size=image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    objects = [(p["cat_id"], _mask_box(p["mask"])) for p in placed]
    return image, [(c, b) for c, b in objects if b is not None]


def _split_settings(seed, num_images, num_empty, min_size, max_size, max_objects, crowding=None):
    """The generator settings recorded in (and compared against) the annotation file."""
    settings = {
        "seed": int(seed),
        "num_images": int(num_images),
        "num_empty": int(num_empty),
        "min_size": int(min_size),
        "max_size": int(max_size),
        "max_objects": int(max_objects),
        "version": 1,
    }
    if crowding is not None:
        settings["crowding"] = dataclasses.asdict(crowding)
    return settings


def _split_complete(root, split, settings):
    """True when ``split`` exists with the same settings and every listed image is on disk."""
    anno_path = os.path.join(root, "annotations", f"instances_{split}.json")
    if not os.path.isfile(anno_path):
        return False
    try:
        with open(anno_path) as f:
            anno = json.load(f)
    except (OSError, ValueError) as err:
        logger.warning(f"demo data: cannot read {anno_path} ({err}); regenerating '{split}'")
        return False
    if anno.get("info", {}).get("generator") != settings:
        logger.info(f"demo data: {anno_path} was made with other settings; regenerating")
        return False
    images = anno.get("images", [])
    return len(images) == settings["num_images"] and all(
        os.path.isfile(os.path.join(root, split, im["file_name"])) for im in images
    )


def generate_split(
    root,
    split,
    num_images,
    seed=0,
    num_empty=0,
    min_size=224,
    max_size=288,
    max_objects=6,
    crowding=None,
):
    """Write ``root/<split>/*.jpg`` and ``root/annotations/instances_<split>.json``.

    The first ``num_empty`` images (by index) get no objects; the others get 1..max_objects
    (with a ``Crowding`` layout: its ``min_objects..max_objects``, ``max_objects`` unused).
    Image height and width are drawn independently from [min_size, max_size].
    Returns the COCO annotation dict.
    """
    if split not in SPLIT_SEED_OFFSET:
        raise ValueError(f"split must be one of {sorted(SPLIT_SEED_OFFSET)}, got {split!r}")
    if not 0 <= num_empty <= num_images:
        raise ValueError(f"num_empty={num_empty} must be in 0..num_images={num_images}")
    if not 32 <= min_size <= max_size:
        raise ValueError(f"need 32 <= min_size <= max_size, got {min_size}, {max_size}")
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, got {max_objects}")
    settings = _split_settings(
        seed, num_images, num_empty, min_size, max_size, max_objects, crowding
    )
    low, high = (1, max_objects) if crowding is None else crowding_range(crowding)
    image_dir = os.path.join(root, split)
    anno_dir = os.path.join(root, "annotations")
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(anno_dir, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        rng = _rng(seed, split, index)
        height, width = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
        num_objects = 0 if index < num_empty else int(rng.integers(low, high + 1))
        image, objects = draw_image(rng, height, width, num_objects, crowding)
        image_id = index + 1
        file_name = f"{image_id:06d}.jpg"
        ok, encoded = cv2.imencode(
            ".jpg", image[:, :, ::-1], [int(cv2.IMWRITE_JPEG_QUALITY), JPEG_QUALITY]
        )
        if not ok:
            raise RuntimeError(f"OpenCV could not encode {file_name}")
        with open(os.path.join(image_dir, file_name), "wb") as f:
            f.write(encoded.tobytes())
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for cat_id, box in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(cat_id),
                    "bbox": [float(v) for v in box],
                    "area": float(box[2] * box[3]),
                    "iscrowd": 0,
                }
            )
    anno = {
        "info": {
            "description": f"ppdet_dac synthetic shapes ({'crowded' if crowding else 'demo'})",
            "generator": settings,
        },
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": cid, "name": name, "supercategory": "shape"} for cid, name in DEMO_CATEGORIES
        ],
    }
    anno_path = os.path.join(anno_dir, f"instances_{split}.json")
    with atomic_open(anno_path, "w") as f:
        json.dump(anno, f)
    return anno


def _whole(value):
    """int(value) when it is a whole number (VOC files hold pixel indices), else value."""
    return int(value) if float(value).is_integer() else value


def write_voc_split(root, split):
    """Write split ``split`` of the COCO dataset under ``root`` as Pascal VOC (layout in the
    module docstring): a COCO box [x, y, w, h] becomes xmin = x + 1, ymin = y + 1,
    xmax = x + w, ymax = y + h (VOC's 1-based, inclusive pixel indices). Returns the list file.
    """
    with open(os.path.join(root, "annotations", f"instances_{split}.json")) as handle:
        anno = json.load(handle)
    categories = sorted(anno["categories"], key=lambda cat: cat["id"])
    name_of = {cat["id"]: cat["name"] for cat in categories}
    xml_dir = os.path.join(root, VOC_DIR, split)
    os.makedirs(xml_dir, exist_ok=True)
    objects = {img["id"]: [] for img in anno["images"]}
    for ann in anno["annotations"]:
        x, y, w, h = ann["bbox"]
        objects[ann["image_id"]].append(
            (
                name_of[ann["category_id"]],
                [_whole(x + 1), _whole(y + 1), _whole(x + w), _whole(y + h)],
                0,
            )
        )
    lines = []
    for img in anno["images"]:
        stem = os.path.splitext(img["file_name"])[0]
        write_voc_xml(
            os.path.join(xml_dir, f"{stem}.xml"),
            img["file_name"],
            img["width"],
            img["height"],
            objects[img["id"]],
        )
        lines.append(f"{split}/{img['file_name']} {VOC_DIR}/{split}/{stem}.xml\n")
    write_text(
        os.path.join(root, VOC_DIR, "label_list.txt"),
        "".join(f"{cat['name']}\n" for cat in categories),
    )
    list_file = os.path.join(root, VOC_DIR, f"{split}.txt")
    write_text(list_file, "".join(lines))
    return list_file


def make_demo_data(
    root="dataset/demo",
    seed=0,
    num_train=240,
    num_val=60,
    num_empty_train=8,
    min_size=224,
    max_size=288,
    max_objects=6,
    force=False,
    voc=False,
    crowding=None,
):
    """Create the demo dataset under ``root`` unless it is already present and complete; with
    ``voc`` also (always anew) its Pascal VOC form (``write_voc_split``); with ``crowding`` (a
    ``Crowding``) the crowded variant.

    Returns a dict ``{split: 'generated' | 'skipped'}``.
    """
    plan = {"train": (num_train, num_empty_train), "val": (num_val, 0)}
    status = {}
    for split, (num_images, num_empty) in plan.items():
        settings = _split_settings(
            seed, num_images, num_empty, min_size, max_size, max_objects, crowding
        )
        if not force and _split_complete(root, split, settings):
            status[split] = "skipped"
            logger.info(f"demo data: {root}/{split} is complete ({num_images} images); skipped")
            continue
        start = time.time()
        anno = generate_split(
            root,
            split,
            num_images,
            seed=seed,
            num_empty=num_empty,
            min_size=min_size,
            max_size=max_size,
            max_objects=max_objects,
            crowding=crowding,
        )
        status[split] = "generated"
        logger.info(
            f"demo data: wrote {num_images} images / {len(anno['annotations'])} boxes "
            f"to {root}/{split} in {time.time() - start:.1f} s"
        )
    if voc:
        for split in plan:
            logger.info(f"demo data: {split} as Pascal VOC: {write_voc_split(root, split)}")
    return status
