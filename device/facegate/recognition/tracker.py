"""Greedy IoU tracking: the same person standing at the door keeps one track across frames.

A door sees one to three faces at a time, so greedy matching by best IoU is enough and costs nothing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import numpy as np


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    track_id: int
    box: tuple[float, float, float, float]
    first_ts: float
    last_ts: float
    frames: int = 0
    decided: bool = False  # a grant, denial or unknown_face was already reported for this track
    decided_person: str | None = None  # whom that decision was about (None: unknown_face)
    good_frames: int = 0  # frames that passed the quality gates
    window: deque[tuple[str | None, Any]] = field(default_factory=deque)  # (vote, observation), newest last
    liveness: Any = None  # the track's liveness accumulator, when a liveness gate is configured


class IouTracker:
    def __init__(self, min_iou: float, timeout_seconds: float) -> None:
        self.min_iou = min_iou
        self.timeout = timeout_seconds
        self.tracks: dict[int, Track] = {}
        self._ids = count(1)

    def update(self, ts: float, boxes: list[tuple[float, float, float, float]]) -> list[Track]:
        """The track of each box (same order); tracks unseen for ``timeout_seconds`` are dropped."""
        self.tracks = {k: t for k, t in self.tracks.items() if ts - t.last_ts <= self.timeout}
        live = list(self.tracks.values())
        assigned: list[Track | None] = [None] * len(boxes)
        if live and boxes:
            ious = np.array([[box_iou(b, t.box) for t in live] for b in boxes])
            while True:
                i, j = np.unravel_index(int(np.argmax(ious)), ious.shape)
                if ious[i, j] < self.min_iou:
                    break
                assigned[i] = live[j]
                ious[i, :] = -1
                ious[:, j] = -1
        result = []
        for box, track in zip(boxes, assigned, strict=True):
            if track is None:
                track = Track(next(self._ids), box, ts, ts)
                self.tracks[track.track_id] = track
            track.box, track.last_ts = box, ts
            track.frames += 1
            result.append(track)
        return result

    def renew(self, track: Track) -> None:
        """Give ``track`` a new id, as for a new arrival: another person took the place of the one it followed."""
        del self.tracks[track.track_id]
        track.track_id = next(self._ids)
        track.first_ts = track.last_ts
        track.frames = len(track.window)
        self.tracks[track.track_id] = track
