"""Inputs and outputs of the inference tools over files (deploy/python/infer.py, tools/infer.py).

* **Inputs:** ``list_inputs`` lists ``--image_file`` and the files of ``--image_dir`` (not its
  subfolders) whose extension is one of an accepted format (``.jpg/.jpeg/.png/.bmp/.tif/.tiff``,
  ``ppdet_dac.data.image_headers.IMAGE_EXTENSIONS``, the list every decode goes by), each file
  once; the other files of the folder (GIF, WebP, ...) are not read, and the run's summary names
  them (``summary.json`` ``"unsupported"`` and the closing lines; they do not change the exit
  status).
* **Outputs never overwrite inputs:** ``check_output_dir`` refuses (one ValueError) an output
  folder that is the folder of an input image (``--image_dir`` itself, or the folder of
  ``--image_file``): the drawings would overwrite or mix with the images. A subfolder of it is
  fine, as folders are not read recursively.
* **Drawing names** keep the whole input file name: ``x.jpg`` -> ``x.jpg.png``, ``x.png`` ->
  ``x.png.png``, so inputs that differ only in their extension get drawings of their own.
  ``detections.json`` is keyed by the input path, as given. Two inputs with the same file name in
  different folders are refused (their drawings would share a name).
* ``detections.json`` and ``summary.json`` are written atomically (a temporary file renamed).
"""

import glob
import json
import os

from ppdet_dac.data.image_headers import FORMATS_TEXT, IMAGE_EXTENSIONS, has_image_extension
from ppdet_dac.utils.atomic import atomic_open

DRAWING_SUFFIX = ".png"
# files named in a message
NAMED = 5


def _first_few(items):
    items = list(items)
    text = ", ".join(str(i) for i in items[:NAMED])
    return text + (f" and {len(items) - NAMED} more" if len(items) > NAMED else "")


def list_inputs(image_file=None, image_dir=None):
    """(image paths: ``image_file`` then the folder's images, sorted, each file once; the other
    files of ``image_dir``, sorted: not read). FileNotFoundError names a missing file or folder,
    and a folder without images (with the files it holds that are not read)."""
    paths, unsupported = [], []
    if image_file:
        if not os.path.isfile(image_file):
            raise FileNotFoundError(f"image file not found: {image_file}")
        paths.append(image_file)
    if image_dir:
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(f"image directory not found: {image_dir}")
        files = sorted(p for p in glob.glob(os.path.join(image_dir, "*")) if os.path.isfile(p))
        found = [p for p in files if has_image_extension(p)]
        unsupported = [p for p in files if not has_image_extension(p)]
        if not found:
            other = (
                f"; not read (unsupported format): "
                f"{_first_few(os.path.basename(p) for p in unsupported)}"
                if unsupported
                else ""
            )
            raise FileNotFoundError(f"no {'/'.join(IMAGE_EXTENSIONS)} images in {image_dir}{other}")
        seen = {os.path.realpath(p) for p in paths}
        paths.extend(p for p in found if os.path.realpath(p) not in seen)
    if not paths:
        raise ValueError("give an image file or an image directory")
    return paths, unsupported


def drawing_name(image_path):
    """The file name of the drawing of ``image_path``: its whole file name + '.png'."""
    return os.path.basename(image_path) + DRAWING_SUFFIX


def check_output_dir(output_dir, image_paths, image_dir=None, flag="--output_dir"):
    """Raise one ValueError when ``output_dir`` is ``image_dir`` or the folder of one of
    ``image_paths`` (the drawings would overwrite or mix with the inputs), or when two inputs
    in different folders have the same file name (their drawings would share one name)."""
    out = os.path.realpath(output_dir)
    folders = [image_dir] if image_dir else []
    folders += [os.path.dirname(os.path.abspath(p)) for p in image_paths]
    for folder in folders:
        if os.path.realpath(folder) == out:
            inside = [
                os.path.basename(p)
                for p in image_paths
                if os.path.realpath(os.path.dirname(os.path.abspath(p))) == out
            ]
            raise ValueError(
                f"{flag} {output_dir} holds the input images ({_first_few(inside)}): the "
                "drawings and results would overwrite or mix with them; give another folder "
                f"(a subfolder such as {os.path.join(output_dir, 'detections')} is fine)"
            )
    by_name = {}
    for path in image_paths:
        by_name.setdefault(drawing_name(path), []).append(path)
    clashes = [paths for paths in by_name.values() if len(paths) > 1]
    if clashes:
        raise ValueError(
            f"inputs with the same file name would share one drawing in "
            f"{output_dir}: {_first_few(' / '.join(p) for p in clashes)}; run them "
            "separately or rename one"
        )


def write_json(path, value):
    """Write ``value`` as JSON to ``path`` atomically (a temporary file, then renamed)."""
    with atomic_open(path, "w") as handle:
        json.dump(value, handle, indent=1)
    return path


def write_summary(output_dir, num_images, failures, detections_json, unsupported=()):
    """<output_dir>/summary.json: {"images", "succeeded", "failed": [{"file", "error"}],
    "unsupported": [files not read], "detections"} of a run over ``num_images`` files; returns
    its path."""
    os.makedirs(output_dir, exist_ok=True)
    return write_json(
        os.path.join(output_dir, "summary.json"),
        {
            "images": int(num_images),
            "succeeded": int(num_images) - len(failures),
            "failed": list(failures),
            "unsupported": list(unsupported),
            "detections": detections_json,
        },
    )


def print_run_outcome(
    done, num_images, failures, detections_json, output_dir, elapsed=None, unsupported=()
):
    """Write ``summary.json`` (``write_summary``) and print the last lines of an inference run
    over files: how many went through (in ``elapsed`` seconds when given), where the results
    are, each file skipped and each file not read for its format. Returns the exit status: 0
    when every image went through, 1 when some were skipped (files not read do not count)."""
    summary = write_summary(output_dir, num_images, failures, detections_json, unsupported)
    took = "" if elapsed is None else f" in {elapsed:.2f} s"
    print(f"{done} of {num_images} images{took}; results in {detections_json} and {output_dir}/")
    if unsupported:
        print(
            f"{len(unsupported)} file(s) not read, unsupported format (only "
            f"{FORMATS_TEXT} files, {'/'.join(IMAGE_EXTENSIONS)}, are read; listed in "
            f"{summary}):"
        )
        for path in unsupported:
            print(f"  {path}")
    if not failures:
        return 0
    print(f"{len(failures)} file(s) skipped (listed in {summary}):")
    for failure in failures:
        print(f"  {failure['file']}: {failure['error']}")
    return 1
