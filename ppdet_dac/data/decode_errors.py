"""Undecodable images in a detection dataset: skip, raise or report (``on_decode_error``).

Images that are listed and present but corrupt are found only when read. With the reader op
``DACDecode`` they raise ``ImageDecodeError``; with ``on_decode_error: skip`` (default) the dataset
logs the file once and serves the next decodable image instead, so a training run keeps going,
until ``max_consecutive_decode_errors`` images in a row (default 50; counted per loader process)
or every image failed to decode: then ``UnreadableDatasetError`` names the image folder and the
first bad files. With ``on_decode_error: raise`` the error propagates. With ``on_decode_error:
report`` (evaluation: a substitute image would distort the metric) every image is decoded once
when the dataset is loaded; the undecodable ones are left out, each named in the log with one
summary, and the COCO metric counts only the images evaluated. Either way the
``ImageDecodeError`` is not logged with a traceback by ppdet's ``Compose``.
"""

import os

import numpy as np
from ppdet.utils.logger import setup_logger

from ppdet_dac.data.annotations import MAX_SKIP_LINES, NAMED_IN_SUMMARY, first_few
from ppdet_dac.data.image_headers import FORMATS_TEXT
from ppdet_dac.data.image_io import decode_bgr
from ppdet_dac.data.transforms import ImageDecodeError
from ppdet_dac.utils.cli import UserError

logger = setup_logger(__name__)

DECODE_ERROR_MODES = ("skip", "raise", "report")
DEFAULT_MAX_CONSECUTIVE_DECODE_ERRORS = 50


class UnreadableDatasetError(UserError, RuntimeError):
    """Training cannot go on: too many images in a row, or all of them, cannot be decoded.

    The message names the image folder and the first undecodable files."""


class DecodeErrorHandling:
    """Mixin for a ppdet dataset (placed before it in the bases): ``__getitem__`` skips
    undecodable images, ``_decodable`` filters them out at load time. The dataset provides
    ``roidbs``, ``_anno_file()``, ``_image_root()`` and ``_seed_sample(idx)``."""

    def _init_decode_errors(self, on_decode_error, max_consecutive_decode_errors):
        """Check and keep the two settings (one ValueError naming the bad value)."""
        if on_decode_error not in DECODE_ERROR_MODES:
            raise ValueError(
                f"on_decode_error must be one of {DECODE_ERROR_MODES}, got {on_decode_error!r}"
            )
        limit = max_consecutive_decode_errors
        if not isinstance(limit, (int, np.integer)) or isinstance(limit, bool) or limit < 1:
            raise ValueError(
                f"{type(self).__name__}.max_consecutive_decode_errors must be an integer "
                f">= 1, got {limit!r}"
            )
        self.on_decode_error = on_decode_error
        self.max_consecutive_decode_errors = int(limit)
        self._undecodable = set()
        self._undecodable_files = []  # the first few, for the error message
        self._decode_errors_in_row = 0

    def _decodable(self, anno_file, records):
        """``records`` without the images that do not decode (on_decode_error: report), each
        named in a warning (the first few) and all counted in one summary."""
        kept, bad = [], []
        for record in records:
            with open(record["im_file"], "rb") as handle:
                if decode_bgr(handle.read()) is None:
                    bad.append(record["im_file"])
                    if len(bad) <= MAX_SKIP_LINES:
                        logger.warning(
                            f"{record['im_file']} (image id "
                            f"{int(np.asarray(record['im_id']).reshape(-1)[0])}) "
                            "cannot be decoded: left out of the evaluation"
                        )
                    continue
            kept.append(record)
        if bad:
            logger.warning(
                f"{anno_file}: {len(bad)} of {len(records)} images cannot be decoded "
                f"and are left out; they do not count in the metric "
                f"({first_few([os.path.basename(f) for f in bad])})"
            )
        return kept

    def __getitem__(self, idx):
        """ppdet's sample for ``idx``; with on_decode_error='skip' an undecodable image is
        replaced by the next decodable one (each bad file is logged once per process), until
        ``max_consecutive_decode_errors`` failures in a row or no decodable image is left:
        then UnreadableDatasetError."""
        n = len(self.roidbs)
        idx %= n
        self._seed_sample(idx)
        for offset in range(n):
            candidate = (idx + offset) % n
            if candidate in self._undecodable:
                continue
            try:
                sample = super().__getitem__(candidate)
            except ImageDecodeError as err:
                if self.on_decode_error == "raise":
                    raise
                error = err
            else:
                self._decode_errors_in_row = 0
                return sample
            self._skip_undecodable(candidate, error)  # outside the except: no chained traceback
        raise self._unreadable(
            f"none of the {n} images listed in {self._anno_file()} can be decoded"
        )

    def _skip_undecodable(self, index, err):
        """Remember and log an undecodable record; UnreadableDatasetError at the limit."""
        self._undecodable.add(index)
        if len(self._undecodable_files) < NAMED_IN_SUMMARY:
            self._undecodable_files.append(err.im_file or self.roidbs[index]["im_file"])
        self._decode_errors_in_row += 1
        logger.warning(
            f"skipping undecodable image: {err}; training continues with the next "
            f"image ({len(self._undecodable)} undecodable so far)"
        )
        if self._decode_errors_in_row >= self.max_consecutive_decode_errors:
            raise self._unreadable(
                f"{self._decode_errors_in_row} images in a row cannot be decoded "
                f"(max_consecutive_decode_errors: {self.max_consecutive_decode_errors}), so "
                f"training stops instead of searching the rest for a readable one"
            )

    def _unreadable(self, what):
        root = self._image_root()
        files = [os.path.relpath(f, root) for f in self._undecodable_files]
        return UnreadableDatasetError(
            f"{root}: {what}; undecodable files include "
            f"{first_few(files)} ({len(self._undecodable)} in all); "
            f"check that the images are {FORMATS_TEXT} files that open"
        )
