"""Multi-frame decisions: k of n agreement, margin, quality, unknown faces, cooldown, tracking."""

from __future__ import annotations

from facegate.config import RecognitionConfig
from facegate.recognition.decision import DecisionEngine, Observation
from facegate.recognition.tracker import IouTracker, box_iou

BOX = (100.0, 100.0, 80.0, 80.0)


def obs(person: str | None, sim: float, runner: float = 0.0, ok: bool = True, box=BOX, ts: float = 0.0) -> Observation:  # type: ignore[no-untyped-def]
    return Observation(box=box, person_id=person, similarity=sim, runner_up=runner, quality_ok=ok, frame_ts=ts)


def engine(**kw: float) -> DecisionEngine:
    cfg = RecognitionConfig(window_frames=5, required_frames=3, unknown_after_frames=5, cooldown_seconds=10,
                            min_margin=0.05, **kw)  # type: ignore[arg-type]
    return DecisionEngine(cfg, threshold=0.5)


def feed(e: DecisionEngine, items: list[Observation], t0: float = 0.0, dt: float = 0.1) -> list:  # type: ignore[type-arg]
    out = []
    for i, o in enumerate(items):
        out += e.update([o], t0 + i * dt)
    return out


def test_iou() -> None:
    assert box_iou(BOX, BOX) == 1.0
    assert box_iou(BOX, (300, 300, 10, 10)) == 0.0


def test_grants_after_k_agreeing_frames_once_per_visit() -> None:
    e = engine()
    decisions = feed(e, [obs("alice", 0.7)] * 10)
    assert [(d.kind, d.person_id, d.frames_used) for d in decisions] == [("identified", "alice", 3)]


def test_low_similarity_never_grants_and_becomes_unknown() -> None:
    decisions = feed(engine(), [obs("alice", 0.45)] * 8)
    assert [(d.kind, d.person_id) for d in decisions] == [("unknown", None)]
    assert decisions[0].similarity == 0.45


def test_margin_over_runner_up_is_required() -> None:
    decisions = feed(engine(), [obs("alice", 0.70, runner=0.68)] * 8)
    assert [d.kind for d in decisions] == ["unknown"]


def test_non_finite_similarities_never_vote() -> None:
    nan = float("nan")
    for seq in ([obs("alice", nan)] * 8, [obs("alice", 0.9, runner=nan)] * 8):
        assert all(d.kind != "identified" for d in feed(engine(), seq))


def test_quality_failures_do_not_vote() -> None:
    e = engine()
    assert feed(e, [obs("alice", 0.9, ok=False)] * 10) == []
    # The first track (poor frames only) ended undecided when it timed out; the good frames then decide.
    assert [(d.kind, d.reason) for d in feed(e, [obs("alice", 0.9)] * 3, t0=2.0)] == [
        ("undecided", "poor_quality"), ("identified", None)]


def test_alternating_identities_never_fuse() -> None:
    """Frames voting alice and bob in turn are two faces in one spot: each vote starts a new segment, so no identity
    gathers k votes of one face, and the visit is reported undecided when it ends."""
    e = engine()
    decisions = feed(e, [obs("alice", 0.7), obs("bob", 0.7)] * 4) + e.update([], 5.0)  # then the track times out
    assert [(d.kind, d.reason, d.frames_used) for d in decisions] == [("undecided", "face_changed", 8)]


def test_cooldown_suppresses_a_second_grant_on_a_new_track() -> None:
    e = engine()
    granted = feed(e, [obs("alice", 0.8)] * 4)
    assert len(granted) == 1
    e.record_grant("alice", granted[0].ts)  # the service does this when the door opened
    # The track is lost (timeout 1 s), the same person reappears 3 s later: same visit, no second event.
    assert feed(e, [obs("alice", 0.8)] * 4, t0=3.0) == []
    # After the cooldown a new visit grants again.
    assert len(feed(e, [obs("alice", 0.8)] * 4, t0=20.0)) == 1


def test_a_decision_without_a_grant_starts_no_cooldown() -> None:
    """Denied (lockdown, schedule): the engine is not told of a grant, so the person's next visit is decided anew."""
    e = engine()
    assert len(feed(e, [obs("alice", 0.8)] * 4)) == 1
    assert [d.kind for d in feed(e, [obs("alice", 0.8)] * 4, t0=3.0)] == ["identified"]


