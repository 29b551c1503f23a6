"""The pixel limit read from image headers (ppdet_dac.data.image_io.check_image_size) and its use
by DACDecode: decompression bombs are refused before decoding, in training as a logged skip."""

import os
import struct
import zlib

import cv2
import numpy as np
import pytest
from ppdet.data.reader import Compose

from _data_helpers import write_coco
from ppdet_dac.data.dataset import DACCOCODataSet
from ppdet_dac.data.image_io import (
    DEFAULT_MAX_PIXELS,
    MAX_PIXELS_CEILING,
    ImageSizeError,
    check_image_size,
    check_max_pixels,
    decode_checked,
)
from ppdet_dac.data.transforms import DACDecode, ImageDecodeError


def png_bomb(width, height):
    """A valid 1-bit grayscale PNG: a few KB that decode to width x height x 3 bytes."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    comp = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp"])
def test_header_size_equals_decoded_size(ext):
    for h, w in ((37, 61), (61, 37), (1, 300)):
        data = cv2.imencode(ext, np.full((h, w, 3), 90, np.uint8))[1].tobytes()
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert check_image_size(data) == decoded.shape[:2] == (h, w)


def test_bomb_is_refused_from_its_header():
    bomb = png_bomb(10000, 8000)  # 80 Mpx: 240 MB once decoded, 10 KB on disk
    assert len(bomb) < 100_000
    assert cv2.imdecode(np.frombuffer(png_bomb(50, 40), np.uint8), 1).shape == (40, 50, 3)
    with pytest.raises(
        ImageSizeError,
        match="upload.png is 10000 x 8000 = 80000000 pixels, over the limit of 40000000 pixels",
    ):
        decode_checked(bomb, DEFAULT_MAX_PIXELS, "upload.png")
    # past Pillow's own bomb ceiling (179 Mpx) and OpenCV's (2^30 px): the same message
    for w, h in ((30000, 30000), (40000, 30000)):
        with pytest.raises(
            ImageSizeError,
            match=f"big.png is {w} x {h} = {w * h} pixels, over the limit of 40000000 pixels",
        ):
            check_image_size(png_bomb(w, h), DEFAULT_MAX_PIXELS, "big.png")


def test_limit_is_configurable_and_checked():
    image = png_bomb(7000, 5000)  # 35 Mpx: under the default
    assert check_image_size(image) == (5000, 7000)
    with pytest.raises(ImageSizeError, match="over the limit of 30000000"):
        check_image_size(image, 30_000_000)
    assert check_max_pixels(30_000_000.0) == 30_000_000
    for bad in (0, -5, 2.5, "many", True, MAX_PIXELS_CEILING + 1):
        with pytest.raises(
            ValueError,
            match=r"DACDecode.max_pixels must be an integer number of "
            r"pixels in \[1, ",
        ):
            check_max_pixels(bad, "DACDecode.max_pixels")


def test_not_an_image_names_it():
    with pytest.raises(ValueError, match=r"cannot decode x.bin \(9 bytes\): not a readable"):
        check_image_size(b"GIF89a...", what="x.bin")


def test_dac_decode_refuses_over_max_pixels(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bomb(9000, 5000))
    with pytest.raises(
        ImageDecodeError,
        match=r"image file .*bomb\.png is 9000 x 5000 = "
        r"45000000 pixels, over the limit of 40000000",
    ):
        DACDecode()({"im_file": str(path)})
    sample = DACDecode(max_pixels=50_000_000)({"im_file": str(path)})
    assert sample["image"].shape == (5000, 9000, 3)
    with pytest.raises(ValueError, match="DACDecode.max_pixels must be"):
        DACDecode(max_pixels=0)


def test_training_skips_an_oversized_image_naming_it(tmp_path, dataset_log):
    cats = [(3, "square"), (7, "circle")]
    write_coco(
        str(tmp_path),
        [{"id": i, "width": 43, "height": 30} for i in (1, 2, 3)],
        [{"image_id": i, "category_id": 7, "bbox": [2, 2, 10, 10]} for i in (1, 2, 3)],
        cats,
    )
    with open(tmp_path / "images" / "0002.png", "wb") as f:
        f.write(png_bomb(20000, 20000))  # 400 Mpx, 1.2 GB decoded
    ds = DACCOCODataSet(
        dataset_dir=str(tmp_path),
        image_dir="images",
        anno_path="annotations/instances.json",
        data_fields=["image", "gt_bbox", "gt_class", "is_crowd"],
    )
    ds.check_or_download_dataset()
    ds.parse_dataset()
    ds.set_kwargs()
    ds.set_transform(Compose([{"DACDecode": {}}]))
    sample = ds[1]  # index 1 is the bomb: replaced by image 3
    assert int(sample["im_id"][0]) == 3 and sample["image"].shape == (30, 43, 3)
    skips = [
        r.getMessage()
        for r in dataset_log.records
        if r.name == "ppdet_dac.data.decode_errors" and "0002.png" in r.getMessage()
    ]
    assert len(skips) == 1 and "20000 x 20000 = 400000000 pixels" in skips[0], skips
    assert os.path.basename(skips[0].split("image file ")[1].split(" ")[0]) == "0002.png"
