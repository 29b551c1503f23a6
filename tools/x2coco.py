r"""Convert a Pascal-VOC dataset to a COCO annotation file (ppdet's x2coco.py command line).

    python tools/x2coco.py --dataset_type voc \
        --voc_anno_dir dataset/voc --voc_anno_list dataset/voc/train.txt \
        --voc_label_list dataset/voc/label_list.txt --voc_out_name annotations/train.json \
        [--output_dir dataset/voc]

``--voc_anno_list`` lines are '<image path> <xml path>' (ppdet's VOCDataSet lists; both paths
relative to ``--voc_anno_dir``, whose images the COCO file then names by that path) or one XML
path or id per line (VOC's ImageSets/Main/*.txt; '.xml' is added; the image is the XML's
``<filename>``). The output is ``--output_dir``/``--voc_out_name``. Class k of the label list
(one name per line) gets category id k + 1. Box convention and the rules for bad entries:
``ppdet_dac.data.voc`` (VOC's 1-based inclusive xmin..xmax becomes x = xmin - 1,
w = xmax - xmin + 1). ``--label_map 'Dead=Tree,Alive=Tree'`` (or a .yml/.json file) renames or
merges the XML files' names into classes of the label list, ``NAME=__ignore__`` leaves those
objects out (``ppdet_dac.data.label_map``, as a VOC dataset's ``label_map``). Only
``--dataset_type voc`` is supported. A list that names the same
image twice is refused (ValueError naming the list and the file), as evaluation would refuse the
COCO file (``ppdet_dac.data.duplicates``).
"""

import argparse
import json
import os

import ppdet_dac  # noqa: F401  (first: drops known-harmless import notices)
from ppdet.utils.logger import setup_logger

from ppdet_dac.data.duplicates import check_no_duplicates
from ppdet_dac.data.label_map import LABEL_MAP_HELP
from ppdet_dac.data.voc import convert_voc
from ppdet_dac.utils.atomic import atomic_open
from ppdet_dac.utils.cli import run_cli

logger = setup_logger("x2coco")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset_type", required=True, choices=["voc"], help="the source format (only 'voc')"
    )
    parser.add_argument(
        "--voc_anno_dir", required=True, help="folder the list's XML paths are relative to"
    )
    parser.add_argument(
        "--voc_anno_list",
        required=True,
        help="list file: '<image> <xml>' or '<xml or id>' per line",
    )
    parser.add_argument("--voc_label_list", required=True, help="class names, one per line")
    parser.add_argument(
        "--voc_out_name", default="voc.json", help="output COCO file, relative to --output_dir"
    )
    parser.add_argument("--output_dir", default="./", help="folder of the output file")
    parser.add_argument("--label_map", default=None, help=LABEL_MAP_HELP)
    return parser.parse_args(argv)


def main(argv=None):
    """Convert as the arguments say; returns the path written. ValueError /
    FileNotFoundError name the file at fault."""
    args = parse_args(argv)
    coco = convert_voc(args.voc_anno_dir, args.voc_anno_list, args.voc_label_list, args.label_map)
    check_no_duplicates(coco, args.voc_anno_list)
    out = os.path.join(args.output_dir, args.voc_out_name)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with atomic_open(out, "w") as handle:
        json.dump(coco, handle)
    logger.info(
        f"{args.voc_anno_list}: wrote {len(coco['images'])} images, "
        f"{len(coco['annotations'])} boxes and {len(coco['categories'])} categories to "
        f"{out}"
    )
    return out


if __name__ == "__main__":
    run_cli(main)