def test_two_faces_are_tracked_separately() -> None:
    e = engine()
    other = (400.0, 100.0, 80.0, 80.0)
    out = []
    for i in range(5):
        out += e.update([obs("alice", 0.8, ts=i), obs("bob", 0.3, box=other, ts=i)], i * 0.1)
    assert sorted((d.kind, d.person_id) for d in out) == [("identified", "alice"), ("unknown", None)]


def test_tracker_keeps_id_while_box_moves_and_drops_after_timeout() -> None:
    t = IouTracker(min_iou=0.3, timeout_seconds=1.0)
    a = t.update(0.0, [BOX])[0]
    b = t.update(0.1, [(105.0, 102.0, 80.0, 80.0)])[0]
    assert a.track_id == b.track_id and b.frames == 2
    c = t.update(2.0, [(105.0, 102.0, 80.0, 80.0)])[0]
    assert c.track_id != a.track_id


def _live_engine() -> DecisionEngine:
    from facegate.liveness.track import LivenessTrack, TrackParams

    cfg = RecognitionConfig(window_frames=5, required_frames=3, unknown_after_frames=5, cooldown_seconds=10)
    return DecisionEngine(cfg, threshold=0.5, liveness=lambda: LivenessTrack(TrackParams(threshold=0.0, min_frames=3)),
                          liveness_max_wait_frames=8)


def _with_liveness(o: Observation, score: float | None, ts: float) -> Observation:
    from dataclasses import replace

    from facegate.liveness.track import FrameEvidence

    return replace(o, extra={"liveness": FrameEvidence(ts, score)})


def test_liveness_gates_a_grant() -> None:
    e = _live_engine()
    out = []
    for i in range(6):
        out += e.update([_with_liveness(obs("alice", 0.8), 2.0, i * 0.1)], i * 0.1)
    assert [(d.kind, d.person_id) for d in out] == [("identified", "alice")]
    assert out[0].liveness_reason == "live" and out[0].liveness_score == 2.0


def test_spoofed_face_of_an_enrolled_person_is_a_spoof_decision() -> None:
    e = _live_engine()
    out = []
    for i in range(6):
        out += e.update([_with_liveness(obs("alice", 0.9), -3.0, i * 0.1)], i * 0.1)
    assert [(d.kind, d.person_id) for d in out] == [("spoof", "alice")]
    assert out[0].liveness_reason is not None and out[0].liveness_reason.startswith("spoof")


def test_missing_liveness_evidence_never_opens() -> None:
    """Identity settled but no scored frame (e.g. every frame failed the liveness crop): after the wait, spoof."""
    e = _live_engine()
    out = []
    for i in range(12):
        out += e.update([_with_liveness(obs("alice", 0.9), None, i * 0.1)], i * 0.1)
    assert [(d.kind, d.liveness_reason) for d in out] == [("spoof", "not_enough_frames")]


# ------------------------------------------------------------------ a queue at the door: one spot, several people


def queue_engine() -> DecisionEngine:
    cfg = RecognitionConfig(window_frames=5, required_frames=3, unknown_after_frames=5, cooldown_seconds=10,
                            min_margin=0.05)
    return DecisionEngine(cfg, threshold=0.5, new_person_below=0.35)


def test_the_next_person_in_the_same_spot_gets_a_decision_of_their_own() -> None:
    e = queue_engine()
    first = feed(e, [obs("alice", 0.8)] * 6)
    then = feed(e, [obs("bob", 0.75)] * 6, t0=0.6)  # bob steps in where alice stood, within the track timeout
    assert [(d.kind, d.person_id) for d in first + then] == [("identified", "alice"), ("identified", "bob")]
    assert first[0].track_id != then[0].track_id  # a new arrival, not alice's visit


def test_a_stranger_after_a_grant_is_reported_unknown() -> None:
    e = queue_engine()
    out = feed(e, [obs("alice", 0.8)] * 6) + feed(e, [obs("alice", 0.18)] * 8, t0=0.6)  # only alice enrolled
    assert [(d.kind, d.person_id) for d in out] == [("identified", "alice"), ("unknown", None)]


