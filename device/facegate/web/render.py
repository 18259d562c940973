"""Turns a live frame into a JPEG: strangers pixelated (privacy by design), boxes and names drawn.

Runs on a console thread only. Pixelation to ~8 blocks across the face and then a blur leaves no usable face
(neither a person nor a face recogniser can identify it) while the box still shows that someone is there.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from facegate.web.live import LiveFrame

MAX_WIDTH = 640
JPEG_QUALITY = 75
GREEN, AMBER, GREY = (40, 180, 60), (230, 160, 20), (150, 150, 150)


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode()[:40]


def _pixelate(image: np.ndarray, x: int, y: int, w: int, h: int) -> None:
    # Grow the box so hair and face edges are covered too.
    gx, gy = int(w * 0.25), int(h * 0.3)
    x0, y0 = max(0, x - gx), max(0, y - gy)
    x1, y1 = min(image.shape[1], x + w + gx), min(image.shape[0], y + h + gy)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    region = image[y0:y1, x0:x1]
    small = cv2.resize(region, (8, max(1, round(8 * (y1 - y0) / (x1 - x0)))), interpolation=cv2.INTER_AREA)
    coarse = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
    image[y0:y1, x0:x1] = cv2.GaussianBlur(coarse, (0, 0), max(2.0, (x1 - x0) / 24))


def render_jpeg(frame: LiveFrame, name_of: Callable[[str], str | None], blur_strangers: bool,
                labels: bool = True) -> bytes:
    image = frame.image.copy()
    scale = 1.0
    if image.shape[1] > MAX_WIDTH:
        scale = MAX_WIDTH / image.shape[1]
        image = cv2.resize(image, (MAX_WIDTH, round(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    for face in frame.faces:
        x, y, w, h = (round(v * scale) for v in face.box)
        known = face.person_id is not None
        if blur_strangers and not known:
            _pixelate(image, x, y, w, h)
        colour = GREEN if known else (AMBER if not face.failures else GREY)
        cv2.rectangle(image, (x, y), (x + w, y + h), colour, 2)
        if labels:
            label = (name_of(face.person_id) or face.person_id) if face.person_id else "unknown"
            cv2.putText(image, _ascii(label), (x, max(14, y - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.55, colour, 2,
                        cv2.LINE_AA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()
