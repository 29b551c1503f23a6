"""Preprocessing of the exported model's predictor: images (file paths, encoded bytes or BGR
arrays) decoded as in training, run through the ``Preprocess`` ops of infer_cfg.yml (ppdet's reader
ops: Resize with keep_ratio, NormalizeImage, Permute, PadStride) and batched: a batch is padded to
its largest image and the ``pad_mask`` input marks the real pixels (1 = image, 0 = padding).

Inputs the model cannot take are refused with a ValueError naming the image, before inference:
more pixels than ``max_pixels`` (read from the file header, nothing decoded; see
``ppdet_dac.data.image_io``), and aspect ratios so extreme that the resized image has a side under
one pixel or fewer feature positions than the queries the two-stage encoder selects
(``feature_strides`` and ``num_queries`` of infer_cfg.yml).
"""

import math
import os

import cv2
import numpy as np

from ppdet_dac.data.image_io import (
    DEFAULT_MAX_PIXELS,
    ImageSizeError,
    check_max_pixels,
    decode_checked,
)
from ppdet_dac.deploy.infer_config import INFER_CFG


class ImageShapeError(ValueError):
    """An image whose size or aspect ratio the model cannot take; the message names it."""


def describe_image(image):
    """How messages name an input: its file path, 'the image' (bytes) or the array's shape."""
    if isinstance(image, np.ndarray):
        return f"the image array of shape {list(image.shape)}"
    if isinstance(image, (bytes, bytearray, memoryview)):
        return "the image"
    return f"image file {image}"


def decode_image(image, max_pixels=DEFAULT_MAX_PIXELS):
    """A file path, encoded bytes or a BGR uint8 [H, W, 3] array -> RGB uint8 [H, W, 3].

    Files and bytes decode as in training (``DACDecode``): stored orientation, the EXIF
    orientation tag ignored, and an image whose header declares more than ``max_pixels`` pixels
    refused before decoding (``ppdet_dac.data.image_io``). Raises FileNotFoundError /
    ImageSizeError / ValueError naming the file (or saying the bytes are not an image).
    """
    what = describe_image(image)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"expected a BGR uint8 image array [H, W, 3], got {what} ({image.dtype})"
            )
        if image.shape[0] * image.shape[1] > max_pixels:
            raise ImageSizeError(
                f"{what} has {image.shape[0] * image.shape[1]} pixels, over the "
                f"limit of {max_pixels} pixels (max_pixels)"
            )
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = image
    else:
        if not os.path.isfile(image):
            raise FileNotFoundError(f"image file not found: {image}")
        try:
            data = np.fromfile(image, dtype=np.uint8)
        except OSError as err:
            raise OSError(f"cannot read {what}: {err}") from None
    return cv2.cvtColor(decode_checked(data, max_pixels, what), cv2.COLOR_BGR2RGB)


class _Resize:
    """ppdet Resize: keep_ratio scales the short side to min(target) unless the long side would
    exceed max(target); otherwise stretch to target_size [h, w]."""

    def __init__(self, target_size, keep_ratio=True, interp=cv2.INTER_LINEAR):
        self.target_size = [
            int(v)
            for v in (
                target_size
                if isinstance(target_size, (list, tuple))
                else [target_size, target_size]
            )
        ]
        self.keep_ratio, self.interp = bool(keep_ratio), int(interp)

    def scales(self, h, w):
        """(sy, sx, out_h, out_w) for an h x w image; out_* unrounded (ppdet's im_shape)."""
        if self.keep_ratio:
            sy = sx = min(min(self.target_size) / min(h, w), max(self.target_size) / max(h, w))
            return sy, sx, sy * h, sx * w
        out_h, out_w = self.target_size
        return out_h / h, out_w / w, out_h, out_w

    def pixel_size(self, h, w):
        """(rows, cols) cv2.resize produces: the scaled sides rounded to nearest (cvRound)."""
        sy, sx = self.scales(h, w)[:2]
        return int(np.rint(h * sy)), int(np.rint(w * sx))

    def __call__(self, im, info):
        h, w = im.shape[:2]
        sy, sx, out_h, out_w = self.scales(h, w)
        im = cv2.resize(im, None, None, fx=sx, fy=sy, interpolation=self.interp)
        info["im_shape"] = np.array([out_h, out_w], dtype=np.float32)
        info["scale_factor"] = info["scale_factor"] * np.array([sy, sx], dtype=np.float32)
        return im


class _NormalizeImage:
    def __init__(
        self,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        is_scale=True,
        norm_type="mean_std",
    ):
        # float64 statistics applied in place to float32 pixels, as ppdet's reader does
        self.mean = np.asarray(mean, dtype=np.float64)[None, None, :]
        self.std = np.asarray(std, dtype=np.float64)[None, None, :]
        self.is_scale, self.norm_type = bool(is_scale), norm_type

    def __call__(self, im, info):
        im = im.astype(np.float32)
        if self.is_scale:
            im *= 1.0 / 255.0
        if self.norm_type == "mean_std":
            im -= self.mean
            im /= self.std
        return im


class _Permute:
    def __call__(self, im, info):
        return np.ascontiguousarray(im.transpose(2, 0, 1))


class _PadStride:
    """Marks the stride the batch padder rounds H and W up to (padding happens per batch)."""

    def __init__(self, stride=0):
        self.stride = int(stride)

    def __call__(self, im, info):
        info["stride"] = max(self.stride, info.get("stride", 0))
        return im


_PREPROCESS_OPS = {
    "Resize": _Resize,
    "NormalizeImage": _NormalizeImage,
    "Permute": _Permute,
    "PadStride": _PadStride,
}


