"""The format and size of an encoded image, read the way ``cv2.imdecode`` will read it.

``cv2.imdecode`` (opencv-python 4.5.5) picks its decoder from the first bytes of the buffer:
it tries its decoders in a fixed order (BMP, Radiance HDR, JPEG, WebP, Sun raster, PxM, PAM,
PFM, TIFF, PNG, JPEG 2000, OpenEXR) and takes the first whose signature matches. The size that
decides how much memory decoding takes is the size in THAT decoder's header, so it is read here
from that header, with parsers of our own:

* JPEG (``FF D8 FF``): the first SOF marker before the first SOS, walking the markers as libjpeg
  does; a second SOF (libjpeg stops with an error) or a marker libjpeg does not know is refused;
* PNG (the 8-byte signature): the IHDR chunk, which must be the first chunk (libpng insists),
  so broken later chunks cannot hide the size;
* BMP (``BM``): the info header's width and |height| (40-byte and larger headers, or the 12-byte
  OS/2 one), as OpenCV's BMP reader;
* TIFF (``II*\0`` little-endian, ``MM\0*`` big-endian): ImageWidth (256) and ImageLength (257) of
  the first image file directory (IFD), each one SHORT or LONG value; see ``_tiff_size`` for
  what else is refused (several pages, BigTIFF, a turning Orientation tag, tiles or strips larger
  than the image).

The other formats OpenCV decodes are refused by name before decoding (``UnsupportedFormatError``)
and bytes of no format OpenCV knows are refused as not an image. No size is ever taken from any
other format's reading of the bytes (a polyglot file can look like several formats at once).

``FORMAT_EXTENSIONS`` is the one list of the accepted formats and their file name extensions:
folder inference lists files by it (``ppdet_dac.deploy.outputs``), and every decode (training,
both inference tools, the service) goes through ``read_header``.
"""

import struct

__all__ = [
    "ACCEPTED_FORMATS",
    "FORMATS_TEXT",
    "FORMAT_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "ImageHeaderError",
    "UnsupportedFormatError",
    "has_image_extension",
    "identify_format",
    "read_header",
]

# The accepted formats and their file name extensions (lower case), in one place.
FORMAT_EXTENSIONS = {
    "JPEG": (".jpg", ".jpeg"),
    "PNG": (".png",),
    "BMP": (".bmp",),
    "TIFF": (".tif", ".tiff"),
}
ACCEPTED_FORMATS = tuple(FORMAT_EXTENSIONS)
FORMATS_TEXT = "/".join(ACCEPTED_FORMATS)  # "JPEG/PNG/BMP/TIFF", for messages
IMAGE_EXTENSIONS = tuple(ext for exts in FORMAT_EXTENSIONS.values() for ext in exts)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"

