"""The one hand-over point between the frame loop and the console: an overwrite-only slot.

The frame loop calls :meth:`LiveSlot.put` once per frame with what it already computed (boxes, best match,
quality failures, embedding); that is a few attribute reads and one reference swap under a lock held for
microseconds. Nothing is queued, so a console that stops reading costs the loop nothing: the next frame simply
replaces the last. JPEG encoding, blurring and streaming all happen on console threads (facegate.web.stream).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LiveFace:
    box: tuple[float, float, float, float]  # x, y, w, h in frame pixels
    person_id: str | None  # the match, when its similarity reaches the door's threshold; else None
    candidate: str | None  # the best candidate whatever its similarity
    similarity: float
    failures: tuple[str, ...]  # quality gates failed (empty = good enough to decide on / enrol)
    quality: dict[str, float] = field(default_factory=dict)
    embedding: np.ndarray | None = None
    liveness: float | None = None  # this frame's texture log-odds, when the liveness gate runs


@dataclass(frozen=True)
class LiveFrame:
    seq: int
    ts: float  # capture time, unix seconds
    image: np.ndarray  # RGB; the frame loop never writes to a frame after handing it on
    faces: tuple[LiveFace, ...]


class LiveSlot:
    """Latest frame and faces; readers wait for a newer one with :meth:`wait_newer`."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._latest: LiveFrame | None = None
        self._seq = 0

    def put(self, image: np.ndarray, ts: float, results: Sequence[Any], observations: Sequence[Any],
            threshold: float) -> None:
        """From the frame loop: ``results`` are FaceResults, ``observations`` their matched Observations."""
        faces = []
        for r, o in zip(results, observations, strict=False):
            evidence = o.extra.get("liveness") if o.extra else None
            score = getattr(evidence, "score", None)
            faces.append(LiveFace(
                box=tuple(float(v) for v in r.detection.box),  # type: ignore[arg-type]
                person_id=o.person_id if o.person_id is not None and o.similarity >= threshold else None,
                candidate=o.person_id, similarity=float(o.similarity), failures=tuple(r.failures),
                quality=r.quality.as_dict(), embedding=r.embedding,
                liveness=None if score is None else float(score),
            ))
        with self._cond:
            self._seq += 1
            self._latest = LiveFrame(self._seq, ts, image, tuple(faces))
            self._cond.notify_all()

    def latest(self) -> LiveFrame | None:
        with self._cond:
            return self._latest

    def wait_newer(self, seq: int, timeout: float) -> LiveFrame | None:
        """The latest frame if newer than ``seq``, waiting up to ``timeout`` s for one; else None."""
        with self._cond:
            self._cond.wait_for(lambda: self._latest is not None and self._latest.seq > seq, timeout=timeout)
            latest = self._latest
        return latest if latest is not None and latest.seq > seq else None
