"""Which face in view may open the door: the closest one in the door zone, never one behind it.

A camera at a door sees more than the person at the door: someone crossing the hall, a queue, a poster or a
phone screen across the room. Any of them matching an enrolled person must not open the door for whoever is
standing at it. So, before the decision engine sees a frame, this module keeps at most ONE face:

* the frame is cropped to the door zone (``camera.roi``, fractions of the frame) before detection: faces
  outside it are never seen, and the detector, which scales its input to a fixed size, gets more pixels per
  face from a smaller zone (what a 1080p camera needs to see a face at the door at the detector's input size);
  boxes and landmarks are mapped back to full-frame pixels, so events, the console and liveness see the frame;
* faces smaller than ``recognition.min_face_px`` (longer side of the box, full-frame pixels; default 15 % of
  the frame's shorter side) are further away than someone at the door;
* of the faces left, the largest (the closest) decides. The others are counted as ignored, by reason, and
  never reach the engine: with a stranger at the door, an enrolled face behind them cannot be granted.

Nothing here decides a grant: it only chooses whose frames the engine (recognition/decision.py) sees.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from facegate.vision.pipeline import FaceResult

DEFAULT_MIN_FACE_FRACTION = 0.15  # of the frame's shorter side: 72 px at 640x480, about 1.2 m from a Pi camera

Box = tuple[float, float, float, float]  # x, y, w, h in pixels
IgnoredReason = Literal["outside_zone", "too_small", "not_closest"]
IGNORED_REASONS: tuple[IgnoredReason, ...] = ("outside_zone", "too_small", "not_closest")


@dataclass(frozen=True)
class Selection:
    """The deciding face's index (None: no face may decide) and why each other face was ignored."""

    deciding: int | None
    ignored: tuple[tuple[int, IgnoredReason], ...]


def default_min_face_px(width: int, height: int) -> float:
    return DEFAULT_MIN_FACE_FRACTION * min(width, height)


class DoorZone:
    """``roi``: [x, y, width, height] as fractions of the frame; ``min_face_px``: None = the default above."""

    def __init__(self, roi: Sequence[float] = (0.0, 0.0, 1.0, 1.0), min_face_px: float | None = None) -> None:
        x, y, w, h = (float(v) for v in roi)
        self.roi = (x, y, w, h)
        self.min_face_px = min_face_px
        self._lock = threading.Lock()
        self._ignored: Counter[str] = Counter()

    @property
    def whole_frame(self) -> bool:
        return self.roi == (0.0, 0.0, 1.0, 1.0)

    def pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The zone in pixels of a ``width`` x ``height`` frame: x0, y0, x1, y1 (at least one pixel each way)."""
        x, y, w, h = self.roi
        x0, y0 = min(round(x * width), width - 1), min(round(y * height), height - 1)
        x1, y1 = max(round((x + w) * width), x0 + 1), max(round((y + h) * height), y0 + 1)
        return x0, y0, min(x1, width), min(y1, height)

    def view(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """The part of ``image`` the detector sees, and its offset (x, y) in the frame."""
        if self.whole_frame:
            return image, (0, 0)
        x0, y0, x1, y1 = self.pixels(image.shape[1], image.shape[0])
        return np.ascontiguousarray(image[y0:y1, x0:x1]), (x0, y0)

    def select(self, boxes: Sequence[Box], width: int, height: int) -> Selection:
        """Choose the deciding face among full-frame ``boxes`` and count the rest as ignored."""
        x0, y0, x1, y1 = self.pixels(width, height)
        smallest = default_min_face_px(width, height) if self.min_face_px is None else self.min_face_px
        candidates: list[tuple[float, int]] = []
        ignored: list[tuple[int, IgnoredReason]] = []
        for i, (bx, by, bw, bh) in enumerate(boxes):
            cx, cy = bx + bw / 2, by + bh / 2
            if not (x0 <= cx < x1 and y0 <= cy < y1):  # a face cut by the zone's edge, centred outside it
                ignored.append((i, "outside_zone"))
            elif not max(bw, bh) >= smallest:  # stated so that a NaN size is too small
                ignored.append((i, "too_small"))
            else:
                candidates.append((bw * bh, i))
        deciding = None
        if candidates:
            deciding = max(candidates, key=lambda c: (c[0], -c[1]))[1]  # the largest; on a tie the first
            ignored += [(i, "not_closest") for _, i in candidates if i != deciding]
        with self._lock:
            self._ignored.update(reason for _, reason in ignored)
        return Selection(deciding, tuple(sorted(ignored)))

    def ignored_counts(self) -> dict[str, int]:
        """Faces ignored so far, by reason (every reason present, zeros included)."""
        with self._lock:
            return {reason: self._ignored[reason] for reason in IGNORED_REASONS}


def to_frame(result: FaceResult, offset: tuple[int, int]) -> None:
    """Move a result found in the zone's crop to full-frame pixels (box, keypoints, landmarks, mesh)."""
    dx, dy = offset
    if dx == 0 and dy == 0:
        return
    shift = np.array([dx, dy], dtype=np.float32)
    det = result.detection
    x, y, w, h = det.box
    result.detection = replace(
        det, box=(x + dx, y + dy, w, h), keypoints=det.keypoints + shift,
        landmarks5=None if det.landmarks5 is None else det.landmarks5 + shift,
    )
    if result.mesh is not None:
        mesh = np.array(result.mesh, copy=True)
        mesh[:, :2] += (dx, dy)
        result.mesh = mesh
