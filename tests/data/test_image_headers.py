"""The pixel limit reads the size from the format OpenCV will decode (ppdet_dac.data.image_headers):
crafted files that get past a check asking Pillow's plugins in turn are refused from their own
header, OpenCV's other formats are refused by name, and every entry point sets OpenCV's own
limit (OPENCV_IO_MAX_IMAGE_PIXELS) before cv2 is loaded."""

import io
import re
import struct
import time

import cv2
import numpy as np
import pytest
from PIL import PcdImagePlugin, PngImagePlugin

from _crafted_images import (
    lying_jpeg,
    lying_png,
    polyglot_hdr,
    polyglot_png,
    several_sof_jpeg,
    small_image,
    tiff_file,
)
from ppdet_dac.data.image_headers import (
    ImageHeaderError,
    UnsupportedFormatError,
    identify_format,
    read_header,
)
from ppdet_dac.data.image_io import (
    DEFAULT_MAX_PIXELS,
    MAX_PIXELS_CEILING,
    ImageSizeError,
    check_image_size,
    header_size,
)

CHECK_HANG_GUARD_S = 1.0  # the check reads a few header bytes: microseconds


def _refused(data, error, pattern, max_pixels=DEFAULT_MAX_PIXELS):
    started = time.monotonic()
    with pytest.raises(error, match=pattern):
        check_image_size(data, max_pixels, "upload")
    assert time.monotonic() - started < CHECK_HANG_GUARD_S


@pytest.fixture(scope="module")
def png_polyglot():
    return polyglot_png(30000, 30000)


def test_polyglot_png_is_refused_from_its_ihdr(png_polyglot):
    assert len(png_polyglot) < 200_000
    # the controls: Pillow's PNG plugin gives up on the zTXt chunk, its PhotoCD plugin (no
    # accept check) reads the same bytes as a 768 x 512 image: a plugin walk passes the file
    with pytest.raises(SyntaxError, match="compression method"):
        PngImagePlugin.PngImageFile(io.BytesIO(png_polyglot))
    with PcdImagePlugin.PcdImageFile(io.BytesIO(png_polyglot)) as im:
        assert im.size == (768, 512)
    assert identify_format(png_polyglot) == "PNG"
    _refused(
        png_polyglot,
        ImageSizeError,
        r"upload is 30000 x 30000 = 900000000 pixels, over "
        r"the limit of 40000000 pixels .*PNG header",
    )
    # the ceiling does not help it either: 900 Mpx is under 2^30, still over a limit of 10^8
    _refused(png_polyglot, ImageSizeError, "900000000 pixels", 10**8)


@pytest.mark.parametrize("side", [15000, 9000])
def test_radiance_polyglot_is_refused_by_name_whatever_the_limit(side):
    data = polyglot_hdr(side, side)
    with PcdImagePlugin.PcdImageFile(io.BytesIO(data)) as im:  # the control, as above
        assert im.size == (768, 512)
    for limit in (DEFAULT_MAX_PIXELS, MAX_PIXELS_CEILING):
        _refused(
            data,
            UnsupportedFormatError,
            "upload is a Radiance HDR file: format Radiance HDR is not accepted",
            limit,
        )


@pytest.mark.parametrize(
    "ext, name",
    [
        (".webp", "WebP"),
        (".ppm", "PBM/PGM/PPM/PAM/PFM"),
        (".pam", "PBM/PGM/PPM/PAM/PFM"),
        (".pfm", "PBM/PGM/PPM/PAM/PFM"),
        (".sr", "Sun raster"),
        (".hdr", "Radiance HDR"),
    ],
)
def test_other_formats_opencv_decodes_are_refused_by_name(ext, name):
    data = small_image(ext)
    # the control: OpenCV decodes this file
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (16, 24, 3)
    _refused(data, UnsupportedFormatError, f"format {re.escape(name)} is not accepted")


@pytest.mark.parametrize(
    "head, name",
    [
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
        (b"\xff\x4f\xff\x51", "JPEG 2000"),
        (b"\x76\x2f\x31\x01", "OpenEXR"),
    ],
)
def test_formats_without_an_encoder_here_are_refused_by_name(head, name):
    _refused(head + bytes(200), UnsupportedFormatError, f"format {name} is not accepted")


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".tif"])
def test_header_size_is_the_size_opencv_decodes(ext):
    """Files whose header declares another size than their pixel data: the check reports what
    OpenCV allocates and decodes, the header's size."""
    variants = [small_image(ext)]
    if ext == ".jpg":
        variants.append(lying_jpeg(64, 48))
    if ext == ".bmp":  # rows stored top-down: negative height
        top_down = bytearray(variants[0])
        struct.pack_into("<i", top_down, 22, -16)
        variants.append(bytes(top_down))
    for data in variants:
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert decoded is not None
        assert check_image_size(data) == decoded.shape[:2]
        fmt = {".jpg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tif": "TIFF"}[ext]
        assert read_header(data)[0] == fmt


