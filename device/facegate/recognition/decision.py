"""Multi-frame fusion: grant only when one identity wins k of the last n frames of one face, all of them live.

A single frame can match the wrong person (blur, a half-turned face); requiring agreement over several
frames, a margin over the runner-up and passing quality gates is what turns a 1e-4 per-comparison
false-match rate into a door that does not open for strangers. The frames must also be of one face: evidence is
kept per identity segment (facegate/recognition/segment.py), so an attacker's live face can never lend its
liveness to a photo of someone else held up in the same spot (docs/decision.md).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from facegate.config import RecognitionConfig
from facegate.recognition.segment import LivenessTrackLike, Segment
from facegate.recognition.tracker import IouTracker, Track

__all__ = ["MIN_VISIT_FRAMES", "Decision", "DecisionEngine", "LivenessTrackLike", "Observation"]

# A track that ends undecided is reported (visit_undecided) when it had at least this many distinct frames: a face
# glimpsed in one frame (a passer-by, a detector false positive) is not a visit.
MIN_VISIT_FRAMES = 2


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
    # The face's unit-length embedding (segment.signature): is this the same face as the track's recent frames?
    signature: np.ndarray | None = field(default=None, compare=False, repr=False)
    digest: str | None = None  # digest of the frame's pixels (segment.frame_digest): duplicates count once


@dataclass(frozen=True)
class Decision:
    kind: str  # "identified" | "unknown" | "spoof" (an enrolled face that failed the liveness check) | "undecided"
    track_id: int
    person_id: str | None
    similarity: float
    frames_used: int
    observation: Observation  # the frame that completed the decision (undecided: the track's last frame)
    liveness_score: float | None = None
    liveness_reason: str | None = None
    reason: str | None = None  # undecided: why (see _undecided)
    ts: float | None = None  # the decision timeline's time of the deciding frame (for record_grant)


class DecisionEngine:
    def __init__(
        self,
        config: RecognitionConfig,
        threshold: float,
        liveness: Callable[[], LivenessTrackLike] | None = None,
        liveness_max_wait_frames: int = 30,
        new_person_below: float | None = None,
    ) -> None:
        """``liveness`` makes a per-segment accumulator; with it, a grant also needs the segment judged live.

        A segment whose identity is settled but whose liveness is still undecided after
        ``liveness_max_wait_frames`` frames is treated as not live: never open on missing evidence.
        ``new_person_below``: similarity to the decided person under which a good frame shows somebody else
        (``recognition.new_person_far`` looked up in the thresholds table; default: ``threshold``).
        """
        self.config = config
        self.threshold = threshold
        self.new_person_below = threshold if new_person_below is None else min(new_person_below, threshold)
        self.same_face = config.same_face_min_similarity
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

    def record_grant(self, person: str, ts: float) -> None:
        """The door let ``person`` in at ``ts``: the cooldown starts (a denial never starts it)."""
        self._last_granted[person] = ts

    def update(self, observations: list[Observation], ts: float) -> list[Decision]:
        tracks = self.tracker.update(ts, [o.box for o in observations])
        decisions = [d for d in map(self._undecided, self.tracker.expired) if d is not None]
        for obs, track in zip(observations, tracks, strict=True):
            decision = self._update_track(track, obs, ts)
            if decision is not None:
                decisions.append(decision)
        return decisions

    def _new_segment(self, track: Track) -> Segment:
        segment = Segment(self.config.window_frames, self.liveness)
        track.segment = segment
        track.segments += 1
        return segment

    def _update_track(self, track: Track, obs: Observation, ts: float) -> Decision | None:
        segment: Segment = track.segment if track.segment is not None else self._new_segment(track)
        if segment.seen(obs):
            return None  # the same frame again: it adds no evidence
        vote = self._vote(obs)
        if segment.change(obs, vote, self.same_face) is not None:
            segment = self._new_segment(track)  # another face: nothing of the previous one counts for it
        segment.add(vote, obs)
        track.unique_frames += 1
        track.last_observation = obs
        if obs.quality_ok and math.isfinite(obs.similarity):
            track.best_similarity = max(track.best_similarity, obs.similarity)
        if track.decided and self._someone_else(track):
            self._hand_over(track)
            segment = track.segment
        if track.decided or not obs.quality_ok:
            return None  # a decision completes only on a good frame of the face it is about
        window = segment.window
        votes = Counter(v for v, _ in window if v is not None)
        if votes:
            person, count = votes.most_common(1)[0]
            if count >= self.config.required_frames:
                best = max(o.similarity for v, o in window if v == person)
                live_score: float | None = None
                live_reason: str | None = None
                if segment.liveness is not None:
                    live, live_score, live_reason = segment.liveness.decision()
                    # A head-turn challenge settles itself at its time limit (frame time, whatever the frame
                    # rate), so it is waited for past liveness_max_wait_frames.
                    if live is None and (segment.frames < self.liveness_max_wait
                                         or live_reason == "challenge_pending"):
                        return None  # identity settled, liveness needs a frame or two more
                    if not live:
                        track.decided, track.decided_person = True, person
                        return Decision("spoof", track.track_id, person, best, count, obs, live_score,
                                        live_reason if live is not None else "not_enough_frames", ts=ts)
                track.decided, track.decided_person = True, person
                if ts - self._last_granted.get(person, float("-inf")) < self.config.cooldown_seconds:
                    return None  # same visit seen again (e.g. the track broke): one visit, one event
                return Decision("identified", track.track_id, person, best, count, obs, live_score, live_reason,
                                ts=ts)
        if segment.good_frames >= self.config.unknown_after_frames:
            # Someone gaining votes gets a little longer (the window slides) before being called unknown.
            if votes and segment.good_frames < 3 * self.config.unknown_after_frames:
                return None
            track.decided, track.decided_person = True, None
            best = max(o.similarity for _, o in window)
            return Decision("unknown", track.track_id, None, best, len(window), obs, ts=ts)
        return None

    def _undecided(self, track: Track) -> Decision | None:
        """A track that ended (timed out) without any decision: why, so that no visit goes unreported."""
        if track.decided or track.unique_frames < MIN_VISIT_FRAMES or track.last_observation is None:
            return None
        segment: Segment = track.segment
        votes = Counter(v for v, _ in segment.window if v is not None)
        if votes and votes.most_common(1)[0][1] >= self.config.required_frames:
            reason = "liveness_pending"
        elif track.segments > 1:
            reason = "face_changed"
        elif votes:
            reason = "no_consensus"
        elif track.best_similarity == -1.0 and segment.good_frames == 0:
            reason = "poor_quality"
        else:
            reason = "too_few_frames"
        return Decision("undecided", track.track_id, None, track.best_similarity, track.unique_frames,
                        track.last_observation, reason=reason, ts=track.last_ts)

    def _someone_else(self, track: Track) -> bool:
        """Whether a decided track now shows another person than the one it was decided on.

        After a grant or denial: a whole window of good frames none of which supports that person (each matches
        someone else, or is below ``new_person_below`` to them; a genuine user's good frame is below that about
        1 time in 70, so five in a row do not happen by chance). After unknown_face: one identity now wins k of
        the window, the same evidence a fresh track needs.
        """
        window = track.segment.window
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
        window = list(track.segment.window)
        self.tracker.renew(track)
        track.decided, track.decided_person = False, None
        track.segments = 0
        segment = self._new_segment(track)
        for vote, obs in window:
            segment.add(vote, obs)
        track.frames = track.unique_frames = segment.frames
        track.best_similarity = max((o.similarity for _, o in window if o.quality_ok), default=-1.0)
