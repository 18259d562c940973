"""Multi-frame fusion: grant only when one identity wins k of the last n frames of a track.

A single frame can match the wrong person (blur, a half-turned face); requiring agreement over several
frames, a margin over the runner-up and passing quality gates is what turns a 1e-4 per-comparison
false-match rate into a door that does not open for strangers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from facegate.config import RecognitionConfig
from facegate.recognition.tracker import IouTracker, Track


@dataclass(frozen=True)
class Observation:
    """One face in one frame, already matched against the gallery."""

    box: tuple[float, float, float, float]
    person_id: str | None  # best candidate (whatever its similarity)
    similarity: float  # best candidate's similarity, -1 with an empty gallery
    runner_up: float  # second-best person's similarity, -1 if none
    quality_ok: bool
    frame_ts: float
    frame: str | None = None
    extra: dict[str, object] = field(default_factory=dict)  # e.g. liveness scores


class LivenessTrackLike(Protocol):
    """What the engine needs of a per-track liveness accumulator (facegate.liveness.track.LivenessTrack)."""

    def add(self, evidence: Any) -> None: ...

    def decision(self) -> Any: ...  # (live: bool | None, score: float, reason: str)


@dataclass(frozen=True)
class Decision:
    kind: str  # "identified" | "unknown" | "spoof" (an enrolled face that failed the liveness check)
    track_id: int
    person_id: str | None
    similarity: float
    frames_used: int
    observation: Observation  # the frame that completed the decision
    liveness_score: float | None = None
    liveness_reason: str | None = None


class DecisionEngine:
    def __init__(
        self,
        config: RecognitionConfig,
        threshold: float,
        liveness: Callable[[], LivenessTrackLike] | None = None,
        liveness_max_wait_frames: int = 30,
    ) -> None:
        """``liveness`` makes a per-track accumulator; with it, a grant also needs the track judged live.

        A track whose identity is settled but whose liveness is still undecided after
        ``liveness_max_wait_frames`` frames is treated as not live: never open on missing evidence.
        """
        self.config = config
        self.threshold = threshold
        self.liveness = liveness
        self.liveness_max_wait = liveness_max_wait_frames
        self.tracker = IouTracker(config.track_iou, config.track_timeout_seconds)
        self._last_granted: dict[str, float] = {}

    def _vote(self, obs: Observation) -> str | None:
        """The identity this frame supports, or None."""
        if not obs.quality_ok or obs.person_id is None:
            return None
        # Stated as what must hold, not what must fail: a NaN similarity or runner-up then never votes (fail closed).
        if obs.similarity >= self.threshold and obs.similarity - obs.runner_up >= self.config.min_margin:
            return obs.person_id
        return None

    def update(self, observations: list[Observation], ts: float) -> list[Decision]:
        tracks = self.tracker.update(ts, [o.box for o in observations])
        decisions = []
        for obs, track in zip(observations, tracks, strict=True):
            decision = self._update_track(track, obs, ts)
            if decision is not None:
                decisions.append(decision)
        return decisions

    def _update_track(self, track: Track, obs: Observation, ts: float) -> Decision | None:
        window = track.window
        window.append((self._vote(obs), obs))
        if self.liveness is not None:
            if track.liveness is None:
                track.liveness = self.liveness()
            if "liveness" in obs.extra:
                track.liveness.add(obs.extra["liveness"])
        while len(window) > self.config.window_frames:
            window.popleft()
        track.good_frames += 1 if obs.quality_ok else 0
        good = track.good_frames
        if track.decided:
            return None
        votes = Counter(v for v, _ in window if v is not None)
        if votes:
            person, count = votes.most_common(1)[0]
            if count >= self.config.required_frames:
                best = max(o.similarity for v, o in window if v == person)
                live_score: float | None = None
                live_reason: str | None = None
                if track.liveness is not None:
                    live, live_score, live_reason = track.liveness.decision()
                    if live is None and track.frames < self.liveness_max_wait:
                        return None  # identity settled, liveness needs a frame or two more
                    if not live:
                        track.decided = True
                        return Decision("spoof", track.track_id, person, best, count, obs, live_score,
                                        live_reason if live is not None else "not_enough_frames")
                track.decided = True
                if ts - self._last_granted.get(person, float("-inf")) < self.config.cooldown_seconds:
                    return None  # same visit seen again (e.g. the track broke): one visit, one event
                self._last_granted[person] = ts
                return Decision("identified", track.track_id, person, best, count, obs, live_score, live_reason)
        if good >= self.config.unknown_after_frames:
            # Someone gaining votes gets a little longer (the window slides) before being called unknown.
            if votes and good < 3 * self.config.unknown_after_frames:
                return None
            track.decided = True
            best = max(o.similarity for _, o in window)
            return Decision("unknown", track.track_id, None, best, len(window), obs)
        return None
