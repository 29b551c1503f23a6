"""Every decode path ignores the EXIF orientation tag, as the official PIL reading does.

The test image is a JPEG stored 48 x 80 (H x W) with EXIF Orientation 6 ("rotate 90 CW to
display"); plain ``cv2.IMREAD_COLOR`` would return it rotated to 80 x 48."""

import logging

import cv2
import numpy as np
import pytest
from PIL import Image

from ppdet_dac.data.image_io import decode_bgr, read_bgr

H, W = 48, 80
ORIENTATION = 0x0112
JPEG_TOLERANCE = 3  # two libjpeg builds may round the inverse DCT differently


def _asymmetric_pattern():
    """RGB uint8 [H, W, 3]: four flat quadrants of different colours plus a bar in one corner,
    so no rotation or flip maps it onto itself (flat areas keep JPEG error small)."""
    image = np.zeros((H, W, 3), np.uint8)
    image[: H // 2, : W // 2] = (200, 40, 40)
    image[: H // 2, W // 2 :] = (40, 200, 40)
    image[H // 2 :, : W // 2] = (40, 40, 200)
    image[H // 2 :, W // 2 :] = (220, 220, 60)
    image[:8, :24] = (255, 255, 255)
    return image


@pytest.fixture(scope="module")
def rotated_jpeg(tmp_path_factory):
    path = tmp_path_factory.mktemp("exif") / "orientation6.jpg"
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    Image.fromarray(_asymmetric_pattern()).save(path, quality=95, exif=exif.tobytes())
    with Image.open(path) as im:
        assert im.getexif()[ORIENTATION] == 6
        official = np.asarray(im.convert("RGB"))  # the official code's reading: no transpose
    assert official.shape == (H, W, 3)
    return str(path), official


def _close(actual, expected):
    assert actual.shape == expected.shape
    diff = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= JPEG_TOLERANCE, diff.max()


def test_the_tag_rotates_under_plain_imread_color(rotated_jpeg):
    """The control: this OpenCV build honours the tag, so the tests below can fail."""
    path, _ = rotated_jpeg
    assert cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR).shape == (W, H, 3)


def test_shared_decode_keeps_the_stored_orientation(rotated_jpeg):
    path, official = rotated_jpeg
    data = open(path, "rb").read()
    for bgr in (decode_bgr(data), decode_bgr(np.frombuffer(data, np.uint8)), read_bgr(path)):
        _close(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), official)
    assert read_bgr(path + ".missing") is None and decode_bgr(b"") is None


def test_dac_decode_matches_pil_and_the_annotated_size(rotated_jpeg, dataset_log):
    from ppdet.data.transform import DACDecode

    path, official = rotated_jpeg
    sample = DACDecode()({"im_file": path, "h": float(H), "w": float(W)})
    _close(sample["image"], official)
    assert (sample["h"], sample["w"]) == (H, W)
    np.testing.assert_array_equal(sample["im_shape"], [H, W])
    # the annotation's size (the stored one, as COCO's) agrees: no size warning
    assert not [r for r in dataset_log.records if r.levelno >= logging.WARNING]


def test_inference_decode_matches_training_decode(rotated_jpeg):
    from ppdet.data.transform import DACDecode
    from ppdet_dac.deploy.preprocess import decode_image

    path, official = rotated_jpeg
    training = DACDecode()({"im_file": path})["image"]
    for source in (path, open(path, "rb").read()):  # tools / deploy infer, serving (bytes)
        inferred = decode_image(source)
        np.testing.assert_array_equal(inferred, training)
        _close(inferred, official)


def test_drawn_detections_use_the_stored_orientation(rotated_jpeg, tmp_path):
    from ppdet_dac.deploy.folder_run import save_results
    from ppdet_dac.deploy.visualize import save_detections

    path, _ = rotated_jpeg
    box = np.array([[0, 0.9, 4, 4, 60, 20]], np.float32)  # only fits the stored 48 x 80 image
    out = tmp_path / "drawn.png"
    assert save_detections(path, box, str(out), threshold=0.5) == 1
    assert cv2.imread(str(out)).shape == (H, W, 3)
    save_results([path], [box], str(tmp_path / "results"), threshold=0.5)
    assert cv2.imread(str(tmp_path / "results" / "orientation6.jpg.png")).shape == (H, W, 3)
