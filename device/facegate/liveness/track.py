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
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from facegate.liveness.challenge import (
    ASKED,
    PASSED,
    ChallengeListener,
    ChallengeParams,
    FaceView,
    HeadTurnChallenge,
    random_direction,
)
from facegate.liveness.model import ActiveParams
from facegate.liveness.motion import non_planarity, planar_residual

LIVE = "live"
SPOOF_TEXTURE = "spoof_texture"
SPOOF_PLANAR = "spoof_planar_motion"
NOT_ENOUGH_FRAMES = "not_enough_frames"
LIVE_CHALLENGE = "live_head_turn"  # passed the head-turn challenge
CHALLENGE_PENDING = "challenge_pending"  # asked for a turn, waiting for it (the engine waits as for frames)
CHALLENGE_MODES = ("off", "doubt", "always")


@dataclass(frozen=True)
class FrameEvidence:
    """What one frame of one face contributes; cheap to keep (no pixels)."""

    ts: float
    score: float | None  # texture log-odds (higher = live); None when the frame failed a quality gate
    points: np.ndarray | None = None  # face-mesh (N, 2) image points for the active cues, when available
    view: FaceView | None = None  # the face region for the head-turn challenge (only when it may be asked)


class LivenessDecision(NamedTuple):
    live: bool | None  # None: not enough frames yet
    score: float  # mean texture log-odds over the window (0 before any scored frame)
    # live | live_head_turn | spoof_texture | spoof_planar_motion | not_enough_frames | challenge_pending |
    # challenge_wrong_direction | challenge_flat | challenge_no_turn
    reason: str


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
    # frames did, depending on the operating point (tools/eval/measure_same_face.py).
    frame_margin: float = 3.0
    # When to ask for a head turn (challenge.py): "off" never; "doubt" when the mean texture score lies in
    # [doubt_below, doubt_above) (log-odds, absolute): below it is an attack, above it live without asking,
    # unless the track moved and stayed nearly planar (non-planarity below doubt_planarity, but not low enough
    # for the veto); "always" for every track that is not clearly an attack (below doubt_below).
    challenge: str = "off"
    doubt_below: float = 0.0
    doubt_above: float = 0.0
    doubt_planarity: float = float("-inf")
    challenge_params: ChallengeParams = field(default_factory=ChallengeParams)


class LivenessTrack:
    """Accumulates ``FrameEvidence`` of one tracked face and answers ``decision()`` at any time."""

    def __init__(self, params: TrackParams, listener: ChallengeListener | None = None,
                 direction: str | None = None) -> None:
        """``listener`` hears the challenge being asked and settled; ``direction`` fixes the side (tests): by
        default it is drawn at random when the challenge starts."""
        if params.challenge not in CHALLENGE_MODES:
            raise ValueError(f"liveness challenge must be one of {CHALLENGE_MODES}, not {params.challenge!r}")
        self.params = params
        self.listener = listener
        self.direction = direction
        self.challenge: HeadTurnChallenge | None = None
        self._reported: str | None = None
        self._recent: deque[FaceView] = deque(maxlen=3)  # the last faces, the challenge's reference
        self.scores: deque[float] = deque(maxlen=params.window_frames)
        self.frames = 0  # scored frames so far
        self.last_ts = float("-inf")
        self._meshes: deque[np.ndarray] = deque(maxlen=params.mesh_history)
        self._planarity: deque[float] = deque(maxlen=params.max_pairs)
        self.max_motion = 0.0

    def add(self, evidence: FrameEvidence) -> None:
        self.last_ts = max(self.last_ts, evidence.ts)
        if evidence.view is not None:
            # Frames that failed a quality gate still show the turn (a turned head may pass the yaw limit).
            if self.challenge is not None:
                self.challenge.add(evidence.ts, evidence.view)
            else:
                self._recent.append(evidence.view)
        if evidence.score is None:
            return
        self.scores.append(evidence.score)
        self.frames += 1
        active = self.params.active
        if active is not None and evidence.points is not None and evidence.score is not None:
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
        if self.challenge is not None:
            return self._challenge_decision(score)
        mode = self.params.challenge
        if mode == "off":
            return LivenessDecision(score >= self.params.threshold, score,
                                    LIVE if score >= self.params.threshold else SPOOF_TEXTURE)
        # Stated as what must hold: a NaN mean is an attack.
        if not score >= self.params.doubt_below:
            return LivenessDecision(False, score, SPOOF_TEXTURE)
        nearly_planar = planarity is not None and not planarity >= self.params.doubt_planarity
        if mode == "doubt" and score >= self.params.doubt_above and not nearly_planar:
            return LivenessDecision(True, score, LIVE)
        self.challenge = HeadTurnChallenge(self.params.challenge_params, self.direction or random_direction(),
                                           self.last_ts, list(self._recent))
        return self._challenge_decision(score)

    def _challenge_decision(self, score: float) -> LivenessDecision:
        challenge = self.challenge
        assert challenge is not None
        challenge.expire(self.last_ts)
        self._report(challenge)
        if challenge.outcome is None:
            return LivenessDecision(None, score, CHALLENGE_PENDING)
        if challenge.outcome == PASSED:
            return LivenessDecision(True, score, LIVE_CHALLENGE)
        return LivenessDecision(False, score, f"challenge_{challenge.outcome}")

    def _report(self, challenge: HeadTurnChallenge) -> None:
        """Tell the listener once when the challenge is asked and once when it is settled."""
        state = challenge.outcome or ASKED
        if state == self._reported:
            return
        if self._reported is None and state != ASKED and self.listener is not None:
            self.listener(challenge.asked_event())
        self._reported = state
        if self.listener is not None:
            self.listener(challenge.event())
