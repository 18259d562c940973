"""Reading images from disk with errors that name the file and say what is wrong with it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facegate.errors import ImageError


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Encoded bytes → RGB uint8. A truncated JPEG is refused: OpenCV would hand back a half-grey picture."""
    if not data:
        raise ImageError(f"{name}: empty file")
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-64:]:
        raise ImageError(f"{name}: corrupt or truncated JPEG (no end-of-image marker)")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageError(f"{name}: not a decodable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image(path: Path) -> np.ndarray:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read: {exc.strerror}") from None
    return decode_image(data, str(path))
