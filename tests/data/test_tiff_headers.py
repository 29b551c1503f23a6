"""TIFF is read like the other accepted formats (ppdet_dac.data.image_headers): the size comes
from the first image file directory's ImageWidth / ImageLength, in either byte order and either
value type, before anything is decoded; crafted or cut TIFF headers are refused with a message
that says why."""

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from _crafted_images import TIFF_LONG, TIFF_SHORT, tiff_file
from ppdet_dac.data import image_io
from ppdet_dac.data.image_headers import (
    ACCEPTED_FORMATS,
    TIFF_BUFFER_ALLOWANCE,
    ImageHeaderError,
    read_header,
)
from ppdet_dac.data.image_io import ImageSizeError, check_image_size, decode_checked

H, W = 7, 11


def _rgb_pattern(height=H, width=W):
    """RGB uint8 [height, width, 3], every pixel different (a flip or turn would show)."""
    return np.arange(height * width * 3, dtype=np.uint8).reshape(height, width, 3)


def _decoded_by_opencv(data):
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def _pillow_tiff(rgb, **options):
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "TIFF", **options)
    return buffer.getvalue()


def test_tiff_is_an_accepted_format():
    assert "TIFF" in ACCEPTED_FORMATS


@pytest.mark.parametrize("writer", ["opencv", "pillow", "pillow-deflate"])
def test_tiff_files_of_common_writers_decode_at_their_header_size(writer):
    rgb = _rgb_pattern()
    if writer == "opencv":  # LZW, written by OpenCV's libtiff
        data = cv2.imencode(".tif", rgb[:, :, ::-1].copy())[1].tobytes()
    else:
        data = _pillow_tiff(rgb, **({"compression": "tiff_deflate"} if "deflate" in writer else {}))
    assert read_header(data) == ("TIFF", W, H)
    assert check_image_size(data) == (H, W)
    # lossless: the decoded BGR pixels are the written ones
    np.testing.assert_array_equal(decode_checked(data, what="scan.tif"), rgb[:, :, ::-1])


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("size_type", [TIFF_SHORT, TIFF_LONG])
def test_both_byte_orders_and_both_value_types(order, size_type):
    rgb = _rgb_pattern()
    data = tiff_file(W, H, order, size_type, pixels=rgb.tobytes())
    assert data[:2] == (b"II" if order == "<" else b"MM")
    assert read_header(data) == ("TIFF", W, H)
    decoded = _decoded_by_opencv(data)  # the control: OpenCV's own reading of the file
    assert decoded.shape == (H, W, 3)
    np.testing.assert_array_equal(decode_checked(data), rgb[:, :, ::-1])


def test_tiff_claiming_20000_x_20000_is_refused_before_decoding(monkeypatch):
    data = tiff_file(20000, 20000, ">", TIFF_LONG, pixels=bytes(64))
    assert len(data) < 200

    def no_decoding(*args, **kwargs):
        raise AssertionError("cv2.imdecode was called")

    monkeypatch.setattr(image_io.cv2, "imdecode", no_decoding)
    with pytest.raises(
        ImageSizeError,
        match=r"^big\.tif is 20000 x 20000 = 400000000 pixels, over the limit of 40000000 "
        r"pixels \(max_pixels; size from its TIFF header\)$",
    ):
        decode_checked(data, what="big.tif")
    assert image_io.decode_bgr(data, max_pixels=image_io.DEFAULT_MAX_PIXELS) is None


@pytest.mark.parametrize(
    "cut, pattern",
    [
        (4, "TIFF header is cut short"),
        (8, "TIFF directory offset 8 is outside the file"),
        (12, r"TIFF directory \(9 entries\) is cut short"),
        (8 + 2 + 12 * 9 + 2, r"TIFF directory \(9 entries\) is cut short"),
    ],
)
def test_cut_tiff_headers_are_refused(cut, pattern):
    data = tiff_file(W, H)[:cut]
    with pytest.raises(ImageHeaderError, match=rf"^cannot decode cut\.tif \({cut} bytes\): "):
        check_image_size(data, what="cut.tif")
    with pytest.raises(ImageHeaderError, match=pattern):
        read_header(data)


@pytest.mark.parametrize(
    "options, pattern",
    [
        ({"version": 43}, r"BigTIFF \(version 43\), not accepted"),
        ({"version": 41}, "TIFF header has version 41, not 42"),
        ({"next_ifd": 8}, "TIFF has several pages .* only single-page TIFF files"),
        ({"tags": [(274, TIFF_SHORT, 6)]}, "TIFF Orientation tag is 6; only 1"),
        ({"duplicates": [(256, TIFF_LONG, 60000)]}, r"ImageWidth \(256\) appears twice"),
        ({"tags": [(257, 5, 8)]}, r"ImageLength \(257\) has type 5 and 1 values"),
        ({"tags": [(257, TIFF_SHORT, 0)]}, r"has no pixels \(11 x 0, TIFF header\)"),
        (
            {"tags": [(278, TIFF_LONG, TIFF_BUFFER_ALLOWANCE)]},
            r"TIFF tiles or strips of 11534336 pixels are larger than the image \(11 x 7\)",
        ),
        (
            {"tags": [(322, TIFF_LONG, 2048), (323, TIFF_LONG, 1024)]},
            r"TIFF tiles or strips of 2097152 pixels are larger than the image",
        ),
    ],
)
def test_crafted_tiff_headers_are_refused(options, pattern):
    with pytest.raises(ValueError, match=pattern):
        check_image_size(tiff_file(W, H, **options))


def test_turning_orientation_is_refused_because_opencv_turns_tiffs():
    """The control behind the Orientation rule: OpenCV 4.5.5 turns a TIFF with Orientation 6
    even when told to ignore orientation, so the decoded size is not the stored one."""
    data = tiff_file(W, H, tags=[(274, TIFF_SHORT, 6)])
    turned = cv2.imdecode(
        np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    )
    assert turned.shape == (W, H, 3)
    assert read_header(tiff_file(W, H, tags=[(274, TIFF_SHORT, 1)])) == ("TIFF", W, H)
    with pytest.raises(ImageHeaderError, match="Orientation tag is 6"):
        read_header(data)


def test_tiles_no_larger_than_the_allowance_pass():
    data = tiff_file(W, H, tags=[(322, TIFF_LONG, 1024), (323, TIFF_LONG, 1024)])
    assert 1024 * 1024 == TIFF_BUFFER_ALLOWANCE
    assert read_header(data) == ("TIFF", W, H)
