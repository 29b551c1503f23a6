"""Command-line options shared by deploy/python/infer.py, tools/infer.py, the service and the
benchmark, in ppdet's names. Values are checked by argparse as they are parsed (``type=``
validators: a bad value is the parser's error naming the flag, exit status 2); the slice options
then build one ``SliceConfig``.
"""

import argparse

from ppdet_dac.data.image_io import DEFAULT_MAX_PIXELS, check_max_pixels
from ppdet_dac.deploy.slicing import COMBINE_METHODS, MATCH_METRICS, SliceConfig

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
SLICE_FLAGS = ("slice_size", "overlap_ratio", "combine_method", "match_threshold", "match_metric")


def _bool_value(text):
    value = str(text).strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def _number(text, kind):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a{'n integer' if kind is int else ' number'}, got {text!r}"
        ) from None


def max_pixels_value(text):
    """``--max_pixels``: an integer number of pixels ``check_max_pixels`` accepts."""
    try:
        return check_max_pixels(_number(text, int), "--max_pixels")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def fraction(low_open=False, high_open=False):
    """A ``type=`` for a number in [0, 1] (an end excluded where ``*_open``)."""

    def value(text):
        number = _number(text, float)
        if not (0.0 < number if low_open else 0.0 <= number) or not (
            number < 1.0 if high_open else number <= 1.0
        ):
            raise argparse.ArgumentTypeError(
                f"must be in {'(' if low_open else '['}0, 1{')' if high_open else ']'}, "
                f"got {number}"
            )
        return number

    value.__name__ = "fraction"
    return value


def positive_int(text):
    """A ``type=`` for an integer >= 1."""
    number = _number(text, int)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {number}")
    return number


def add_drawing_options(parser):
    """``--draw_labels``: draw each box's label and score (default true; false draws the boxes
    alone, for dense scenes)."""
    parser.add_argument(
        "--draw_labels",
        type=_bool_value,
        default=True,
        help="draw each box's label and score (default true; false: boxes alone, for dense "
        "scenes whose labels would cover the boxes)",
    )


def add_cpu_options(parser):
    """oneDNN and pixel-limit options: ``--disable_mkldnn``, ppdet's ``--enable_mkldnn`` (bare,
    or ``=True/False``; kept for compatibility, oneDNN being the default), ``--max_pixels``."""
    parser.add_argument(
        "--enable_mkldnn",
        type=_bool_value,
        nargs="?",
        const=True,
        default=None,
        help="oneDNN on CPU (the default; ppdet's flag, also --enable_mkldnn False)",
    )
    parser.add_argument(
        "--disable_mkldnn",
        action="store_true",
        help="run Paddle's plain CPU kernels instead of oneDNN (2-3x slower)",
    )
    # a string default goes through type= too: the default is checked against OpenCV's limit
    parser.add_argument(
        "--max_pixels",
        type=max_pixels_value,
        default=str(DEFAULT_MAX_PIXELS),
        help="refuse images whose header declares more pixels (width x height), "
        "before decoding them",
    )


def mkldnn_from_args(args, parser=None):
    """True unless --disable_mkldnn or --enable_mkldnn False; both together is an error."""
    if args.disable_mkldnn and args.enable_mkldnn:
        message = "--enable_mkldnn and --disable_mkldnn contradict each other; give one"
        if parser is not None:
            parser.error(message)
        raise ValueError(message)
    return not args.disable_mkldnn and args.enable_mkldnn is not False


def add_detection_options(parser, nms=True):
    """The deployment options: ``--score_threshold``, ``--nms_threshold`` (unless ``nms`` is
    False), ``--slice_infer``, ``--slice_size H W``, ``--overlap_ratio H W``,
    ``--combine_method``, ``--match_threshold``, ``--match_metric``."""
    defaults = SliceConfig()
    if nms:
        parser.add_argument(
            "--nms_threshold",
            type=fraction(),
            default=None,
            help="re-run the class-wise NMS at this IoU threshold (default: the "
            "exported one, infer_cfg.yml NMS.nms_threshold); the same "
            "detections as an export at that threshold",
        )
    parser.add_argument(
        "--score_threshold",
        type=fraction(),
        default=0.0,
        help="drop detections scoring below this (JSON, drawings and answers)",
    )
    parser.add_argument(
        "--slice_infer",
        action="store_true",
        help="sliced inference for large images: overlapping tiles of "
        "--slice_size, detections mapped back and merged",
    )
    parser.add_argument(
        "--slice_size",
        nargs=2,
        type=positive_int,
        default=list(defaults.slice_size),
        metavar=("H", "W"),
        help="tile height and width in pixels",
    )
    parser.add_argument(
        "--overlap_ratio",
        nargs=2,
        type=fraction(high_open=True),
        default=list(defaults.overlap_ratio),
        metavar=("H", "W"),
        help="overlap of neighbouring tiles, as a fraction of the tile side",
    )
    parser.add_argument(
        "--combine_method",
        choices=COMBINE_METHODS,
        default=defaults.combine_method,
        help="nms: one detection per object (class-wise NMS over the tiles); "
        "concat: every tile's detections",
    )
    parser.add_argument(
        "--match_threshold",
        type=fraction(),
        default=defaults.match_threshold,
        help="nms merge: drop a detection whose overlap with a kept one of its class is above this",
    )
    parser.add_argument(
        "--match_metric",
        choices=MATCH_METRICS,
        default=defaults.match_metric,
        help="nms merge overlap: ios (intersection over the smaller box) or iou",
    )


def detection_options_from_args(args, parser=None):
    """{'nms_threshold', 'score_threshold', 'slicing'} of ``add_detection_options``' flags (the
    slice flags as one SliceConfig when --slice_infer; a parser error, or ValueError without a
    parser, naming the bad flag)."""
    slicing = None
    if args.slice_infer:
        try:
            slicing = SliceConfig(*(getattr(args, name) for name in SLICE_FLAGS))
        except ValueError as err:
            message = str(err)
            message = "--" + message if message.startswith(SLICE_FLAGS) else message
            if parser is not None:
                parser.error(message)
            raise ValueError(message) from None
    return {
        "nms_threshold": getattr(args, "nms_threshold", None),
        "score_threshold": float(args.score_threshold),
        "slicing": slicing,
    }
