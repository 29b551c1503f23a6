"""Drawn detections (ppdet_dac.deploy.visualize): labels inside the image and clear of each
other for near-duplicate and border boxes, drawn where the layout puts them, boxes clipped."""

import itertools

import numpy as np

NAMES = ["circle", "square", "triangle"]
HEIGHT, WIDTH = 300, 400


def _scene():
    """Six near-duplicate boxes, a box past the left edge (x1 = -15), one at the top edge, one
    past the bottom-right corner, two overlapping boxes of other classes."""
    rows = [[0, 0.95 - 0.02 * i, 100 + i, 100 + i, 180 + i, 160 - i] for i in range(6)]
    rows += [
        [1, 0.8, -15, 40, 60, 120],
        [2, 0.7, 150, 2, 260, 50],
        [1, 0.6, 330, 250, WIDTH + 10, HEIGHT + 10],
        [2, 0.55, 220, 150, 300, 230],
        [1, 0.52, 230, 160, 310, 240],
    ]
    return np.array(rows, np.float32)


def _intersection(a, b):
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0)


def test_labels_stay_inside_and_do_not_overlap():
    from ppdet_dac.deploy.visualize import label_boxes

    placed = label_boxes((HEIGHT, WIDTH, 3), _scene(), NAMES, threshold=0.0)
    assert len(placed) == len(_scene())
    assert [p[1].split()[0] for p in placed][:6] == ["circle"] * 6  # highest score first
    for _, text, box, (x1, y1, x2, y2) in placed:
        assert 0 <= x1 < x2 <= WIDTH and 0 <= y1 < y2 <= HEIGHT, (text, (x1, y1, x2, y2))
        assert 0 <= box[0] <= box[2] <= WIDTH and 0 <= box[1] <= box[3] <= HEIGHT
    for a, b in itertools.combinations(placed, 2):
        assert _intersection(a[3], b[3]) == 0, (a[1], a[3], b[1], b[3])


def test_drawing_puts_each_label_in_its_rectangle_and_clips_boxes():
    from ppdet_dac.deploy.visualize import _color, draw_detections, label_boxes

    image = np.full((HEIGHT, WIDTH, 3), 40, np.uint8)
    canvas, drawn = draw_detections(image, _scene(), NAMES, threshold=0.0)
    placed = label_boxes(image.shape, _scene(), NAMES, threshold=0.0)
    assert drawn == len(placed)
    for label, text, _, (x1, y1, x2, y2) in placed:
        colour = np.array(_color(label), np.uint8)
        # the rectangle's top row is the label's colour from end to end (no other label or
        # box line crosses it), and the white text is inside it
        assert (canvas[y1, x1:x2] == colour).all(), text
        assert (canvas[y1:y2, x1:x2].min(axis=2) > 150).sum() > 10, text
    # the box past the left edge has its left side drawn on the border column, from y 40 to 120
    left = canvas[60:110, 0]
    assert (left == np.array(_color(1), np.uint8)).all()
    # with a threshold, only the rows above it are drawn
    assert draw_detections(image, _scene(), NAMES, threshold=0.75)[1] == 7


def test_labels_grow_with_the_image():
    from ppdet_dac.deploy.visualize import label_boxes

    row = np.array([[0, 0.9, 100, 100, 300, 300]], np.float32)
    small = label_boxes((400, 400, 3), row, NAMES)[0][3]
    large = label_boxes((2000, 2400, 3), row * [1, 1, 5, 5, 5, 5], NAMES)[0][3]
    assert large[3] - large[1] >= 2 * (small[3] - small[1])
