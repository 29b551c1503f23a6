"""Folder runs of the infer tools: predict a list of image files, going on past the ones that
cannot be taken, and write the drawings and detections.json (the output names and folder checks
are ``ppdet_dac.deploy.outputs``').
"""

import os

import cv2
from ppdet.utils.logger import setup_logger

from ppdet_dac.data.image_io import read_bgr
from ppdet_dac.deploy.outputs import check_output_dir, drawing_name, write_json
from ppdet_dac.deploy.postprocess import detection_records, split_detections
from ppdet_dac.deploy.preprocess import Preprocessor
from ppdet_dac.deploy.slicing import sliced_detections
from ppdet_dac.deploy.visualize import draw_detections

logger = setup_logger(__name__)


def save_results(
    image_paths,
    detections,
    output_dir,
    label_list=None,
    threshold=0.5,
    image_dir=None,
    draw_labels=True,
):
    """Write <output_dir>/<image file name>.png (``outputs.drawing_name``: x.jpg -> x.jpg.png)
    with the detections >= threshold drawn (their labels too unless ``draw_labels`` is false), and <output_dir>/detections.json {image path: all
    detection records}. Returns the JSON path. ValueError (``outputs.check_output_dir``) when
    ``output_dir`` holds the input images (or is ``image_dir``) or two drawings would share a
    name."""
    check_output_dir(output_dir, image_paths, image_dir)
    os.makedirs(output_dir, exist_ok=True)
    results = {}
    for path, dets in zip(image_paths, detections):
        image = read_bgr(path)  # the pixels the model saw (EXIF orientation ignored)
        if image is None:
            raise ValueError(f"cannot read image file {path}")
        canvas, _ = draw_detections(image, dets, label_list, threshold, draw_labels)
        out = os.path.join(output_dir, drawing_name(path))
        if not cv2.imwrite(out, canvas):
            raise OSError(f"cannot write {out}")
        results[path] = detection_records(dets, label_list)
        logger.info(
            f"{path}: {sum(r['score'] >= threshold for r in results[path])} detections "
            f">= {threshold} drawn to {out}"
        )
    return write_json(os.path.join(output_dir, "detections.json"), results)


def _read_or_skip(read, path, failures):
    """``read(path)``, or None after logging the file and adding it to ``failures`` when it is
    unreadable, not an image, over max_pixels or too thin for the model."""
    try:
        return read(path)
    except (OSError, ValueError) as err:
        logger.error(f"skipping {path}: {err}")
        failures.append({"file": path, "error": str(err)})
        return None


def predict_files(predictor, paths, batch_size=1):
    """Run ``predictor`` over image files, going on past the ones it cannot take.

    Each file that cannot be read or decoded, is over the predictor's max_pixels, or has a size
    the model cannot take is logged (file and reason) and left out; the others are predicted in
    batches of ``batch_size`` (of tiles, one image at a time, when the predictor slices).
    Returns ({path: float32 [N, 6] detections} in input order, [{"file": path, "error":
    reason}] of the files left out).
    """
    batch_size = max(int(batch_size), 1)
    results, failures, pending = {}, [], []
    if predictor.slicing is not None:
        for path in paths:
            image = _read_or_skip(predictor.load, path, failures)
            if image is None:
                continue
            results[path] = sliced_detections(
                image, predictor.slicing, predictor.detect_tiles, batch_size
            )
        return results, failures

    def flush():
        if pending:
            bbox, bbox_num = predictor.run(Preprocessor.stack([item for _, item in pending]))
            for (path, _), dets in zip(pending, split_detections(bbox, bbox_num)):
                results[path] = dets
            pending.clear()

    for path in paths:
        item = _read_or_skip(predictor.prepare, path, failures)
        if item is None:
            continue
        pending.append((path, item))
        if len(pending) == batch_size:
            flush()
    flush()
    return results, failures
