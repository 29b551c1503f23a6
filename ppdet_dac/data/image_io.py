"""Image decoding shared by training, evaluation, inference and drawing, so all see one image.

The EXIF Orientation tag is ignored: pixels come out as stored in the file. That is what the
official DAC-DETR code sees (PIL ``Image.open(path).convert('RGB')``, no ``exif_transpose``) and
what COCO's boxes and image sizes refer to. ``cv2.IMREAD_COLOR`` alone would rotate the pixels by
the tag but leave the boxes where they were.

Decompression bombs: a small file can declare a huge image (a 30000 x 30000 PNG of one colour is
a few hundred KB and decodes to 2.7 GB). ``check_image_size`` reads the width and height from the
header of the format ``cv2.imdecode`` will decode the bytes as (identified by their magic bytes,
``ppdet_dac.data.image_headers``: JPEG, PNG, BMP or TIFF; OpenCV's other formats are refused by
name,
unknown bytes and unreadable headers are refused too) and refuses an image over ``max_pixels``
before anything is decoded; training (``DACDecode``), the predictor, the service and both
inference tools call it. The limit is at most 2^30 pixels, what ``cv2.imdecode`` decodes at all.

OpenCV's own guard: ``cv2.imdecode`` refuses more than ``OPENCV_IO_MAX_IMAGE_PIXELS`` pixels, an
environment variable OpenCV reads once, when it is loaded. Every entry point sets it from its
pixel limit before anything imports cv2 (``tools/_decode_limit.py``), so a header the check
misreads still cannot decode more. A ``max_pixels`` above that guard is refused by
``check_max_pixels`` (OpenCV would refuse those images anyway).
"""

import os

import cv2
import numpy as np

from ppdet_dac.data.image_headers import FORMATS_TEXT, read_header

__all__ = [
    "IMREAD_FLAGS",
    "DEFAULT_MAX_PIXELS",
    "MAX_PIXELS_CEILING",
    "ImageSizeError",
    "check_image_size",
    "check_max_pixels",
    "decode_bgr",
    "decode_checked",
    "decoder_pixel_limit",
    "header_size",
    "read_bgr",
]

IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
# 40 megapixels: e.g. 7300 x 5480; 120 MB once decoded (8-bit BGR). tools/_decode_limit.py
# repeats it (it runs before this package can be imported).
DEFAULT_MAX_PIXELS = 40_000_000
MAX_PIXELS_CEILING = 1 << 30  # cv2.imdecode refuses more (OPENCV_IO_MAX_IMAGE_PIXELS)
GUARD_VARIABLE = "OPENCV_IO_MAX_IMAGE_PIXELS"
# OpenCV read the variable when it was loaded (just above, or earlier in the process)
_GUARD_AT_IMPORT = os.environ.get(GUARD_VARIABLE)


class ImageSizeError(ValueError):
    """An image refused for its size (more pixels than allowed); the message names it."""


def decoder_pixel_limit():
    """OpenCV's own decode limit in this process: ``OPENCV_IO_MAX_IMAGE_PIXELS`` as it was when
    cv2 was loaded (OpenCV's default 2^30 when unset or not a number)."""
    try:
        return int(_GUARD_AT_IMPORT) if _GUARD_AT_IMPORT else MAX_PIXELS_CEILING
    except ValueError:
        return MAX_PIXELS_CEILING


def check_max_pixels(max_pixels, name="max_pixels"):
    """A configured pixel limit -> int; ValueError naming ``name`` when it is not an integer in
    [1, 2^30], or when it is above OpenCV's own limit in this process (``decoder_pixel_limit``):
    images between the two would be refused by OpenCV after passing the header check."""
    if (
        isinstance(max_pixels, bool)
        or not isinstance(max_pixels, (int, np.integer, float))
        or max_pixels != int(max_pixels)
        or not 1 <= max_pixels <= MAX_PIXELS_CEILING
    ):
        raise ValueError(
            f"{name} must be an integer number of pixels in [1, "
            f"{MAX_PIXELS_CEILING}], got {max_pixels!r}"
        )
    guard = decoder_pixel_limit()
    if max_pixels > guard:
        raise ValueError(
            f"{name} = {int(max_pixels)} is above OpenCV's own decode limit in this "
            f"process, {GUARD_VARIABLE} = {guard}; start the program with "
            f"{GUARD_VARIABLE}={int(max_pixels)} in the environment (or "
            "--max_pixels where the program has it)"
        )
    return int(max_pixels)


