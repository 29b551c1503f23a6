"""Crafted image files that try to get past the pixel limit, built in memory (no fixtures on disk).

* ``polyglot_png``: a real 1-bit PNG whose IHDR declares width x height (30000 x 30000 decodes to
  2.7 GB, the file is about 110 KB), with a zTXt chunk of compression method 7 before IDAT
  (Pillow's PNG plugin raises on it, libpng only warns) and ``PCD_`` at offset 2048, where
  Pillow's PhotoCD plugin, which has no ``accept`` check, finds a 768 x 512 image.
* ``polyglot_hdr``: a Radiance HDR header of width x height with ``PCD_`` at offset 2048.
* ``lying_jpeg`` / ``lying_png``: small real images whose SOF / IHDR declares another size.
* ``several_sof_jpeg``: a small JPEG with a second frame header (SOF) claiming 30000 x 30000 in
  front of its own; Pillow keeps the last SOF, libjpeg refuses the file.
"""

import struct
import zlib

import cv2
import numpy as np

PCD_OFFSET = 2048


def png_chunk(kind, data):
    """One PNG chunk: length, type, data, CRC."""
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def polyglot_png(width=30000, height=30000):
    """bytes of the zTXt/PCD polyglot PNG; its IDAT is written row by row with a streaming
    compressor, so building it takes little memory."""
    head = b"\x89PNG\r\n\x1a\n" + png_chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    )
    data_start = len(head) + 8  # after the zTXt length and type
    ztxt = bytearray(b"Comment\x00\x07")  # keyword, compression method 7
    ztxt += bytes(PCD_OFFSET - data_start - len(ztxt)) + b"PCD_"
    ztxt += bytes(2 * PCD_OFFSET - data_start - len(ztxt))  # PhotoCD reads 2048 bytes there
    comp = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits, all black
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    data = (
        head + png_chunk(b"zTXt", bytes(ztxt)) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )
    assert data[PCD_OFFSET : PCD_OFFSET + 4] == b"PCD_"
    return data


def polyglot_hdr(width, height):
    """A Radiance HDR header declaring width x height, ``PCD_`` at offset 2048, a little RLE
    pixel data after it."""
    header = f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y {height} +X {width}\n".encode()
    data = bytearray(header + bytes(PCD_OFFSET - len(header)) + b"PCD_")
    data += bytes(2 * PCD_OFFSET - len(data))
    return bytes(data + bytes([2, 2, width >> 8 & 0xFF, width & 0xFF]) + bytes(64))


def small_image(ext, height=16, width=24):
    """bytes of a small image file encoded by OpenCV (a gradient, so not all one colour)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :, 1] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


def _sof_offset(jpeg):
    """Offset of the FF C0 marker of an OpenCV-encoded (baseline) JPEG."""
    offset = jpeg.find(b"\xff\xc0")
    assert offset > 0
    return offset


def lying_jpeg(width, height):
    """A 16 x 24 JPEG whose SOF declares width x height."""
    data = bytearray(small_image(".jpg"))
    struct.pack_into(">HH", data, _sof_offset(data) + 5, height, width)
    return bytes(data)


def several_sof_jpeg(width=30000, height=30000):
    """A 16 x 24 JPEG with another SOF0 (width x height) in front of its own."""
    data = small_image(".jpg")
    offset = _sof_offset(data)
    length = struct.unpack_from(">H", data, offset + 2)[0]
    extra = bytearray(data[offset : offset + 2 + length])
    struct.pack_into(">HH", extra, 5, height, width)
    return data[:offset] + bytes(extra) + data[offset:]


def lying_png(width, height):
    """A 16 x 24 PNG whose IHDR (CRC fixed) declares width x height."""
    data = small_image(".png")
    ihdr = bytearray(data[16:29])
    struct.pack_into(">II", ihdr, 0, width, height)
    return data[:8] + png_chunk(b"IHDR", bytes(ihdr)) + data[33:]


TIFF_SHORT, TIFF_LONG = 3, 4


def tiff_file(width, height, order="<", size_type=TIFF_SHORT, pixels=None, tags=(), **header):
    """bytes of an uncompressed 8-bit RGB TIFF in one strip, written here field by field: the
    8-byte header (``version`` 42 unless given), the first IFD at offset 8 with ImageWidth and
    ImageLength as ``size_type`` (SHORT or LONG) values, then the pixels (``pixels``: bytes,
    default a gradient of width x height RGB). ``tags``: (tag, type, value) entries of one value
    each, replacing the entry of the same tag; ``duplicates``: entries added without replacing
    any; ``next_ifd``: the offset of a second IFD (0: none)."""
    if pixels is None:
        pixels = bytes(i % 251 for i in range(width * height * 3))
    entries = [
        (256, size_type, width),
        (257, size_type, height),
        (258, TIFF_SHORT, 8),  # BitsPerSample
        (259, TIFF_SHORT, 1),  # Compression: none
        (262, TIFF_SHORT, 2),  # PhotometricInterpretation: RGB
        (273, TIFF_LONG, None),  # StripOffsets: filled in below
        (277, TIFF_SHORT, 3),  # SamplesPerPixel
        (278, TIFF_LONG, height),  # RowsPerStrip
        (279, TIFF_LONG, len(pixels)),  # StripByteCounts
    ]
    replaced = {entry[0] for entry in tags}
    entries = [e for e in entries if e[0] not in replaced] + [*tags, *header.get("duplicates", ())]
    entries.sort(key=lambda entry: entry[0])
    pixel_offset = 8 + 2 + 12 * len(entries) + 4
    out = bytearray(b"II" if order == "<" else b"MM")
    out += struct.pack(order + "HI", header.get("version", 42), 8)
    out += struct.pack(order + "H", len(entries))
    for tag, kind, value in entries:
        value = pixel_offset if value is None else value
        # a SHORT sits in the first two bytes of the 4-byte value field
        field = struct.pack(order + "HH", value, 0) if kind == TIFF_SHORT else b""
        field = field or struct.pack(order + "I", value)
        out += struct.pack(order + "HHI", tag, kind, 1) + field
    out += struct.pack(order + "I", header.get("next_ifd", 0))
    return bytes(out + pixels)
