"""Image decoding shared by training, evaluation, inference and drawing, so all see one image.

The EXIF Orientation tag is ignored: pixels come out as stored in the file. That is what the
official DAC-DETR code sees (PIL ``Image.open(path).convert('RGB')``, no ``exif_transpose``) and
what COCO's boxes and image sizes refer to. ``cv2.IMREAD_COLOR`` alone would rotate the pixels by
the tag but leave the boxes where they were.

Decompression bombs: a small file can declare a huge image (a 30000 x 30000 PNG of one colour is
a few hundred KB and decodes to 2.7 GB). ``check_image_size`` reads the width and height from the
file's header with Pillow's format plugins (which decode no pixels) and refuses an image over
``max_pixels`` before anything is decoded; training (``DACDecode``), the predictor, the service
and both inference tools call it. The limit is at most 2^30 pixels, what ``cv2.imdecode``
decodes at all.
"""
import io
import struct

import cv2
import numpy as np
from PIL import Image

__all__ = ["IMREAD_FLAGS", "DEFAULT_MAX_PIXELS", "MAX_PIXELS_CEILING", "ImageSizeError",
           "check_image_size", "check_max_pixels", "decode_bgr", "decode_checked", "header_size",
           "read_bgr"]

IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
# 40 megapixels: e.g. 7300 x 5480; 120 MB once decoded (8-bit BGR).
DEFAULT_MAX_PIXELS = 40_000_000
MAX_PIXELS_CEILING = 1 << 30  # cv2.imdecode refuses more (OPENCV_IO_MAX_IMAGE_PIXELS)


class ImageSizeError(ValueError):
    """An image refused for its size (more pixels than allowed); the message names it."""


def check_max_pixels(max_pixels, name="max_pixels"):
    """A configured pixel limit -> int; ValueError naming ``name`` when it is not an integer in
    [1, 2^30]."""
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer, float)) \
            or max_pixels != int(max_pixels) or not 1 <= max_pixels <= MAX_PIXELS_CEILING:
        raise ValueError(f"{name} must be an integer number of pixels in [1, "
                         f"{MAX_PIXELS_CEILING}], got {max_pixels!r}")
    return int(max_pixels)


def _as_bytes(encoded):
    if isinstance(encoded, np.ndarray):
        return encoded.tobytes()
    return bytes(encoded)


def _plugin_open(data):
    """The lazily opened Pillow image of ``data`` (header parsed, no pixels), or None.

    As ``PIL.Image.open`` tries its format plugins, without its decompression-bomb check (a
    warning, or an error above 2 x PIL.Image.MAX_IMAGE_PIXELS): the caller applies its own
    limit, and wants the size in its message whatever it is.
    """
    prefix = data[:16]
    Image.preinit()  # BMP, GIF, JPEG, PPM, PNG
    for everything in (False, True):
        if everything:
            Image.init()  # every other plugin
        for fmt in list(Image.ID):
            factory, accept = Image.OPEN[fmt]
            try:
                accepted = accept(prefix) if accept else True
                if accepted and not isinstance(accepted, str):
                    return factory(io.BytesIO(data), "")
            except (SyntaxError, IndexError, TypeError, struct.error, OSError, ValueError):
                continue  # not this format, or a broken header
    return None


def header_size(encoded, what="image"):
    """(width, height) of an encoded image read from its header, no pixels decoded; ValueError
    naming ``what`` when the bytes are no image format Pillow knows."""
    data = _as_bytes(encoded)
    if not data:
        raise ValueError(f"cannot decode {what}: it is empty (0 bytes)")
    im = _plugin_open(data)
    if im is None:
        raise ValueError(f"cannot decode {what} ({len(data)} bytes): not a readable "
                         "JPEG/PNG/BMP image")
    with im:
        return int(im.size[0]), int(im.size[1])


def check_image_size(encoded, max_pixels=DEFAULT_MAX_PIXELS, what="image"):
    """(height, width) of an encoded image from its header; ImageSizeError naming ``what`` when
    width x height > max_pixels, ValueError when the header is not an image's."""
    width, height = header_size(encoded, what)
    if width * height > max_pixels:
        raise ImageSizeError(f"{what} is {width} x {height} = {width * height} pixels, over the "
                             f"limit of {max_pixels} pixels (max_pixels)")
    if width < 1 or height < 1:
        raise ValueError(f"{what} has no pixels ({width} x {height})")
    return height, width


def decode_bgr(encoded):
    """Encoded image bytes (bytes / bytearray / memoryview / uint8 array) -> BGR uint8 [H, W, 3]
    in stored orientation, or None when they are not a decodable image (no size check)."""
    data = encoded if isinstance(encoded, np.ndarray) else np.frombuffer(encoded, dtype=np.uint8)
    if data.size == 0:
        return None
    try:
        return cv2.imdecode(data, IMREAD_FLAGS)
    except cv2.error:  # e.g. over OpenCV's own 2^30-pixel limit: not decodable here
        return None


def decode_checked(encoded, max_pixels=DEFAULT_MAX_PIXELS, what="image"):
    """``decode_bgr`` after ``check_image_size``: BGR uint8 [H, W, 3], never None.

    Raises ImageSizeError (over ``max_pixels``, from the header, nothing decoded) or ValueError
    (not an image, or undecodable pixels), each naming ``what``.
    """
    data = encoded if isinstance(encoded, np.ndarray) else np.frombuffer(encoded, dtype=np.uint8)
    check_image_size(data, max_pixels, what)
    im = decode_bgr(data)
    if im is None:
        raise ValueError(f"cannot decode {what} ({data.size} bytes): not a readable JPEG/PNG/BMP "
                         "image")
    return im


def read_bgr(path):
    """The image file ``path`` -> BGR uint8 [H, W, 3] in stored orientation (as ``decode_bgr``),
    or None when it cannot be read or decoded."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    return decode_bgr(data)