def test_lying_headers_are_refused_with_their_size():
    _refused(
        lying_jpeg(30000, 30000),
        ImageSizeError,
        r"upload is 30000 x 30000 = 900000000 pixels, .*JPEG header",
    )
    _refused(
        lying_png(30000, 30000),
        ImageSizeError,
        r"upload is 30000 x 30000 = 900000000 pixels, .*PNG header",
    )
    assert header_size(lying_png(7, 5)) == (7, 5)


def test_jpeg_with_several_frame_headers_is_refused():
    data = several_sof_jpeg(30000, 30000)
    # the control: libjpeg refuses it too (Pillow would keep the last SOF, 24 x 16)
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is None
    _refused(data, ImageHeaderError, "several SOF markers")


@pytest.mark.parametrize(
    "data, pattern",
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "JPEG ends before its first scan"),
        (b"\xff\xd8\xff\xda\x00\x08" + bytes(20), "no SOF marker before its scan"),
        (b"\xff\xd8\xff\xe0\x00\x01" + bytes(20), "has length 1"),
        (b"\xff\xd8\xff\xc8\x00\x04" + bytes(20), "unknown marker FFC8"),
        (b"\x89PNG\r\n\x1a\n" + bytes(6), "does not start with its IHDR"),
    ],
)
def test_unreadable_headers_are_refused(data, pattern):
    _refused(data, ImageHeaderError, pattern)


def test_png_whose_first_chunk_is_not_ihdr_is_refused():
    data = small_image(".png")
    text = struct.pack(">I", 4) + b"tEXt" + b"a\x00bc" + bytes(4)
    _refused(data[:8] + text + data[8:], ImageHeaderError, "does not start with its IHDR")


def test_bmp_with_an_unknown_info_header_is_refused():
    data = bytearray(small_image(".bmp"))
    struct.pack_into("<I", data, 14, 20)
    _refused(bytes(data), ImageHeaderError, r"BMP info header \(size 20\)")


def test_unknown_bytes_are_not_an_image():
    for data in (b"GIF89a" + bytes(100), b"%PDF-1.4" + bytes(100)):
        assert identify_format(data) is None
        _refused(data, ImageHeaderError, "not a readable JPEG/PNG/BMP/TIFF image")


def test_plain_decode_refuses_what_the_check_refuses(png_polyglot):
    """decode_bgr (drawing, the dataset's decodability scan) decodes only what the header check
    passes: OpenCV's other formats and oversized headers give None, nothing decoded."""
    from ppdet_dac.data.image_io import decode_bgr

    webp, jpeg = small_image(".webp"), small_image(".jpg")
    assert cv2.imdecode(np.frombuffer(webp, np.uint8), cv2.IMREAD_COLOR) is not None
    assert decode_bgr(webp) is None and decode_bgr(polyglot_hdr(64, 64)) is None
    assert decode_bgr(several_sof_jpeg()) is None
    assert decode_bgr(png_polyglot, max_pixels=DEFAULT_MAX_PIXELS) is None
    assert decode_bgr(jpeg).shape == (16, 24, 3) and decode_bgr(jpeg, max_pixels=383) is None


@pytest.mark.parametrize("kind", [".jpg", ".bmp", "tiff <", "tiff >"])
def test_mutated_headers_never_pass_with_another_size(kind):
    """Random byte changes in the first 160 bytes of a small JPEG / BMP / TIFF of either byte
    order (its header and whole first directory; the PNG's IHDR sits at a fixed place, and its
    CRCs stop libpng on any change): whenever the check passes a file and OpenCV decodes it,
    OpenCV's image has the size the check read (the header's)."""
    rng = np.random.default_rng(0)
    if kind.startswith("tiff"):
        data = tiff_file(30, 20, kind[-1])
    else:
        data = small_image(kind, 20, 30)
    original = np.frombuffer(data, np.uint8)
    passed = decoded = 0
    for _ in range(300):
        data = original.copy()
        where = rng.integers(0, 160, size=rng.integers(1, 4))
        data[where] = rng.integers(0, 256, size=where.size)
        try:
            height, width = check_image_size(data, 10**6)
        except ValueError:
            continue
        passed += 1
        try:
            image = cv2.imdecode(data, cv2.IMREAD_COLOR)
        except cv2.error:
            continue
        if image is not None:
            decoded += 1
            assert image.shape[:2] == (height, width), (where, data[where])
    assert passed > 0 and decoded > 0  # the loop did check decodable files
