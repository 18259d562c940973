"""Plain data passed between vision stages."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Detection:
    """One face in image pixels.

    ``keypoints`` are BlazeFace's six points in image pixels, in this order: the subject's right eye (left in an
    unmirrored image), left eye, nose tip, mouth centre, right ear tragion, left ear tragion.
    """

    box: tuple[float, float, float, float]  # x, y, w, h
    score: float
    keypoints: np.ndarray  # (6, 2)
    landmarks5: np.ndarray | None = field(default=None)  # eyes, nose, mouth corners, when refined

    @property
    def area(self) -> float:
        return self.box[2] * self.box[3]

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.keypoints[1] - self.keypoints[0]))

    def box_int(self) -> list[int]:
        return [round(v) for v in self.box]
