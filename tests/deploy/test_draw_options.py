"""Drawings without labels (``--draw_labels false``: only the box outlines change pixels) and the
one console format of coordinates (``format_box``)."""

import argparse

import cv2
import numpy as np
import pytest

from ppdet_dac.deploy.cli_options import add_drawing_options
from ppdet_dac.deploy.folder_run import save_results
from ppdet_dac.deploy.postprocess import format_box
from ppdet_dac.deploy.visualize import _color, draw_detections, drawing_style

# two boxes of different classes, the second crossing the right border (clipped to x 160)
DETECTIONS = np.array([[0, 0.9, 20, 30, 100, 90], [1, 0.8, 60, 10, 170, 60]], dtype=np.float32)


def _image():
    return np.full((120, 160, 3), 90, dtype=np.uint8)


def _outlines_only(image):
    """The boxes as cv2.rectangle draws them (the best box last, on top), nothing else."""
    expected = image.copy()
    line = drawing_style(*image.shape[:2])[2]
    for label, _, x1, y1, x2, y2 in DETECTIONS[::-1]:
        x2 = min(x2, image.shape[1])
        cv2.rectangle(expected, (int(x1), int(y1)), (int(x2), int(y2)), _color(int(label)), line)
    return expected


def test_boxes_without_labels_are_the_outlines_alone():
    image = _image()
    drawn, count = draw_detections(image, DETECTIONS, ["tree", "car"], 0.5, draw_labels=False)
    assert count == 2
    np.testing.assert_array_equal(drawn, _outlines_only(image))
    labelled, _ = draw_detections(image, DETECTIONS, ["tree", "car"], 0.5)
    # with labels, pixels off the outlines change too (the filled label rectangles)
    extra = np.any(labelled != _outlines_only(image), axis=2)
    assert extra.sum() > 100


def test_folder_run_writes_the_drawing_without_labels(tmp_path):
    source = tmp_path / "in" / "a.png"
    source.parent.mkdir()
    cv2.imwrite(str(source), _image())
    save_results(
        [str(source)], [DETECTIONS], str(tmp_path / "out"), ["tree", "car"], 0.5, None, False
    )
    written = cv2.imread(str(tmp_path / "out" / "a.png.png"))
    np.testing.assert_array_equal(written, _outlines_only(_image()))


@pytest.mark.parametrize("given, value", [([], True), (["--draw_labels", "false"], False)])
def test_draw_labels_flag(given, value):
    parser = argparse.ArgumentParser()
    add_drawing_options(parser)
    assert parser.parse_args(given).draw_labels is value


def test_both_infer_tools_take_the_flag():
    for path in ("tools/infer.py", "deploy/python/infer.py"):
        with open(path) as handle:
            source = handle.read()
        assert "add_drawing_options(parser)" in source and "args.draw_labels" in source, path


def test_coordinates_have_two_decimals():
    assert format_box([1, 2.346, 3.333333, 1000]) == "[1.00, 2.35, 3.33, 1000.00]"
    assert format_box(np.float32([0.004, 12.5, 7, 8])) == "[0.00, 12.50, 7.00, 8.00]"