def _as_bytes(encoded):
    if isinstance(encoded, np.ndarray):
        return encoded.tobytes()
    return bytes(encoded)


def header_size(encoded, what="image"):
    """(width, height) of an encoded image read from the header of the format cv2.imdecode
    will decode it as, no pixels decoded; ValueError naming ``what`` when the bytes are empty,
    no image, of a format not accepted (not JPEG/PNG/BMP/TIFF) or have an unreadable header."""
    return _format_and_size(encoded, what)[1:]


def _format_and_size(encoded, what):
    data = _as_bytes(encoded)
    if not data:
        raise ValueError(f"cannot decode {what}: it is empty (0 bytes)")
    return read_header(data, what)


def check_image_size(encoded, max_pixels=DEFAULT_MAX_PIXELS, what="image"):
    """(height, width) of an encoded image from its header; ImageSizeError naming ``what`` and
    the size when width x height > max_pixels, ValueError when the bytes are refused (see
    ``header_size``) or declare no pixels."""
    fmt, width, height = _format_and_size(encoded, what)
    if width * height > max_pixels:
        raise ImageSizeError(
            f"{what} is {width} x {height} = {width * height} pixels, over the "
            f"limit of {max_pixels} pixels (max_pixels; size from its {fmt} "
            "header)"
        )
    if width < 1 or height < 1:
        raise ValueError(f"{what} has no pixels ({width} x {height}, {fmt} header)")
    return height, width


def decode_bgr(encoded, max_pixels=None):
    """Encoded image bytes (bytes / bytearray / memoryview / uint8 array) -> BGR uint8 [H, W, 3]
    in stored orientation, or None when they are not a decodable image: empty, not a JPEG/PNG/BMP/TIFF
    by their magic bytes, an unreadable header, a header declaring more than ``max_pixels``
    pixels (default: OpenCV's own limit in this process, ``decoder_pixel_limit``), or pixels
    that do not decode. Use ``decode_checked`` for an error that says which."""
    data = encoded if isinstance(encoded, np.ndarray) else np.frombuffer(encoded, dtype=np.uint8)
    if data.size == 0:
        return None
    try:
        check_image_size(data, decoder_pixel_limit() if max_pixels is None else max_pixels)
    except ValueError:  # refused from the header: nothing decoded
        return None
    try:
        return cv2.imdecode(data, IMREAD_FLAGS)
    except cv2.error:  # e.g. over OpenCV's own limit (OPENCV_IO_MAX_IMAGE_PIXELS)
        return None


def decode_checked(encoded, max_pixels=DEFAULT_MAX_PIXELS, what="image"):
    """``check_image_size``, then the decode: BGR uint8 [H, W, 3] in stored orientation, never
    None.

    Raises ImageSizeError (over ``max_pixels``, from the header, nothing decoded) or ValueError
    (not an image, or undecodable pixels), each naming ``what``.
    """
    data = encoded if isinstance(encoded, np.ndarray) else np.frombuffer(encoded, dtype=np.uint8)
    check_image_size(data, max_pixels, what)
    try:
        im = cv2.imdecode(data, IMREAD_FLAGS)
    except cv2.error as err:  # OpenCV's own guard, or a header OpenCV reads differently
        raise ValueError(
            f"cannot decode {what} ({data.size} bytes): OpenCV refused it: "
            f"{str(err).strip().splitlines()[-1]}"
        ) from None
    if im is None:
        raise ValueError(
            f"cannot decode {what} ({data.size} bytes): not a readable {FORMATS_TEXT} image"
        )
    return im


def read_bgr(path):
    """The image file ``path`` -> BGR uint8 [H, W, 3] in stored orientation, or None when it
    cannot be read or ``decode_bgr`` refuses it."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    return decode_bgr(data)
