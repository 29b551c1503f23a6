"""Inference outputs (ppdet_dac.deploy.outputs): the output folder never holds the inputs,
x.jpg and x.png get drawings of their own, files of other formats are named in the summary."""

import json
import os

import cv2
import numpy as np
import pytest

from _deploy_helpers import encoded_image
from ppdet_dac.data.image_headers import IMAGE_EXTENSIONS
from ppdet_dac.deploy.outputs import check_output_dir, list_inputs, print_run_outcome
from ppdet_dac.deploy.folder_run import save_results

BOX = np.array([[0, 0.9, 4, 4, 30, 20]], np.float32)


def _folder(root):
    """x.jpg (dark), x.png (bright) and scan.tiff (mid grey), a GIF and a WebP (not read), and
    a subfolder."""
    folder = root / "images"
    os.makedirs(folder / "sub")
    (folder / "x.jpg").write_bytes(encoded_image(40, 60, ".jpg", value=30))
    (folder / "x.png").write_bytes(encoded_image(40, 60, ".png", value=220))
    (folder / "sub" / "y.png").write_bytes(encoded_image(40, 60, ".png"))
    (folder / "scan.tiff").write_bytes(encoded_image(40, 60, ".tiff", value=120))
    for name in ("anim.gif", "photo.webp"):
        (folder / name).write_bytes(b"not read")
    return folder


def test_folder_listing_names_the_files_it_does_not_read(tmp_path):
    folder = _folder(tmp_path)
    paths, unsupported = list_inputs(image_dir=str(folder))
    assert [os.path.basename(p) for p in paths] == ["scan.tiff", "x.jpg", "x.png"]
    assert [os.path.basename(p) for p in unsupported] == ["anim.gif", "photo.webp"]
    # an image given as a file and found in the folder is listed once
    paths, _ = list_inputs(str(folder / "x.png"), str(folder))
    assert sorted(os.path.basename(p) for p in paths) == ["scan.tiff", "x.jpg", "x.png"]


def test_folder_listing_goes_by_the_one_list_of_formats(tmp_path):
    """Every extension of image_headers.FORMAT_EXTENSIONS, in any case, is listed; a file
    named like an image of no accepted format is not."""
    names = [f"a{i}{ext.upper() if i % 2 else ext}" for i, ext in enumerate(IMAGE_EXTENSIONS)]
    assert {".tif", ".tiff", ".jpg", ".png"} <= set(IMAGE_EXTENSIONS)
    for name in [*names, "b.gif", "c.tiff.txt", "d.jp2"]:
        (tmp_path / name).write_bytes(b"x")
    paths, unsupported = list_inputs(image_dir=str(tmp_path))
    assert sorted(os.path.basename(p) for p in paths) == sorted(names)
    assert [os.path.basename(p) for p in unsupported] == ["b.gif", "c.tiff.txt", "d.jp2"]


def test_folder_of_only_unsupported_files_names_them(tmp_path):
    folder = tmp_path / "gifs"
    os.makedirs(folder)
    (folder / "a.gif").write_bytes(b"GIF89a")
    with pytest.raises(
        FileNotFoundError,
        match=r"no \.jpg/\.jpeg/\.png/\.bmp/\.tif/\.tiff images in .*gifs; "
        r"not read \(unsupported format\): a\.gif",
    ):
        list_inputs(image_dir=str(folder))


def test_summary_lists_unsupported_files(tmp_path, capsys):
    folder = _folder(tmp_path)
    paths, unsupported = list_inputs(image_dir=str(folder))
    status = print_run_outcome(2, 2, [], "d.json", str(tmp_path / "out"), unsupported=unsupported)
    assert status == 0
    with open(tmp_path / "out" / "summary.json") as f:
        assert json.load(f)["unsupported"] == unsupported
    printed = capsys.readouterr().out
    assert "2 file(s) not read, unsupported format (only JPEG/PNG/BMP/TIFF files" in printed
    for path in unsupported:
        assert f"  {path}\n" in printed


@pytest.mark.parametrize("where", ["image_dir", "image_file"])
def test_output_folder_holding_the_inputs_is_refused(tmp_path, where):
    folder = _folder(tmp_path)
    before = {p: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    paths = [str(folder / "x.png")]
    image_dir = str(folder) if where == "image_dir" else None
    with pytest.raises(
        ValueError,
        match=rf"--output_dir {folder} holds the input images "
        r"\(x\.png\)",
    ):
        check_output_dir(str(folder), paths, image_dir)
    with pytest.raises(ValueError, match="holds the input images"):
        save_results(paths, [BOX], str(folder) + os.sep, image_dir=image_dir)
    assert {p: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    check_output_dir(str(folder / "sub"), paths, image_dir)  # a subfolder is fine


def test_same_file_name_in_two_folders_is_refused(tmp_path):
    folder = _folder(tmp_path)
    paths = [str(folder / "x.png"), str(folder / "sub" / "x.png")]
    with pytest.raises(ValueError, match="same file name would share one drawing"):
        check_output_dir(str(tmp_path / "out"), paths)


def test_x_jpg_and_x_png_get_drawings_of_their_own(tmp_path):
    folder = _folder(tmp_path)
    paths, _ = list_inputs(image_dir=str(folder))
    out = tmp_path / "out"
    json_path = save_results(paths, [BOX, BOX, BOX], str(out), threshold=0.5)
    names = ("scan.tiff.png", "x.jpg.png", "x.png.png")
    drawn = {name: cv2.imread(str(out / name)) for name in names}
    # each drawing is of its own image: the dark JPEG, the bright PNG, the grey TIFF (lossless)
    assert drawn["x.jpg.png"][35, 55].max() < 60 and drawn["x.png.png"][35, 55].min() > 200
    assert (drawn["scan.tiff.png"][35, 55] == 120).all()
    with open(json_path) as f:
        assert sorted(json.load(f)) == sorted(paths)
    assert sorted(os.listdir(out)) == ["detections.json", *names]
