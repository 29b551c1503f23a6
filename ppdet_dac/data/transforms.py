"""Reader op replacing ppdet 2.6.0's ``Decode``, whose error handling hides the file at fault.

ppdet's ``Decode`` wraps ``cv2.imdecode`` in a bare ``except:``; an undecodable file then leaves
the raw ``bytes`` in ``sample['image']`` and the run dies later with ``'bytes' object has no
attribute 'shape'``, naming no file. ``DACDecode`` produces the same sample keys but raises
``ImageDecodeError`` naming the file, which ``DACCOCODataSet`` turns into a logged skip during
training. Decoding ignores the EXIF orientation tag, as the official code's PIL reading does
(``ppdet_dac.data.image_io``, shared with inference and drawing).

``QuietDecodeCompose`` wraps ppdet's ``Compose`` so that an ``ImageDecodeError`` is not logged
with a traceback (the dataset logs it in one line).

The op is registered with ppdet's ``register_op`` and attached to ``ppdet.data.transform``,
which is where the reader looks op names up.
"""

import traceback

import cv2
import numpy as np
import ppdet.data.transform as ppdet_transform
from ppdet.data.transform.operators import BaseOperator, ImageError, register_op
from ppdet.utils.logger import setup_logger

from ppdet_dac.data.image_io import DEFAULT_MAX_PIXELS, check_max_pixels, decode_checked

logger = setup_logger(__name__)


class ImageDecodeError(ImageError):
    """An image file that cannot be read or decoded; the message names the file."""

    def __init__(self, message, im_file=None):
        super().__init__(message)
        self.im_file = im_file


@register_op
class DACDecode(BaseOperator):
    """Read and decode ``sample['im_file']`` (or the encoded bytes in ``sample['image']``) to
    RGB uint8 [H, W, 3]; set 'h', 'w', 'im_shape' and 'scale_factor' [1, 1] like ppdet's Decode.

    The pixels are in stored orientation (the EXIF orientation tag is ignored, as PIL's
    ``Image.open(...).convert('RGB')`` in the official code; ppdet's Decode would rotate them by
    the tag and leave the boxes unrotated).

    max_pixels: an image whose header declares more pixels (width x height) is refused before
    it is decoded (decompression bombs); default 40,000,000. The size is read from the header
    of the format OpenCV will decode (JPEG, PNG, BMP or TIFF by the file's magic bytes; OpenCV's other
    formats are refused by name, see ``ppdet_dac.data.image_headers``). A limit above OpenCV's
    own (``OPENCV_IO_MAX_IMAGE_PIXELS``, set by the tools at start) is a ValueError here.

    Raises ImageDecodeError naming the file when it cannot be read, is not a JPEG/PNG/BMP/TIFF
    image with a readable header, is over max_pixels or does not decode.
    """

    def __init__(self, max_pixels=DEFAULT_MAX_PIXELS):
        super().__init__()
        self.max_pixels = check_max_pixels(max_pixels, "DACDecode.max_pixels")

    def apply(self, sample, context=None):
        im_file = sample.get("im_file", "<in-memory image>")
        if "image" not in sample:
            try:
                with open(sample["im_file"], "rb") as f:
                    sample["image"] = f.read()
            except OSError as err:
                raise ImageDecodeError(f"cannot read image file {im_file}: {err}", im_file)
        sample.pop("im_file", None)
        encoded = sample["image"]
        if isinstance(encoded, np.ndarray) and encoded.ndim == 3:
            im = encoded  # already decoded upstream
        else:
            try:
                im = decode_checked(encoded, self.max_pixels, f"image file {im_file}")
            except ValueError as err:  # not an image, or over max_pixels (from the header)
                raise ImageDecodeError(str(err), im_file) from None
            if sample.get("keep_ori_im"):
                sample["ori_image"] = im
            im = cv2.cvtColor(im, cv2.COLOR_BGR2RGB)
        sample["image"] = im
        for key, actual in (("h", im.shape[0]), ("w", im.shape[1])):
            if key in sample and sample[key] != actual:
                logger.warning(
                    f"{im_file}: annotation says {key}={sample[key]} but the image has "
                    f"{actual}; using the image's value"
                )
            sample[key] = actual
        sample["im_shape"] = np.array(im.shape[:2], dtype=np.float32)
        sample["scale_factor"] = np.array([1.0, 1.0], dtype=np.float32)
        return sample


class QuietDecodeCompose:
    """ppdet's ``Compose`` (same ops, same order) without its warning with a traceback for an
    ``ImageDecodeError``: the dataset reports an undecodable file in one line, or the error
    itself names it. Other errors are logged like ``Compose`` does and re-raised."""

    def __init__(self, compose):
        self.compose = compose

    def __getattr__(self, name):
        compose = self.__dict__.get("compose")
        if compose is None:  # e.g. while unpickling
            raise AttributeError(name)
        return getattr(compose, name)

    def __call__(self, data):
        ops = getattr(self.compose, "transforms_cls", None)
        if ops is None:
            return self.compose(data)
        for op in ops:
            try:
                data = op(data)
            except ImageDecodeError:
                raise
            except Exception as err:  # logged as ppdet's Compose does, then re-raised
                logger.warning(
                    f"fail to map sample transform [{op}] with error: {err} and "
                    f"stack:\n{traceback.format_exc()}"
                )
                raise
        return data


# the reader resolves op names with getattr(ppdet.data.transform, name)
setattr(ppdet_transform, DACDecode.__name__, DACDecode)
