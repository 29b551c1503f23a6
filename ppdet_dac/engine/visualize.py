"""Drawing detections onto images (boxes, labels and scores)."""
import colorsys
import os

import cv2
import numpy as np

from ppdet_dac.data.image_io import read_bgr


def _color(label):
    """A stable, distinct BGR colour per label."""
    hue = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_detections(image_bgr, detections, label_names=None, threshold=0.5):
    """Draw rows (label, score, x1, y1, x2, y2) with score >= threshold onto a copy of the image.

    image_bgr: [H, W, 3] uint8. detections: [N, 6] array. Returns (image, number drawn).
    """
    canvas = image_bgr.copy()
    drawn = 0
    for label, score, x1, y1, x2, y2 in np.asarray(detections, dtype=np.float64).reshape(-1, 6):
        if score < threshold:
            continue
        label = int(label)
        color = _color(label)
        p1, p2 = (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2)))
        cv2.rectangle(canvas, p1, p2, color, 2)
        name = label_names[label] if label_names and 0 <= label < len(label_names) else str(label)
        text = f"{name} {score:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        top = max(p1[1] - th - 4, 0)
        cv2.rectangle(canvas, (p1[0], top), (p1[0] + tw + 2, top + th + 4), color, -1)
        cv2.putText(canvas, text, (p1[0] + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1, cv2.LINE_AA)
        drawn += 1
    return canvas, drawn


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
