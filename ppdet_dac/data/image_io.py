"""Image decoding shared by training, evaluation, inference and drawing, so all see one image.

The EXIF Orientation tag is ignored: pixels come out as stored in the file. That is what the
official DAC-DETR code sees (PIL ``Image.open(path).convert('RGB')``, no ``exif_transpose``) and
what COCO's boxes and image sizes refer to. ``cv2.IMREAD_COLOR`` alone would rotate the pixels by
the tag but leave the boxes where they were.
"""
import cv2
import numpy as np

__all__ = ["IMREAD_FLAGS", "decode_bgr", "read_bgr"]

IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


def decode_bgr(encoded):
    """Encoded image bytes (bytes / bytearray / memoryview / uint8 array) -> BGR uint8 [H, W, 3]
    in stored orientation, or None when they are not a decodable image."""
    data = encoded if isinstance(encoded, np.ndarray) else np.frombuffer(encoded, dtype=np.uint8)
    if data.size == 0:
        return None
    return cv2.imdecode(data, IMREAD_FLAGS)


def read_bgr(path):
    """The image file ``path`` -> BGR uint8 [H, W, 3] in stored orientation (as ``decode_bgr``),
    or None when it cannot be read or decoded."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    return decode_bgr(data)
