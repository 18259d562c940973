"""Identity segments: the consecutive frames of a track that show one face, the only evidence a decision may use.

A track follows a box, not a person: an attacker can show their own live face and then hold up a printed photo of
an enrolled person in the same spot, and the tracker keeps one track. Evidence (identity votes, liveness scores,
face-mesh points for the planar check) is therefore kept per *segment*, and a segment ends as soon as a frame shows
another face than the segment's recent frames:

- its embedding is far from the segment's recent ones: the best cosine similarity to the last ``RECENT`` good
  frames is below ``recognition.same_face_min_similarity`` (0.6 for the shipped embedder; measured with
  ``tools/eval/measure_same_face.py``: consecutive live frames of one person, even 1.5 s apart, never went below 0.67 on
  nuaa_dev, two different people never above 0.57 on nuaa_dev nor 0.56 on lfw_dev);
- it votes for another identity than the segment's votes;
- its box jumped: the centre moved more than ``MAX_SHIFT_WIDTHS`` box widths, or the size changed by more than
  ``MAX_SCALE`` times, since the previous frame.

A frame identical to one already in the segment (same digest of the frame bytes) adds nothing: one photo
delivered three times is one frame. Frames that failed a quality gate neither vote, nor carry liveness scores, nor
take part in the face comparison (their embeddings are unreliable), but they do count in the window.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

RECENT = 3  # good frames of the segment a new frame is compared with
MAX_SHIFT_WIDTHS = 1.0
MAX_SCALE = 2.0

Box = tuple[float, float, float, float]


class LivenessTrackLike(Protocol):
    """What a segment needs of a liveness accumulator (facegate.liveness.track.LivenessTrack)."""

    def add(self, evidence: Any) -> None: ...

    def decision(self) -> Any: ...  # (live: bool | None, score: float, reason: str)


class FaceLike(Protocol):
    """The parts of an Observation a segment reads."""

    @property
    def box(self) -> Box: ...

    @property
    def quality_ok(self) -> bool: ...

    @property
    def signature(self) -> np.ndarray | None: ...

    @property
    def digest(self) -> str | None: ...

    @property
    def extra(self) -> dict[str, object]: ...


def box_jumped(a: Box, b: Box) -> bool:
    """Whether ``b`` is too far from, or too different in size to, ``a`` to be the same face one frame later."""
    width = max(min(a[2], b[2]), 1e-6)
    dx = (a[0] + a[2] / 2) - (b[0] + b[2] / 2)
    dy = (a[1] + a[3] / 2) - (b[1] + b[3] / 2)
    if (dx * dx + dy * dy) ** 0.5 > MAX_SHIFT_WIDTHS * width:
        return True
    area_a, area_b = max(a[2] * a[3], 1e-12), max(b[2] * b[3], 1e-12)
    return bool(max(area_a / area_b, area_b / area_a) > MAX_SCALE * MAX_SCALE)


class Segment:
    """The evidence of one face: window of (vote, observation), liveness accumulator, recent embeddings, digests."""

    def __init__(self, window_frames: int, liveness: Callable[[], LivenessTrackLike] | None) -> None:
        self.window: deque[tuple[str | None, Any]] = deque(maxlen=window_frames)
        self.liveness = liveness() if liveness is not None else None
        self.signatures: deque[np.ndarray] = deque(maxlen=RECENT)
        self.digests: set[str] = set()
        self.person: str | None = None  # the identity this segment's votes are for
        self.frames = 0  # frames added
        self.good_frames = 0  # of which passed the quality gates
        self.last_box: Box | None = None

    def seen(self, obs: FaceLike) -> bool:
        """Whether this exact frame is already part of the segment."""
        return obs.digest is not None and obs.digest in self.digests

    def change(self, obs: FaceLike, vote: str | None, min_similarity: float) -> str | None:
        """Why ``obs`` shows another face than this segment (``embedding``, ``identity``, ``box``), or None."""
        if self.frames == 0:
            return None
        if self.last_box is not None and box_jumped(self.last_box, obs.box):
            return "box"
        if vote is not None and self.person is not None and vote != self.person:
            return "identity"
        if obs.quality_ok and obs.signature is not None and self.signatures:
            best = max(float(np.dot(obs.signature, s)) for s in self.signatures)
            # Stated as what must hold: a NaN similarity is a change of face (fail closed).
            if not best >= min_similarity:
                return "embedding"
        return None

    def add(self, vote: str | None, obs: FaceLike) -> None:
        self.window.append((vote, obs))
        self.frames += 1
        self.last_box = obs.box
        if obs.digest is not None:
            self.digests.add(obs.digest)
        if vote is not None:
            self.person = vote
        if obs.quality_ok:
            self.good_frames += 1
            if obs.signature is not None:
                self.signatures.append(obs.signature)
        if self.liveness is not None and "liveness" in obs.extra:
            self.liveness.add(obs.extra["liveness"])


def signature(embedding: np.ndarray | None) -> np.ndarray | None:
    """The unit-length float32 copy of an embedding that segments compare (a dot product per comparison)."""
    if embedding is None:
        return None
    v = np.asarray(embedding, dtype=np.float32).ravel()
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 and np.isfinite(norm) else None


def frame_digest(image: np.ndarray) -> str:
    """A digest of the frame's pixels: identical frames (a duplicated camera buffer, a replayed photo) are one frame.

    CRC-32 of the bytes plus the shape: 0.25 ms for 640x480 RGB on a PC (BLAKE2b: 1.4 ms), computed once per frame
    and shared by its faces. Not a cryptographic hash, and it need not be: two different frames that collide only
    make the second one add no evidence (a missed frame, never a wrong decision).
    """
    data = np.ascontiguousarray(image)
    return f"{zlib.crc32(data.data):08x}-{'x'.join(map(str, data.shape))}"
