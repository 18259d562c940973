"""Reading images from disk or bytes with errors that name the file and say what is wrong with it.

Every image the door decodes (CLI enrolment and identification, replay frames, and any upload a web page or
API accepts) goes through :func:`decode_image`, which first reads the picture's dimensions from its header
(:func:`image_dimensions`) and refuses anything larger than ``max_pixels`` *before* OpenCV allocates a pixel:
a 200-byte PNG can declare 30000 x 30000 pixels (2.7 GB decoded), which would take a Raspberry Pi down. Only
formats whose header this module can read are decoded (JPEG, PNG, BMP, WebP, PGM/PPM/PBM); anything else is
refused rather than handed to a decoder whose memory use nobody checked.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import cv2
import numpy as np

from facegate.errors import ImageError

__all__ = ["DEFAULT_MAX_PIXELS", "decode_image", "image_dimensions", "read_image"]

#: Files larger than this are not even read into memory (no image the door needs comes near it).
MAX_FILE_BYTES = 128 * 1024 * 1024
#: 50 megapixels (a 48 MP phone photo fits; 150 MB once decoded as RGB). Door frames are ~0.3 MP.
DEFAULT_MAX_PIXELS = 50_000_000

# JPEG start-of-frame markers (SOF0-SOF15 except DHT C4, JPG C8 and DAC CC) carry the frame's dimensions.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_NO_LENGTH = frozenset(range(0xD0, 0xD8)) | {0x01, 0xD8}  # RSTn, TEM, SOI: markers without a segment
_PNM_HEADER = re.compile(rb"\AP[1-6](?:\s+|#[^\n]*\n)*?(\d+)(?:\s+|#[^\n]*\n)+?(\d+)")


def _jpeg_dimensions(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None  # not at a marker: a corrupt header
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_NO_LENGTH:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker in _JPEG_SOF:
            if pos + 9 > len(data) or length < 7:
                return None
            height, width = struct.unpack_from(">HH", data, pos + 5)
            return width, height
        if length < 2:
            return None
        pos += 2 + length
    return None


def _webp_dimensions(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return width, height
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    return None


def image_dimensions(data: bytes) -> tuple[str, int, int] | None:
    """``(format, width, height)`` read from the header of encoded image bytes, without decoding any pixel.

    None when the bytes are not a JPEG, PNG, BMP, WebP or PGM/PPM/PBM whose header can be read (unknown
    format, or a header cut short). Cheap: looks at the first bytes only (JPEG: walks the marker segments up
    to the frame header).
    """
    if data[:3] == b"\xff\xd8\xff":
        dims = _jpeg_dimensions(data)
        return ("JPEG", *dims) if dims else None
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if len(data) < 24 or data[12:16] != b"IHDR":
            return None
        width, height = struct.unpack_from(">II", data, 16)
        return "PNG", width, height
    if data[:2] == b"BM" and len(data) >= 26:
        (dib,) = struct.unpack_from("<I", data, 14)
        if dib == 12:
            width, height = struct.unpack_from("<HH", data, 18)
        else:
            width, height = struct.unpack_from("<ii", data, 18)
        return "BMP", abs(width), abs(height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        dims = _webp_dimensions(data)
        return ("WebP", *dims) if dims else None
    if (found := _PNM_HEADER.match(data[:1024])) is not None:
        return "PNM", int(found.group(1)), int(found.group(2))
    return None


def decode_image(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Encoded bytes → RGB uint8 (H, W, 3), or :class:`ImageError` naming ``name`` and what is wrong.

    The one function for every untrusted image (files, replay frames, uploads). Refused before decoding:
    empty data, formats whose header cannot be read, a width or height of 0, more than ``max_pixels``
    pixels (decompression bombs), a JPEG without its end-of-image marker (OpenCV would hand back a half-grey
    picture). Refused after: anything OpenCV cannot decode.
    """
    if not data:
        raise ImageError(f"{name}: empty file")
    header = image_dimensions(data)
    if header is None:
        raise ImageError(f"{name}: not a decodable image (no JPEG, PNG, BMP, WebP or PNM header that can be read: "
                         "another format, or a header cut short)")
    kind, width, height = header
    if width <= 0 or height <= 0:
        raise ImageError(f"{name}: {kind} header declares an empty image ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(f"{name}: {kind} of {width}x{height} pixels is larger than the {max_pixels:,}-pixel "
                         "limit; refused before decoding")
    if kind == "JPEG" and b"\xff\xd9" not in data[-64:]:
        raise ImageError(f"{name}: corrupt or truncated JPEG (no end-of-image marker)")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageError(f"{name}: not a decodable image")
    if image.shape[0] * image.shape[1] > max_pixels:  # a header that lied (e.g. a second, larger frame)
        raise ImageError(f"{name}: decoded to {image.shape[1]}x{image.shape[0]} pixels, over the limit")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read and :func:`decode_image` one file (errors name the path)."""
    try:
        size = Path(path).stat().st_size
        if size > MAX_FILE_BYTES:
            raise ImageError(f"{path}: {size:,} bytes is larger than any image the door reads ({MAX_FILE_BYTES:,})")
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read: {exc.strerror}") from None
    return decode_image(data, str(path), max_pixels)