class Preprocessor:
    """Builds the op list from infer_cfg.yml's Preprocess and batches images.

    feature_strides / num_queries (infer_cfg.yml): the strides of the encoder's feature levels
    and the number of proposals its top-k selects; ``check_size`` refuses an image that would
    give fewer feature positions. max_pixels: the decoded-size limit (``decode_image``).
    """

    def __init__(
        self,
        steps,
        source=INFER_CFG,
        feature_strides=(),
        num_queries=0,
        max_pixels=DEFAULT_MAX_PIXELS,
    ):
        self.feature_strides = [int(s) for s in feature_strides]
        self.num_queries = int(num_queries)
        self.max_pixels = check_max_pixels(max_pixels)
        self.ops = []
        for i, step in enumerate(steps):
            step = dict(step)
            name = step.pop("type", None)
            if name not in _PREPROCESS_OPS:
                raise ValueError(
                    f"{source}: Preprocess[{i}] has type {name!r}; supported: "
                    f"{sorted(_PREPROCESS_OPS)}"
                )
            try:
                self.ops.append(_PREPROCESS_OPS[name](**step))
            except TypeError as err:
                raise ValueError(
                    f"{source}: Preprocess[{i}] ({name}) has bad arguments {step}: {err}"
                ) from err
        if not any(isinstance(op, _Permute) for op in self.ops):
            raise ValueError(f"{source}: Preprocess has no Permute (the model takes CHW images)")

    def model_input_size(self, h, w):
        """(rows, cols) of the tensor an h x w image becomes: resized, then padded to the
        PadStride stride (as a batch of one)."""
        stride = 0
        for op in self.ops:
            if isinstance(op, _Resize):
                h, w = op.pixel_size(h, w)
            elif isinstance(op, _PadStride):
                stride = max(stride, op.stride)
        if stride > 0 and h > 0 and w > 0:
            h, w = -(-h // stride) * stride, -(-w // stride) * stride
        return h, w

    def resize_scale(self, h, w):
        """The factor the Resize steps scale an h x w image by (the smaller of the two axes';
        1.0 without a Resize)."""
        scale = 1.0
        for op in self.ops:
            if isinstance(op, _Resize):
                scale *= min(op.scales(h, w)[:2])
                h, w = op.pixel_size(h, w)
        return scale

    def input_short_side(self):
        """The short side the last Resize step resizes to (its smaller target), or None."""
        sides = [min(op.target_size) for op in self.ops if isinstance(op, _Resize)]
        return sides[-1] if sides else None

    def check_size(self, h, w, what="the image"):
        """ImageShapeError naming ``what`` when an h x w image cannot go through the model: a
        side resized to under one pixel, or fewer feature positions (sum over the levels of
        ceil(rows / stride) * ceil(cols / stride)) than the num_queries proposals the encoder's
        top-k selects. Returns the model input size (rows, cols)."""
        rows, cols = self.model_input_size(h, w)
        shape = (
            f"{what} is {w} x {h} pixels (width x height, aspect ratio "
            f"{max(w, h) / max(min(w, h), 1):.0f}:1)"
        )
        if rows < 1 or cols < 1:
            raise ImageShapeError(
                f"{shape}: resized for this model a side would be "
                f"{min(rows, cols)} pixels; the model takes less extreme "
                "aspect ratios"
            )
        if self.num_queries and self.feature_strides:
            positions = sum(math.ceil(rows / s) * math.ceil(cols / s) for s in self.feature_strides)
            if positions < self.num_queries:
                raise ImageShapeError(
                    f"{shape}: resized to {cols} x {rows} it gives {positions} feature positions "
                    f"(strides {self.feature_strides}), fewer than the {self.num_queries} "
                    "proposals the model selects (num_queries); the model takes less extreme "
                    "aspect ratios"
                )
        return rows, cols

    def one(self, image):
        """One image -> (float32 [3, h, w], {'im_shape', 'scale_factor', 'stride'}).

        Raises FileNotFoundError / ValueError (ImageSizeError, ImageShapeError) naming the image
        when it cannot be read, is over max_pixels, or has a size the model cannot take."""
        im = decode_image(image, self.max_pixels)
        self.check_size(im.shape[0], im.shape[1], describe_image(image))
        return self.transform(im)

    def transform(self, im):
        """A decoded RGB uint8 [H, W, 3] array -> ``one()``'s (CHW float32, info); no checks."""
        info = {
            "im_shape": np.array(im.shape[:2], dtype=np.float32),
            "scale_factor": np.ones(2, dtype=np.float32),
            "stride": 0,
        }
        for op in self.ops:
            im = op(im, info)
        return im.astype(np.float32, copy=False), info

    def batch(self, images):
        """Images -> the feed dict: image [B, 3, H, W] zero-padded to the largest (rounded up to
        the PadStride stride), pad_mask [B, H, W] (1 = image), im_shape, scale_factor [B, 2]."""
        return self.stack([self.one(im) for im in images])

    @staticmethod
    def stack(items):
        """``one()`` results -> the feed dict of ``batch()``."""
        stride = max(info["stride"] for _, info in items)
        h = max(im.shape[1] for im, _ in items)
        w = max(im.shape[2] for im, _ in items)
        if stride > 0:
            h, w = -(-h // stride) * stride, -(-w // stride) * stride
        image = np.zeros((len(items), 3, h, w), dtype=np.float32)
        pad_mask = np.zeros((len(items), h, w), dtype=np.float32)
        for i, (im, _) in enumerate(items):
            image[i, :, : im.shape[1], : im.shape[2]] = im
            pad_mask[i, : im.shape[1], : im.shape[2]] = 1.0
        return {
            "image": image,
            "pad_mask": pad_mask,
            "im_shape": np.stack([info["im_shape"] for _, info in items]),
            "scale_factor": np.stack([info["scale_factor"] for _, info in items]),
        }
