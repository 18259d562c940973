"""Per-face fusion: a face is called live from several frames, never from one.

The door keeps one ``LivenessTrack`` per identity segment (facegate/recognition/segment.py: the consecutive frames
of a track that show one face), so neither the texture mean nor the planar cue ever mixes two faces; and every
frame behind a decision must be live on its own (``TrackParams.frame_margin``).

Single-frame texture scores of the same person swing with motion blur, exposure and pose; averaging the
log-odds over a short window (3 frames = 200 ms at 15 fps, the same frames recognition needs for its k-of-n
vote) removes most of that swing at no extra latency. The planar-motion veto (``motion.py``) adds evidence
only when the track moved enough to carry any.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from facegate.liveness.model import ActiveParams
from facegate.liveness.motion import non_planarity, planar_residual

LIVE = "live"
SPOOF_TEXTURE = "spoof_texture"
SPOOF_PLANAR = "spoof_planar_motion"
NOT_ENOUGH_FRAMES = "not_enough_frames"


@dataclass(frozen=True)
class FrameEvidence:
    """What one frame of one face contributes; cheap to keep (no pixels)."""

    ts: float
    score: float | None  # texture log-odds (higher = live); None when the frame failed a quality gate
    points: np.ndarray | None = None  # face-mesh (N, 2) image points for the active cue, when available


class LivenessDecision(NamedTuple):
    live: bool | None  # None: not enough frames yet
    score: float  # mean texture log-odds over the window (0 before any scored frame)
    reason: str  # live | spoof_texture | spoof_planar_motion | not_enough_frames


@dataclass(frozen=True)
class TrackParams:
    threshold: float  # the operating point's log-odds threshold
    min_frames: int = 3
    window_frames: int = 8
    active: ActiveParams | None = None  # None: no planar-motion veto
    mesh_history: int = 12  # earlier frames kept for the planar cue (0.8 s at 15 fps)
    compare_with: int = 4  # of which each new frame is compared with this many (~0.5 ms each)
    max_pairs: int = 64
    # Every scored frame behind a decision must itself be no more than this far (log-odds) below the threshold:
    # a print frame must not be averaged into "live" by live frames before it (docs/decision.md). 3.0 = a frame
    # 20x less likely live than the operating point; on nuaa_dev no live frame fell below it, 92-99.9% of print
    # frames did, depending on the operating point (tools/measure_same_face.py).
    frame_margin: float = 3.0


class LivenessTrack:
    """Accumulates ``FrameEvidence`` of one tracked face and answers ``decision()`` at any time."""

    def __init__(self, params: TrackParams) -> None:
        self.params = params
        self.scores: deque[float] = deque(maxlen=params.window_frames)
        self.frames = 0  # scored frames so far
        self.last_ts = float("-inf")
        self._meshes: deque[np.ndarray] = deque(maxlen=params.mesh_history)
        self._planarity: deque[float] = deque(maxlen=params.max_pairs)
        self.max_motion = 0.0

    def add(self, evidence: FrameEvidence) -> None:
        self.last_ts = max(self.last_ts, evidence.ts)
        if evidence.score is None:
            return
        self.scores.append(evidence.score)
        self.frames += 1
        active = self.params.active
        if active is not None and evidence.points is not None:
            points = np.asarray(evidence.points, dtype=np.float64)
            history = list(self._meshes)
            # At most `compare_with` earlier frames, spread over the history (the oldest moved the most).
            picks = sorted({round(v) for v in np.linspace(0, len(history) - 1, self.params.compare_with)})
            for earlier in (history[i] for i in picks) if history else ():
                motion, residual = planar_residual(earlier, points)
                self.max_motion = max(self.max_motion, motion)
                if motion >= active.min_motion:
                    self._planarity.append(non_planarity(motion, residual))
            self._meshes.append(points)

    def non_planarity(self) -> float | None:
        """Median motion-normalised residual over frame pairs that moved enough; None without enough pairs."""
        active = self.params.active
        if active is None or len(self._planarity) < active.min_pairs:
            return None
        return float(statistics.median(self._planarity))

    @property
    def score(self) -> float:
        return float(np.mean(self.scores)) if self.scores else 0.0

    def decision(self) -> LivenessDecision:
        score = self.score
        planarity = self.non_planarity()
        active = self.params.active
        if active is not None and planarity is not None and planarity < active.veto_below:
            return LivenessDecision(False, score, SPOOF_PLANAR)
        if len(self.scores) < self.params.min_frames:
            return LivenessDecision(None, score, NOT_ENOUGH_FRAMES)
        # Stated as what must hold: a NaN score is a spoof frame (fail closed).
        if not all(s >= self.params.threshold - self.params.frame_margin for s in self.scores):
            return LivenessDecision(False, score, SPOOF_TEXTURE)
        if score >= self.params.threshold:
            return LivenessDecision(True, score, LIVE)
        return LivenessDecision(False, score, SPOOF_TEXTURE)
