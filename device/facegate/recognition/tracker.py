"""Greedy IoU tracking: the same person standing at the door keeps one track across frames.

A door sees one to three faces at a time, so greedy matching by best IoU is enough and costs nothing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import count
from typing import Any

import numpy as np

FRAME_INTERVALS = 9  # recent frame intervals whose median sets the low-frame-rate timeout
TIMEOUT_FRAMES = 1.5  # at a low frame rate a track survives this many frame intervals without its face


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
    segment: Any = None  # the evidence of the face it shows now (facegate.recognition.segment.Segment)
    segments: int = 0  # how many segments (faces) the track went through
    unique_frames: int = 0  # frames that added evidence (duplicates of a frame already seen do not)
    best_similarity: float = -1.0  # best candidate similarity over its good frames
    last_observation: Any = None


class IouTracker:
    def __init__(self, min_iou: float, timeout_seconds: float) -> None:
        self.min_iou = min_iou
        self.timeout = timeout_seconds  # the configured floor
        self.tracks: dict[int, Track] = {}
        self.expired: list[Track] = []  # tracks dropped by the last update
        self._ids = count(1)
        self._last_ts: float | None = None
        self._intervals: deque[float] = deque(maxlen=FRAME_INTERVALS)

    @property
    def effective_timeout(self) -> float:
        """``timeout_seconds``, or ``TIMEOUT_FRAMES`` frame intervals when frames come further apart than that.

        At a low frame rate (a loaded Pi, a slow USB camera: frames 1.5 s apart) a fixed 1 s timeout drops every
        track between two frames, so nobody is ever decided. The interval is the median of the last
        ``FRAME_INTERVALS`` (one stalled frame does not stretch it), measured on the frames' own times.
        """
        if not self._intervals:
            return self.timeout
        return max(self.timeout, TIMEOUT_FRAMES * float(np.median(self._intervals)))

    def update(self, ts: float, boxes: list[tuple[float, float, float, float]]) -> list[Track]:
        """The track of each box (same order); tracks unseen for the effective timeout are dropped (``expired``).

        Called for every frame, faces or not: the frame interval is measured here.
        """
        if self._last_ts is not None and ts > self._last_ts:
            self._intervals.append(ts - self._last_ts)
        self._last_ts = ts if self._last_ts is None else max(self._last_ts, ts)
        timeout = self.effective_timeout
        self.expired = [t for t in self.tracks.values() if ts - t.last_ts > timeout]
        self.tracks = {k: t for k, t in self.tracks.items() if ts - t.last_ts <= timeout}
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
        self.tracks[track.track_id] = track
