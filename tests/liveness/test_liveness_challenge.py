"""The head-turn challenge, built from real nuaa_dev frames: real turns pass, the same frames' planar warps (the
face printed and turned) and turns to the wrong side fail, and a track asks only when in doubt."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from facegate.base.imageio import read_image
from facegate.liveness.challenge import (
    ASKED,
    FLAT,
    LEFT,
    NO_TURN,
    PASSED,
    RIGHT,
    WRONG_DIRECTION,
    ChallengeEvent,
    ChallengeParams,
    FaceView,
    HeadTurnChallenge,
    face_view,
    turn_ratio,
)
from facegate.liveness.motion import fit_homography
from facegate.liveness.track import CHALLENGE_PENDING, LIVE, LIVE_CHALLENGE, FrameEvidence, LivenessTrack, TrackParams
from support import shared_dir

NUAA = shared_dir() / "spoof" / "nuaa_dev" / "live"
pytestmark = pytest.mark.skipif(not NUAA.is_dir(), reason="needs ../shared/spoof/nuaa_dev")

# (frame before, frame after) of live nuaa_dev sequences in which the person turned their head; the side is the
# person's own (a nose moving to the image's right is a turn to their left).
# (A larger turn, 0004_01_00_01_391 → 448, half a face width in 1.5 s, defeats the image alignment and counts
# as flat: at a real camera's frame rate the frames on the way there are each judged too.)
TURNS = [
    ("0007/0007_01_00_02_321.jpg", "0007/0007_01_00_02_405.jpg", RIGHT),
    ("0006/0006_00_00_01_120.jpg", "0006/0006_00_00_01_146.jpg", LEFT),
    ("0008/0008_00_00_02_3.jpg", "0008/0008_00_00_02_12.jpg", RIGHT),
    ("0006/0006_00_06_03_29.jpg", "0006/0006_00_06_03_36.jpg", LEFT),
]
OTHER = {LEFT: RIGHT, RIGHT: LEFT}


def mesh_of(pipeline, image: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    face = pipeline.detect(image)[0]
    return np.asarray(pipeline.mesh.landmarks(image, face)[0])[:, :2].astype(np.float64)


def view_of(pipeline, image: np.ndarray) -> FaceView:  # type: ignore[no-untyped-def]
    return face_view(image, mesh_of(pipeline, image))


def planar_warp(pipeline, before: np.ndarray, after: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The face before the turn, printed and turned: the before frame warped by the homography that best
    matches the real turn's mesh motion (a flat picture moved as much like the head as a plane can)."""
    h = fit_homography(mesh_of(pipeline, before), mesh_of(pipeline, after))
    return cv2.warpPerspective(before, h, (before.shape[1], before.shape[0]), borderMode=cv2.BORDER_REPLICATE)


def judge(before: FaceView, after: FaceView, direction: str) -> HeadTurnChallenge:
    challenge = HeadTurnChallenge(ChallengeParams(), direction, 0.0, [before])
    challenge.add(0.5, after)
    challenge.expire(2.0)  # past the time limit: settled either way
    return challenge


@pytest.mark.parametrize(("before", "after", "direction"), TURNS)
def test_a_real_turn_to_the_asked_side_passes(pipeline, before: str, after: str, direction: str) -> None:  # type: ignore[no-untyped-def]
    a, b = read_image(NUAA / before), read_image(NUAA / after)
    challenge = judge(view_of(pipeline, a), view_of(pipeline, b), direction)
    assert challenge.outcome == PASSED, challenge.event()


@pytest.mark.parametrize(("before", "after", "direction"), TURNS)
def test_the_same_turn_of_a_printed_face_fails(pipeline, before: str, after: str, direction: str) -> None:  # type: ignore[no-untyped-def]
    """The face mesh reports most of the turn on the warped picture too; the pixels show it is one plane."""
    a, b = read_image(NUAA / before), read_image(NUAA / after)
    warped = view_of(pipeline, planar_warp(pipeline, a, b))
    challenge = judge(view_of(pipeline, a), warped, direction)
    assert challenge.outcome in (FLAT, NO_TURN), challenge.event()


@pytest.mark.parametrize(("before", "after", "direction"), TURNS)
def test_a_turn_to_the_wrong_side_fails(pipeline, before: str, after: str, direction: str) -> None:  # type: ignore[no-untyped-def]
    a, b = read_image(NUAA / before), read_image(NUAA / after)
    challenge = judge(view_of(pipeline, a), view_of(pipeline, b), OTHER[direction])
    assert challenge.outcome == WRONG_DIRECTION, challenge.event()


def test_no_turn_within_the_time_limit_fails(pipeline) -> None:  # type: ignore[no-untyped-def]
    """A still face: nothing after the prompt turns, and the time limit (frame time) settles it as no_turn."""
    view = view_of(pipeline, read_image(NUAA / TURNS[1][0]))
    challenge = HeadTurnChallenge(ChallengeParams(timeout_seconds=1.0), LEFT, 10.0, [view])
    for ts in (10.2, 10.6, 11.0):
        challenge.add(ts, view)
    assert challenge.outcome is None
    challenge.add(11.1, view)
    assert challenge.outcome == NO_TURN


