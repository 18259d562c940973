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
        new_person_below: float | None = None,
    ) -> None:
        """``liveness`` makes a per-track accumulator; with it, a grant also needs the track judged live.

        A track whose identity is settled but whose liveness is still undecided after
        ``liveness_max_wait_frames`` frames is treated as not live: never open on missing evidence.
        ``new_person_below``: similarity to the decided person under which a good frame shows somebody else
        (``recognition.new_person_far`` looked up in the thresholds table; default: ``threshold``).
        """
        self.config = config
        self.threshold = threshold
        self.new_person_below = threshold if new_person_below is None else min(new_person_below, threshold)
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
        if track.decided and self._someone_else(track):
            self._hand_over(track)
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
                        track.decided, track.decided_person = True, person
                        return Decision("spoof", track.track_id, person, best, count, obs, live_score,
                                        live_reason if live is not None else "not_enough_frames")
                track.decided, track.decided_person = True, person
                if ts - self._last_granted.get(person, float("-inf")) < self.config.cooldown_seconds:
                    return None  # same visit seen again (e.g. the track broke): one visit, one event
                self._last_granted[person] = ts
                return Decision("identified", track.track_id, person, best, count, obs, live_score, live_reason)
        if good >= self.config.unknown_after_frames:
            # Someone gaining votes gets a little longer (the window slides) before being called unknown.
            if votes and good < 3 * self.config.unknown_after_frames:
                return None
            track.decided, track.decided_person = True, None
            best = max(o.similarity for _, o in window)
            return Decision("unknown", track.track_id, None, best, len(window), obs)
        return None

    def _someone_else(self, track: Track) -> bool:
        """Whether a decided track now shows another person than the one it was decided on.

        After a grant or denial: a whole window of good frames none of which supports that person (each matches
        someone else, or is below ``new_person_below`` to them; a genuine user's good frame is below that about
        1 time in 70, so five in a row do not happen by chance). After unknown_face: one identity now wins k of
        the window, the same evidence a fresh track needs.
        """
        window = track.window
        if len(window) < self.config.window_frames:
            return False
        if track.decided_person is None:
            votes = Counter(v for v, _ in window if v is not None)
            return bool(votes) and votes.most_common(1)[0][1] >= self.config.required_frames
        person = track.decided_person
        return all(
            o.quality_ok and v != person and (o.person_id != person or o.similarity < self.new_person_below)
            for v, o in window
        )

    def _hand_over(self, track: Track) -> None:
        """Treat the track as a new arrival whose frames so far are the window (liveness evidence included)."""
        self.tracker.renew(track)
        track.decided, track.decided_person = False, None
        track.good_frames = sum(1 for _, o in track.window if o.quality_ok)
        if self.liveness is not None:
            track.liveness = self.liveness()
            for _, o in track.window:
                if "liveness" in o.extra:
                    track.liveness.add(o.extra["liveness"])
