r"""Cut the images of a COCO or Pascal-VOC training set into overlapping tiles: a COCO set of tiles.

    python tools/slice_image.py --image_dir dataset/aerial/train \
        --json_path dataset/aerial/annotations/train.json \
        --output_dir dataset/aerial_tiles/train [--slice_size 640 | --slice_size H W] \
        [--overlap_ratio 0.25 | --overlap_ratio H W] [--min_area_ratio 0.5] [--keep_empty]
    python tools/slice_image.py --voc_anno_dir dataset/aerial_voc \
        --voc_anno_list dataset/aerial_voc/train.txt \
        --voc_label_list dataset/aerial_voc/label_list.txt --output_dir dataset/aerial_tiles/train

ppdet's flags (``--image_dir``, ``--json_path``, ``--output_dir``, ``--slice_size``,
``--overlap_ratio``) and, for VOC input, x2coco's (``--voc_anno_dir``, ``--voc_anno_list``,
``--voc_label_list``, ``--label_map``; the list's image paths are relative to ``--image_dir``, by default
``--voc_anno_dir``). Writes ``--output_dir``/images/ (the tiles) and ``--output_dir``/
``--json_name`` (their COCO annotations); a config reads them with ``dataset_dir:
<output_dir>``, ``image_dir: images``, ``anno_path: annotations.json``. The tiles are the grid
of ``tools/infer.py --slice_infer`` (the last tile of a row or column shifted inward, so all
have the full slice size); boxes are clipped to each tile and kept when at least
``--min_area_ratio`` of their area is inside; tiles without boxes are left out unless
``--keep_empty``. Rules and file layout: ``ppdet_dac.data.tiling``. Bad input stops the tool
with one line naming the file, exit status 1.
"""

import argparse
import os

import ppdet_dac  # noqa: F401  (before cv2 loads: OpenCV's pixel limit from --max_pixels)

from ppdet.utils.logger import setup_logger

from ppdet_dac.data.image_io import DEFAULT_MAX_PIXELS
from ppdet_dac.data.label_map import LABEL_MAP_HELP
from ppdet_dac.data.tiling import (
    DEFAULT_MIN_AREA_RATIO,
    TILE_FOLDER,
    TileOptions,
    coco_source,
    slice_dataset,
    voc_source,
)
from ppdet_dac.deploy.cli_options import fraction, max_pixels_value, positive_int
from ppdet_dac.utils.cli import run_cli

logger = setup_logger("slice_image")

VOC_FLAGS = ("voc_anno_dir", "voc_anno_list", "voc_label_list")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image_dir", help="folder the annotations' image paths are relative to")
    parser.add_argument("--json_path", help="COCO annotation file of the images")
    parser.add_argument("--voc_anno_dir", help="VOC input: folder the list's paths are relative to")
    parser.add_argument(
        "--voc_anno_list", help="VOC input: list file, '<image> <xml>' or '<xml or id>' per line"
    )
    parser.add_argument("--voc_label_list", help="VOC input: class names, one per line")
    parser.add_argument("--label_map", default=None, help="VOC input: " + LABEL_MAP_HELP)
    parser.add_argument("--output_dir", required=True, help="folder of the tiles and their JSON")
    parser.add_argument(
        "--json_name", default="annotations.json", help="tile annotation file in --output_dir"
    )
    parser.add_argument(
        "--slice_size",
        nargs="+",
        type=positive_int,
        default=[640],
        metavar="PIXELS",
        help="tile side, or tile height and width (default 640, as --slice_infer)",
    )
    parser.add_argument(
        "--overlap_ratio",
        nargs="+",
        type=fraction(high_open=True),
        default=[0.25],
        metavar="RATIO",
        help="overlap of neighbouring tiles as a fraction of the tile side, or one for height "
        "and one for width (default 0.25)",
    )
    parser.add_argument(
        "--min_area_ratio",
        type=fraction(),
        default=DEFAULT_MIN_AREA_RATIO,
        help="keep a box in a tile when at least this fraction of its area is inside "
        f"(default {DEFAULT_MIN_AREA_RATIO})",
    )
    parser.add_argument(
        "--keep_empty",
        action="store_true",
        help="also write tiles without boxes (train them with allow_empty: true)",
    )
    parser.add_argument(
        "--max_pixels",
        type=max_pixels_value,
        default=DEFAULT_MAX_PIXELS,
        help="refuse images whose header declares more pixels (width x height)",
    )
    args = parser.parse_args(argv)
    voc = [name for name in VOC_FLAGS if getattr(args, name)]
    if args.json_path and voc:
        parser.error("give --json_path (COCO) or the --voc_* flags (VOC), not both")
    if not args.json_path and len(voc) < len(VOC_FLAGS):
        parser.error(
            "give --json_path (COCO input) or all of --voc_anno_dir, --voc_anno_list and "
            "--voc_label_list (VOC input)"
        )
    if args.json_path and not args.image_dir:
        parser.error("--image_dir is required with --json_path")
    for name in ("slice_size", "overlap_ratio"):
        if len(getattr(args, name)) > 2:
            parser.error(f"--{name}: one value, or two (height width)")
    return args


def _height_width(values):
    """(h, w) of a flag given one value (both sides) or two."""
    return (values[0], values[0]) if len(values) == 1 else tuple(values)


def main(argv=None):
    """Slice as the arguments say; returns (annotation file written, statistics).
    FileNotFoundError / ValueError name the file at fault."""
    args = parse_args(argv)
    options = TileOptions(
        _height_width(args.slice_size),
        _height_width(args.overlap_ratio),
        args.min_area_ratio,
        args.keep_empty,
    )
    if args.json_path:
        source, image_dir = args.json_path, args.image_dir
        anno, inputs = coco_source(source), [source]
    else:
        source, image_dir = args.voc_anno_list, args.image_dir or args.voc_anno_dir
        anno = voc_source(
            args.voc_anno_dir, args.voc_anno_list, args.voc_label_list, args.label_map
        )
        inputs = [args.voc_anno_list, args.voc_label_list]
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"image directory not found: {image_dir}")
    path, stats = slice_dataset(
        anno, source, image_dir, args.output_dir, options, args.max_pixels, args.json_name, inputs
    )
    logger.info(
        f"{source}: {stats['images']} images -> {stats['tiles']} tiles of "
        f"{options.slice_size[0]} x {options.slice_size[1]} px at most with "
        f"{stats['boxes']} boxes ({stats['empty_tiles']} tiles without boxes left out, "
        f"{stats['dropped']} box parts under min_area_ratio {options.min_area_ratio} "
        f"dropped); tiles in {os.path.join(args.output_dir, TILE_FOLDER)}, annotations {path}"
    )
    return path, stats


if __name__ == "__main__":
    run_cli(main)