def test_the_granted_person_keeps_the_track_through_poor_frames() -> None:
    """Frames of alice just under the match threshold (a turned head) are hers, not someone new."""
    e = queue_engine()
    seq = [obs("alice", 0.8)] * 5 + [obs("alice", 0.42)] * 10 + [obs("alice", 0.3, ok=False)] * 5
    assert [(d.kind, d.person_id) for d in feed(e, seq)] == [("identified", "alice")]


def test_an_unknown_track_that_becomes_recognisable_is_decided_again() -> None:
    e = queue_engine()
    out = feed(e, [obs("bob", 0.2)] * 6) + feed(e, [obs("bob", 0.8)] * 5, t0=0.6)
    assert [(d.kind, d.person_id) for d in out] == [("unknown", None), ("identified", "bob")]


def test_a_photo_held_up_after_a_live_grant_does_not_inherit_the_liveness() -> None:
    e = _live_engine()
    out = []
    for i in range(6):
        out += e.update([_with_liveness(obs("alice", 0.8), 2.0, i * 0.1)], i * 0.1)
    for i in range(6, 16):  # a print of bob in the same spot: recognisable, but every frame scores as a spoof
        out += e.update([_with_liveness(obs("bob", 0.8), -3.0, i * 0.1)], i * 0.1)
    assert [(d.kind, d.person_id) for d in out] == [("identified", "alice"), ("spoof", "bob")]


def test_the_track_timeout_follows_a_slow_frame_rate_but_not_one_stall() -> None:
    t = IouTracker(min_iou=0.3, timeout_seconds=1.0)
    ids = {t.update(k * 1.5, [BOX])[0].track_id for k in range(6)}  # a camera giving a frame every 1.5 s
    assert len(ids) == 1 and t.effective_timeout == 2.25
    fast = IouTracker(min_iou=0.3, timeout_seconds=1.0)
    for k in range(30):  # 15 fps, then the face is gone for 2 s (one stalled interval does not count)
        fast.update(k / 15, [BOX])
    before = fast.update(30 / 15, [BOX])[0].track_id
    assert fast.update(30 / 15 + 2.0, [BOX])[0].track_id != before
    assert [tr.track_id for tr in fast.expired] == [before]


def test_a_duplicate_frame_adds_no_evidence() -> None:
    from dataclasses import replace

    e = engine()
    same = replace(obs("alice", 0.8), digest="frame-1")
    assert feed(e, [same] * 5) == []  # five deliveries of one frame: one frame of evidence
    out = feed(e, [replace(obs("alice", 0.8), digest=f"frame-{k}") for k in (2, 3)], t0=0.5)
    assert [(d.kind, d.frames_used) for d in out] == [("identified", 3)]


def _face(person: str, sig: list[float], box=BOX, sim: float = 0.8) -> Observation:  # type: ignore[no-untyped-def]
    import numpy as np

    v = np.asarray(sig, dtype=np.float32)
    return Observation(box=box, person_id=person, similarity=sim, runner_up=0.0, quality_ok=True, frame_ts=0.0,
                       signature=v / np.linalg.norm(v))


def test_votes_of_two_faces_are_never_added_up() -> None:
    """Two frames of one face and one of another, all voting alice (e.g. a print of her after a look-alike):
    three votes, but never three of one face."""
    e = engine()
    seq = [_face("alice", [1, 0]), _face("alice", [0.99, 0.1]), _face("alice", [0, 1])]
    assert feed(e, seq) == []
    assert [d.kind for d in feed(e, [_face("alice", [0.1, 1])] * 1 + [_face("alice", [0.05, 1])], t0=0.3)] == [
        "identified"]  # the second face's own three frames do decide


def test_a_box_that_jumps_starts_a_new_segment() -> None:
    e = engine(track_iou=0.01)
    big = (60.0, 60.0, 170.0, 170.0)  # overlaps (IoU 0.22), same centre, but 4.5x the area from one frame to the next
    assert feed(e, [obs("alice", 0.8)] * 2) == []
    assert feed(e, [obs("alice", 0.8, box=big)], t0=0.2) == []  # a third vote, but of a new segment
    track = next(iter(e.tracker.tracks.values()))
    assert track.segments == 2 and track.segment.frames == 1