# (name, test of the first bytes) in cv2.imdecode's order; the first match is the decoder used.
# Formats other than ACCEPTED_FORMATS are matched broadly (a looser test only refuses more).
_SIGNATURES = (
    ("BMP", lambda b: b[:2] == b"BM"),
    ("Radiance HDR", lambda b: b[:2] == b"#?"),
    ("JPEG", lambda b: b[:3] == JPEG_SIGNATURE),
    ("WebP", lambda b: b[:4] == b"RIFF"),
    ("Sun raster", lambda b: b[:4] == b"\x59\xa6\x6a\x95"),
    ("PBM/PGM/PPM/PAM/PFM", lambda b: b[:1] == b"P" and b[1:2] in b"1234567Ff" and len(b) > 1),
    ("TIFF", lambda b: b[:2] in (b"II", b"MM")),
    ("PNG", lambda b: b[:8] == PNG_SIGNATURE),
    (
        "JPEG 2000",
        lambda b: b[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or b[:4] == b"\xff\x4f\xff\x51",
    ),
    ("OpenEXR", lambda b: b[:4] == b"\x76\x2f\x31\x01"),
)

# JPEG markers (the byte after FF): start of frame (size), start of scan, segments to skip
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_SOS, _SOI, _EOI = 0xDA, 0xD8, 0xD9
_NO_LENGTH = set(range(0xD0, 0xD8)) | {0x01}  # RSTn, TEM
_SKIPPED = {0xC4, 0xCC, 0xDB, 0xDC, 0xDD, 0xFE} | set(range(0xE0, 0xF0))  # DHT DAC DQT DNL DRI
# COM APPn


class ImageHeaderError(ValueError):
    """Bytes refused before decoding: not an image, or a header that cannot be read."""


class UnsupportedFormatError(ImageHeaderError):
    """An image format OpenCV would decode but whose size is not checked here: refused."""


def identify_format(data):
    """The name of the format ``cv2.imdecode`` would decode ``data`` (bytes) as, or None when
    no decoder of it accepts the first bytes."""
    head = bytes(data[:16])
    for name, matches in _SIGNATURES:
        if matches(head):
            return name
    return None


def _jpeg_size(data, what):
    """(width, height) from the first SOF before the first SOS, markers walked as libjpeg's
    ``next_marker`` does (bytes other than FF before a marker skipped, FF fill bytes and FF 00
    skipped)."""
    pos, size = 2, None
    while True:
        while pos < len(data) and data[pos] != 0xFF:
            pos += 1
        while pos < len(data) and data[pos] == 0xFF:
            pos += 1
        if pos >= len(data):
            raise ImageHeaderError(f"{what}: JPEG ends before its first scan (no SOS marker)")
        marker = data[pos]
        pos += 1
        if marker == 0x00 or marker in _NO_LENGTH:
            continue
        if marker == _SOS:
            if size is None:
                raise ImageHeaderError(f"{what}: JPEG has no SOF marker before its scan")
            return size
        if marker in (_SOI, _EOI):
            name = "SOI" if marker == _SOI else "EOI"
            raise ImageHeaderError(f"{what}: JPEG has a misplaced {name} marker before its scan")
        if marker not in _SOF and marker not in _SKIPPED:
            raise ImageHeaderError(f"{what}: JPEG has an unknown marker FF{marker:02X}")
        if pos + 2 > len(data):
            raise ImageHeaderError(f"{what}: JPEG is cut inside a marker segment")
        length = struct.unpack_from(">H", data, pos)[0]
        if length < 2:
            raise ImageHeaderError(f"{what}: JPEG marker FF{marker:02X} has length {length}")
        if marker in _SOF:
            if size is not None:
                raise ImageHeaderError(
                    f"{what}: JPEG has several SOF markers (frame headers); "
                    "the decoder refuses such a file"
                )
            if length < 8 or pos + 7 > len(data):
                raise ImageHeaderError(f"{what}: JPEG SOF marker is cut short")
            height, width = struct.unpack_from(">HH", data, pos + 3)
            size = (width, height)
        pos += length


def _png_size(data, what):
    """(width, height) from IHDR, which must be the first chunk (length 13)."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ImageHeaderError(f"{what}: PNG does not start with its IHDR chunk")
    if struct.unpack_from(">I", data, 8)[0] != 13:
        raise ImageHeaderError(f"{what}: PNG IHDR chunk has a wrong length")
    return struct.unpack_from(">II", data, 16)


def _bmp_size(data, what):
    """(width, |height|) from the BMP info header (OpenCV's reading: 40 bytes or more, or the
    12-byte OS/2 header; the height is negative for top-down rows)."""
    if len(data) < 18:
        raise ImageHeaderError(f"{what}: BMP header is cut short")
    info_size = struct.unpack_from("<I", data, 14)[0]
    if info_size >= 36 and len(data) >= 26:
        width, height = struct.unpack_from("<ii", data, 18)
    elif info_size == 12 and len(data) >= 22:
        width, height = struct.unpack_from("<HH", data, 18)
    else:
        raise ImageHeaderError(f"{what}: BMP info header (size {info_size}) is not readable")
    if width < 0:
        raise ImageHeaderError(f"{what}: BMP has a negative width ({width})")
    return width, abs(height)


# TIFF tags read from the first IFD; each must appear at most once, as one SHORT or LONG value
_TIFF_TAGS = {
    256: "ImageWidth",
    257: "ImageLength",
    274: "Orientation",
    278: "RowsPerStrip",
    322: "TileWidth",
    323: "TileLength",
}
_TIFF_VALUE_TYPES = {3: "H", 4: "I"}  # SHORT, LONG
_TIFF_VERSION, _BIGTIFF_VERSION = 42, 43
# a tile or strip buffer of this many pixels is always allowed (4 MB as OpenCV's RGBA buffer)
TIFF_BUFFER_ALLOWANCE = 1 << 20


def _tiff_tags(data, what):
    """({tag: value} of the ``_TIFF_TAGS`` in the first IFD, offset of the next IFD)."""
    order = "<" if data[:2] == b"II" else ">"
    if len(data) < 8:
        raise ImageHeaderError(f"{what}: TIFF header is cut short")
    version, ifd = struct.unpack_from(order + "HI", data, 2)
    if version == _BIGTIFF_VERSION:
        raise ImageHeaderError(f"{what}: TIFF is a BigTIFF (version 43), not accepted")
    if version != _TIFF_VERSION:
        raise ImageHeaderError(f"{what}: TIFF header has version {version}, not 42")
    if ifd < 8 or ifd + 2 > len(data):
        raise ImageHeaderError(f"{what}: TIFF directory offset {ifd} is outside the file")
    count = struct.unpack_from(order + "H", data, ifd)[0]
    end = ifd + 2 + 12 * count
    if count == 0 or end + 4 > len(data):
        raise ImageHeaderError(f"{what}: TIFF directory ({count} entries) is cut short")
    tags = {}
    for entry in range(ifd + 2, end, 12):
        tag, kind, number = struct.unpack_from(order + "HHI", data, entry)
        if tag not in _TIFF_TAGS:
            continue
        name = f"TIFF tag {_TIFF_TAGS[tag]} ({tag})"
        if tag in tags:
            raise ImageHeaderError(f"{what}: {name} appears twice")
        if kind not in _TIFF_VALUE_TYPES or number != 1:
            raise ImageHeaderError(
                f"{what}: {name} has type {kind} and {number} values (one SHORT or LONG is read)"
            )
        tags[tag] = struct.unpack_from(order + _TIFF_VALUE_TYPES[kind], data, entry + 8)[0]
    return tags, struct.unpack_from(order + "I", data, end)[0]


def _tiff_size(data, what):
    """(ImageWidth, ImageLength) of the first IFD. Refused: BigTIFF; a file of several pages
    (``cv2.imdecode`` reads the first page only, the others would be dropped silently); an
    Orientation other than 1 (OpenCV turns TIFF pixels by it even when told to ignore it, so the
    size and pixels would not be the stored ones); tiles or strips of more pixels than the image
    and ``TIFF_BUFFER_ALLOWANCE`` (OpenCV allocates a buffer of one tile or strip whatever the
    image's size)."""
    tags, next_ifd = _tiff_tags(data, what)
    if 256 not in tags or 257 not in tags:
        raise ImageHeaderError(f"{what}: TIFF has no ImageWidth or ImageLength tag")
    width, height = tags[256], tags[257]
    if next_ifd:
        raise ImageHeaderError(
            f"{what}: TIFF has several pages (a second image file directory at offset "
            f"{next_ifd}); only single-page TIFF files are accepted: save the page to use "
            "as a file of its own"
        )
    if tags.get(274, 1) != 1:
        raise ImageHeaderError(
            f"{what}: TIFF Orientation tag is {tags[274]}; only 1 (rows top to bottom, columns "
            "left to right) is accepted: save the image without the tag"
        )
    if 322 in tags or 323 in tags:
        buffer = tags.get(322, 0) * tags.get(323, 0)
    else:
        rows = tags.get(278, 0)
        buffer = width * (height if rows in (0, 0xFFFFFFFF) else rows)
    if buffer > max(width * height, TIFF_BUFFER_ALLOWANCE):
        raise ImageHeaderError(
            f"{what}: TIFF tiles or strips of {buffer} pixels are larger than the image "
            f"({width} x {height})"
        )
    return width, height


_SIZE_READERS = {"JPEG": _jpeg_size, "PNG": _png_size, "BMP": _bmp_size, "TIFF": _tiff_size}


def has_image_extension(path):
    """True when the file name ``path`` ends in an extension of an accepted format
    (``IMAGE_EXTENSIONS``, any case)."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def read_header(data, what="image"):
    """(format name, width, height) of the encoded image ``data`` (bytes), from the header of
    the format ``cv2.imdecode`` will decode it as; nothing is decoded.

    Raises UnsupportedFormatError for a format OpenCV decodes but that is not accepted here
    (anything but ``ACCEPTED_FORMATS``), ImageHeaderError when the bytes are no image format OpenCV
    knows or the header cannot be read; each message names ``what``.
    """
    fmt = identify_format(data)
    if fmt is None:
        raise ImageHeaderError(
            f"cannot decode {what} ({len(data)} bytes): not a readable {FORMATS_TEXT} image"
        )
    if fmt not in _SIZE_READERS:
        raise UnsupportedFormatError(
            f"{what} is a {fmt} file: format {fmt} is not accepted "
            f"(only {', '.join(ACCEPTED_FORMATS)})"
        )
    width, height = _SIZE_READERS[fmt](data, f"cannot decode {what} ({len(data)} bytes)")
    return fmt, int(width), int(height)
