"""OpenCV's own pixel limit, set before anything imports cv2. ``ppdet_dac/__init__.py`` imports
this module first, so ``import ppdet_dac`` (or any ``ppdet_dac.*``) before anything that loads
cv2 sets it in every entry point that decodes images (tools/*.py, deploy/python/infer.py,
deploy/serving/server.py). It imports nothing but the standard library.

``cv2.imdecode`` refuses an image of more than ``OPENCV_IO_MAX_IMAGE_PIXELS`` pixels before
allocating it; OpenCV reads the variable once, when it is loaded (ppdet and ppdet_dac load it, so
this must run before they are imported). It is set to the program's pixel limit: the value of
``--max_pixels N`` / ``--max_pixels=N`` on the command line when given, else 40,000,000 (the
default of ``ppdet_dac.data.image_io``). A value already in the environment is kept (setdefault):
the user's own setting wins. Our header check (``image_io.check_image_size``) refuses oversized
images first with a clear message; this is the second line, for a header the check misreads.
A configured limit above it (e.g. a reader's ``DACDecode: {max_pixels: N}`` with N over 40 M) is
refused by ``image_io.check_max_pixels`` with a message naming the variable to set.
"""

import logging
import os
import sys

VARIABLE = "OPENCV_IO_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 40_000_000  # = ppdet_dac.data.image_io.DEFAULT_MAX_PIXELS (tested)
MAX_PIXELS_CEILING = 1 << 30


def cli_max_pixels(argv):
    """The integer after ``--max_pixels`` in ``argv`` (last one wins, as argparse), or None when
    absent or not an integer in [1, 2^30] (the program's own argument check reports that)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == "--max_pixels" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--max_pixels="):
            value = arg.split("=", 1)[1]
    try:
        number = int(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and 1 <= number <= MAX_PIXELS_CEILING else None


def set_decode_limit(argv, warn_if_late=True):
    """Set ``OPENCV_IO_MAX_IMAGE_PIXELS`` (unless already set) from ``argv``; the value in
    effect. When cv2 is already loaded the variable comes too late: nothing is set (it would
    only reach child processes) and, with ``warn_if_late``, a warning says so. (``import
    ppdet_dac`` calls it without the warning: a program or notebook that loads paddle or cv2
    first uses ppdet_dac as a library; the entry points that decode images import ppdet_dac
    first, which tests/tools/test_decode_limit.py checks.)"""
    if "cv2" in sys.modules:
        if not warn_if_late:
            return os.environ.get(VARIABLE)
        logging.getLogger("ppdet_dac.decode_limit").warning(
            f"cv2 was imported before {VARIABLE} could be set: OpenCV's own pixel limit in this "
            f"process is {os.environ.get(VARIABLE, 'its default, 2^30')} (import _decode_limit "
            "before anything else)"
        )
        return os.environ.get(VARIABLE)
    return os.environ.setdefault(VARIABLE, str(cli_max_pixels(argv) or DEFAULT_MAX_PIXELS))
