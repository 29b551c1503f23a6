"""Drawing detections onto images: boxes clipped to the image, and readable labels.

Labels ("name score" on a filled rectangle) are placed in descending score order, each at the
first of its candidate positions that lies inside the image and overlaps no label placed
before it: above the box's top-left corner, inside it, below the box, the same at the right
edge, then stacked further above / below (near-duplicate boxes get their labels one above the
other). Where every candidate overlaps, the one overlapping least is used. Boxes are drawn
first and labels last, so no box line crosses a label. Text and lines grow with the image.
"""

import colorsys
import os

import cv2
import numpy as np

from ppdet_dac.data.image_io import read_bgr

FONT = cv2.FONT_HERSHEY_SIMPLEX
STACK_STEPS = 6  # label heights a label may move above / below its box to stay clear


def _color(label):
    """A stable, distinct BGR colour per label."""
    hue = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def drawing_style(height, width):
    """(font scale, text thickness, box line thickness) for an image of that size: 0.4 / 1 / 2
    up to 800 px on the short side, then in proportion (readable on large photos)."""
    grow = max(min(height, width) / 800.0, 1.0)
    return 0.4 * grow, max(int(round(grow)), 1), max(int(round(2 * grow)), 2)


def _overlap(rect, others):
    """Area of ``rect`` (x1, y1, x2, y2) shared with each of ``others`` [K, 4]."""
    if not len(others):
        return np.zeros(0)
    iw = np.minimum(rect[2], others[:, 2]) - np.maximum(rect[0], others[:, 0])
    ih = np.minimum(rect[3], others[:, 3]) - np.maximum(rect[1], others[:, 1])
    return np.clip(iw, 0, None) * np.clip(ih, 0, None)


def _candidates(box, size, height, width):
    """Label rectangles (x1, y1, x2, y2) to try for ``box``, in order of preference, each moved
    inside the image."""
    x1, y1, x2, y2 = box
    lw, lh = size
    spots = [
        (x1, y1 - lh),
        (x1, y1),
        (x1, y2),
        (x1, y2 - lh),
        (x2 - lw, y1 - lh),
        (x2 - lw, y1),
        (x2 - lw, y2),
        (x2 - lw, y2 - lh),
    ]
    for k in range(1, STACK_STEPS + 1):
        spots += [
            (x1, y1 - lh - k * lh),
            (x1, y2 + k * lh),
            (x1, y1 + k * lh),
            (x2 - lw, y1 - lh - k * lh),
            (x2 - lw, y2 + k * lh),
        ]
    rects = []
    for x, y in spots:
        x = min(max(x, 0), max(width - lw, 0))
        y = min(max(y, 0), max(height - lh, 0))
        rects.append((x, y, x + lw, y + lh))
    return rects


def layout_labels(boxes, sizes, height, width):
    """Label rectangles for ``boxes`` (int [N, 4] xyxy, in placement order) whose labels measure
    ``sizes`` ([N, 2] width, height): int [N, 4] (x1, y1, x2, y2), inside a height x width image
    when the label fits it, overlapping earlier ones only where every candidate does."""
    placed = np.zeros((0, 4), dtype=np.int64)
    for box, size in zip(boxes, sizes):
        best, best_cost = None, None
        for rect in _candidates([int(v) for v in box], [int(v) for v in size], height, width):
            cost = _overlap(rect, placed).sum()
            if best is None or cost < best_cost:
                best, best_cost = rect, cost
            if cost == 0:
                break
        placed = np.vstack([placed, np.array(best, dtype=np.int64)[None]])
    return placed


def label_boxes(image_shape, detections, label_names=None, threshold=0.5):
    """What ``draw_detections`` draws: a list of (label, text, box, label rectangle) for the rows
    with score >= threshold, highest score first; ``box`` clipped to the image (int x1, y1, x2,
    y2), ``label rectangle`` from ``layout_labels``."""
    height, width = image_shape[:2]
    font_scale, text_thickness, _ = drawing_style(height, width)
    rows = np.asarray(detections, dtype=np.float64).reshape(-1, 6)
    rows = rows[rows[:, 1] >= threshold]
    rows = rows[np.argsort(-rows[:, 1], kind="stable")]
    boxes, texts, sizes = [], [], []
    for label, score, x1, y1, x2, y2 in rows:
        label = int(label)
        name = label_names[label] if label_names and 0 <= label < len(label_names) else str(label)
        texts.append(f"{name} {score:.2f}")
        (tw, th), base = cv2.getTextSize(texts[-1], FONT, font_scale, text_thickness)
        sizes.append((tw + 4, th + base + 4))
        boxes.append(
            [
                int(round(min(max(x1, 0), width))),
                int(round(min(max(y1, 0), height))),
                int(round(min(max(x2, 0), width))),
                int(round(min(max(y2, 0), height))),
            ]
        )
    rects = layout_labels(np.array(boxes, dtype=np.int64).reshape(-1, 4), sizes, height, width)
    return [
        (int(row[0]), text, box, tuple(int(v) for v in rect))
        for row, text, box, rect in zip(rows, texts, boxes, rects)
    ]


def draw_detections(image_bgr, detections, label_names=None, threshold=0.5, draw_labels=True):
    """Draw rows (label, score, x1, y1, x2, y2) with score >= threshold onto a copy of the image:
    boxes clipped to it, labels placed by ``label_boxes`` (none with ``draw_labels`` false: for
    dense scenes, where the labels would cover the boxes).

    image_bgr: [H, W, 3] uint8. detections: [N, 6] array. Returns (image, number drawn).
    """
    canvas = image_bgr.copy()
    font_scale, text_thickness, line = drawing_style(*canvas.shape[:2])
    drawn = label_boxes(canvas.shape, detections, label_names, threshold)
    for label, _, (x1, y1, x2, y2), _ in reversed(drawn):  # the best box on top
        cv2.rectangle(canvas, (x1, y1), (x2, y2), _color(label), line)
    for label, text, _, (rx1, ry1, rx2, ry2) in reversed(drawn if draw_labels else []):
        cv2.rectangle(canvas, (rx1, ry1), (rx2 - 1, ry2 - 1), _color(label), -1)
        _, base = cv2.getTextSize(text, FONT, font_scale, text_thickness)
        cv2.putText(
            canvas,
            text,
            (rx1 + 2, ry2 - 2 - base),
            FONT,
            font_scale,
            (255, 255, 255),
            text_thickness,
            cv2.LINE_AA,
        )
    return canvas, len(drawn)


def save_detections(image_path, detections, out_path, label_names=None, threshold=0.5):
    """Read ``image_path`` (stored orientation, as the model read it: ``image_io.read_bgr``),
    draw the detections, write a PNG to ``out_path``; returns #drawn."""
    image = read_bgr(image_path)
    if image is None:
        raise FileNotFoundError(f"cannot read image {image_path}")
    canvas, drawn = draw_detections(image, detections, label_names, threshold)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    if not cv2.imwrite(out_path, canvas):
        raise OSError(f"cannot write {out_path}")
    return drawn