def test_turn_ratio_sign_is_the_visitors_side(pipeline) -> None:  # type: ignore[no-untyped-def]
    """Mirroring the image swaps the side: the ratio's sign is a property of the face, not of noise."""
    image = read_image(NUAA / TURNS[1][1])  # turned to the visitor's left
    assert turn_ratio(mesh_of(pipeline, image)) > 0.1
    assert turn_ratio(mesh_of(pipeline, np.ascontiguousarray(image[:, ::-1]))) < -0.1


def _track(mode: str, listener: list[ChallengeEvent], direction: str) -> LivenessTrack:
    params = TrackParams(threshold=0.0, min_frames=3, challenge=mode, doubt_below=-1.0, doubt_above=2.0)
    return LivenessTrack(params, listener.append, direction=direction)


def test_a_track_in_doubt_asks_and_a_real_turn_opens(pipeline) -> None:  # type: ignore[no-untyped-def]
    before, after, direction = TURNS[0]
    a, b = view_of(pipeline, read_image(NUAA / before)), view_of(pipeline, read_image(NUAA / after))
    heard: list[ChallengeEvent] = []
    track = _track("doubt", heard, direction)
    for ts in (0.0, 0.1, 0.2):
        track.add(FrameEvidence(ts, 1.0, a.points, a))  # in the doubt band [-1, 2)
    assert track.decision().reason == CHALLENGE_PENDING
    assert [(e.direction, e.outcome) for e in heard] == [(direction, ASKED)]
    track.add(FrameEvidence(0.5, 1.0, b.points, b))
    live, _score, reason = track.decision()
    assert (live, reason) == (True, LIVE_CHALLENGE)
    assert [e.outcome for e in heard] == [ASKED, PASSED]


def test_a_clearly_live_track_is_not_asked_and_a_clear_attack_is_refused(pipeline) -> None:  # type: ignore[no-untyped-def]
    view = view_of(pipeline, read_image(NUAA / TURNS[0][0]))
    heard: list[ChallengeEvent] = []
    live_track, attack = _track("doubt", heard, LEFT), _track("doubt", heard, LEFT)
    for ts in (0.0, 0.1, 0.2):
        live_track.add(FrameEvidence(ts, 2.5, view.points, view))
        attack.add(FrameEvidence(ts, -1.5, view.points, view))
    assert live_track.decision()[::2] == (True, LIVE)
    assert attack.decision()[0] is False
    assert heard == []


def test_always_asks_even_a_clearly_live_track_and_a_still_face_fails(pipeline) -> None:  # type: ignore[no-untyped-def]
    view = view_of(pipeline, read_image(NUAA / TURNS[0][0]))
    heard: list[ChallengeEvent] = []
    track = _track("always", heard, LEFT)
    for ts in (0.0, 0.1, 0.2):
        track.add(FrameEvidence(ts, 5.0, view.points, view))
    assert track.decision().reason == CHALLENGE_PENDING
    for ts in np.arange(0.3, 2.0, 0.1):
        track.add(FrameEvidence(float(ts), 5.0, view.points, view))
    assert track.decision()[::2] == (False, "challenge_no_turn")
    assert [e.outcome for e in heard] == [ASKED, NO_TURN]


def test_unknown_challenge_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="challenge"):
        LivenessTrack(TrackParams(threshold=0.0, challenge="sometimes"))


def test_nuaa_turn_frames_exist() -> None:
    """The frames these tests are built from are the shared data's, not invented."""
    for before, after, _ in TURNS:
        assert Path(NUAA / before).is_file() and Path(NUAA / after).is_file()


def test_the_engine_waits_for_a_challenge_past_its_frame_limit(pipeline) -> None:  # type: ignore[no-untyped-def]
    """At 30 fps the 1.5 s time limit is 45 frames, more than liveness_max_wait_frames: the engine still waits
    for the challenge, which settles by itself (here: a still face, refused as challenge_no_turn at 1.5 s)."""
    from facegate.config import RecognitionConfig
    from facegate.recognition.decision import DecisionEngine, Observation

    view = view_of(pipeline, read_image(NUAA / TURNS[0][0]))
    heard: list[ChallengeEvent] = []
    cfg = RecognitionConfig(window_frames=5, required_frames=3, unknown_after_frames=5, cooldown_seconds=10)
    engine = DecisionEngine(cfg, threshold=0.5, liveness=lambda: _track("doubt", heard, LEFT),
                            liveness_max_wait_frames=8)
    out = []
    for i in range(60):
        ts = i / 30
        o = Observation(box=(100.0, 100.0, 80.0, 80.0), person_id="alice", similarity=0.9, runner_up=0.0,
                        quality_ok=True, frame_ts=ts, extra={"liveness": FrameEvidence(ts, 1.0, view.points, view)})
        out += [(d.kind, d.liveness_reason, round(ts, 2)) for d in engine.update([o], ts)]
    assert len(out) == 1 and out[0][:2] == ("spoof", "challenge_no_turn"), out
    assert out[0][2] > 1.5  # decided by the time limit, not by the frame count
    assert [e.outcome for e in heard] == [ASKED, NO_TURN]
