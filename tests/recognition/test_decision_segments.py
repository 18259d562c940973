"""A decision rests on one face: replays of real frames (NUAA live and print, LFW) through the real Service.

Each test builds a short replay from nuaa_dev / lfw_dev frames (tools/eval/evaluate_pad_mixed.py's own builders: a print
shifted onto the spot of a live face, empty frames), runs a fresh Service over it with file time (deterministic),
and checks the events. Subject 0005 is enrolled; 0003 is the attacker (never enrolled).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from facegate.base.imageio import read_image
from facegate.camera.replay import ReplaySource
from facegate.config import parse_config
from facegate.service import Service
from facegate.wiring.recognition import build_pipeline
from gpiozero.pins.mock import MockFactory
from support import shared_dir

from tools.eval import evaluate_pad as pad
from tools.eval import evaluate_pad_mixed as mixed

ENROLLED, ATTACKER = "0005", "0003"
FPS = 15.0
Frames = list[tuple[str, np.ndarray]]


@pytest.fixture(scope="module")
def nuaa() -> Path:
    path = shared_dir() / "spoof" / "nuaa_dev"
    if not path.is_dir():
        pytest.skip(f"nuaa_dev not found at {path} (set FACEGATE_SHARED to the folder holding spoof/nuaa_dev)")
    return path


@pytest.fixture(scope="module")
def setup(nuaa: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """0005 enrolled in a gallery; the NUAA samples and a pipeline to build frames with."""
    base = {"device_id": "seg-test", "door": {"relay_pin": 17, "unlock_seconds": 0.05},
            "mqtt": {"enabled": False}, "outbox": {"flush_timeout_seconds": 0}, "journal": {"enabled": False}}
    gallery_dir = tmp_path_factory.mktemp("gallery")
    config = parse_config({**base, "state_dir": str(gallery_dir)})
    pipeline = build_pipeline(config)
    samples = pad.list_samples(nuaa)
    enrolled = mixed.enrol(config, pipeline, samples, ENROLLED, 2)
    return {"base": base, "gallery": config.gallery_path, "pipeline": pipeline, "samples": samples,
            "enrolled": enrolled}


def frames_of(setup: dict[str, Any], kind: str, subject: str, count: int, run: int = 1) -> list[Path]:
    """``count`` consecutive frames of one session (the enrolment frames left out)."""
    found = mixed.runs(setup["samples"], kind, subject, count, setup["enrolled"])
    return [setup["samples"][i].path for i in found[run % len(found)]]


def on_spot(setup: dict[str, Any], paths: list[Path], anchor_image: np.ndarray, role: str) -> Frames:
    """The frames shifted so that their face sits where the face of ``anchor_image`` is (one track)."""
    anchor = mixed.face_box(setup["pipeline"], anchor_image)
    assert anchor is not None
    out = []
    for path in paths:
        image = read_image(path)
        box = mixed.face_box(setup["pipeline"], image)
        assert box is not None, path
        out.append((role, mixed.shifted(image, box, anchor)))
    return out


def empty(seconds: float, fps: float = FPS) -> Frames:
    return [("E", mixed.empty_frame((480, 640, 3)))] * round(seconds * fps)


def run(setup: dict[str, Any], tmp_path: Path, frames: Frames, fps: float = FPS,
        settings: dict[str, Any] | None = None, listener: Callable[[Service, dict[str, Any]], None] | None = None,
        ) -> list[dict[str, Any]]:
    """A fresh Service over ``frames`` (file time at ``fps``), 0005 enrolled; its events."""
    folder = tmp_path / "frames"
    mixed.write_frames(folder, frames)
    merged = {**setup["base"], **(settings or {})}
    config = parse_config({**merged, "state_dir": str(tmp_path / "state")})
    config.state_dir.mkdir(parents=True)
    (config.state_dir / config.gallery_path.name).write_bytes(setup["gallery"].read_bytes())
    service = Service(config, source=ReplaySource(folder, fps, sleep=lambda _s: None), pin_factory=MockFactory())
    events: list[dict[str, Any]] = []
    service.emitter.add_listener(events.append)
    if listener is not None:
        service.emitter.add_listener(lambda event: listener(service, event))
    service.run()
    return [e for e in events if e["type"] in mixed.DECISION_EVENTS]


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def test_a_live_attacker_then_a_print_of_an_enrolled_person_is_not_granted(setup: dict[str, Any],
                                                                          tmp_path: Path) -> None:
    live_paths = frames_of(setup, "live", ATTACKER, 4)
    live = [("L", read_image(p)) for p in live_paths]
    prints = on_spot(setup, frames_of(setup, "spoof_print", ENROLLED, 6), live[-1][1], "P")
    events = run(setup, tmp_path, live + prints + empty(2.0))
    assert "access_granted" not in kinds(events), events
    # The print was recognised as 0005 and judged on its own frames: a spoof, reported.
    assert any(e["type"] == "spoof_detected" and e["person_id"] == ENROLLED for e in events), events


def test_a_decision_is_never_completed_on_another_persons_frame(setup: dict[str, Any], tmp_path: Path) -> None:
    """liveness.min_frames 5: three live frames of 0005 settle the identity, the attacker's two complete nothing."""
    own = [("O", read_image(p)) for p in frames_of(setup, "live", ENROLLED, 3)]
    attacker = on_spot(setup, frames_of(setup, "live", ATTACKER, 2), own[-1][1], "A")
    events = run(setup, tmp_path, own + attacker + empty(2.0), settings={"liveness": {"min_frames": 5}})
    granted = [e for e in events if e["type"] == "access_granted"]
    assert not granted, granted
    undecided = [e for e in events if e["type"] == "visit_undecided"]
    assert [(e["reason"], e["frames"]) for e in undecided] == [("face_changed", 5)], events


def test_identical_frames_count_once(setup: dict[str, Any], tmp_path: Path) -> None:
    """One photo delivered three times is one frame: the grant waits for three distinct frames."""
    paths = frames_of(setup, "live", ENROLLED, 3)
    anchor = read_image(paths[0])
    distinct = [("A", anchor), *on_spot(setup, paths[1:], anchor, "B")]
    frames = [(f"{role}{k}", image) for role, image in distinct for k in range(3)]  # each frame 3 times
    events = run(setup, tmp_path, frames + empty(2.0))
    granted = [e for e in events if e["type"] == "access_granted"]
    assert len(granted) == 1, events
    assert granted[0]["frames_used"] == 3
    assert granted[0]["frame"] == "0006_B0.png", granted  # the first copy of the third distinct frame


def test_at_a_low_frame_rate_the_enrolled_are_granted_and_strangers_reported(setup: dict[str, Any],
                                                                            tmp_path: Path) -> None:
    """Frames 1.5 s apart (a slow camera; NUAA's own spacing): the track outlives the 1 s timeout."""
    fps = 1 / 1.5
    own_paths = frames_of(setup, "live", ENROLLED, 6)
    own = on_spot(setup, own_paths, read_image(own_paths[0]), "O")
    stranger_paths = frames_of(setup, "live", ATTACKER, 6)
    stranger = on_spot(setup, stranger_paths, read_image(stranger_paths[0]), "S")
    events = run(setup, tmp_path / "own", own + empty(6.0, fps), fps=fps)
    assert [(e["type"], e.get("person_id")) for e in events] == [("access_granted", ENROLLED)], events
    events = run(setup, tmp_path / "stranger", stranger + empty(6.0, fps), fps=fps)
    assert kinds(events) == ["unknown_face"], events


def test_a_visit_that_ends_undecided_is_reported(setup: dict[str, Any], tmp_path: Path) -> None:
    """Live face and print alternating in one spot: no segment ever gathers evidence, and the visit is reported."""
    live = [("L", read_image(p)) for p in frames_of(setup, "live", ATTACKER, 6)]
    prints = on_spot(setup, frames_of(setup, "spoof_print", ENROLLED, 6), live[-1][1], "P")
    interleaved = [frame for pair in zip(live, prints, strict=True) for frame in pair]
    events = run(setup, tmp_path, interleaved + empty(2.0))
    assert kinds(events) == ["visit_undecided"], events
    event = events[0]
    assert event["reason"] == "face_changed" and event["frames"] == 12 and isinstance(event["track_id"], int)
    assert event["best_similarity"] is not None and event["best_similarity"] > 0.5  # the print matched 0005


def test_a_person_denied_for_lockdown_gets_a_fresh_decision_once_it_is_lifted(setup: dict[str, Any],
                                                                             tmp_path: Path) -> None:
    first = [("F", read_image(p)) for p in frames_of(setup, "live", ENROLLED, 5, run=1)]
    again = [("G", read_image(p)) for p in frames_of(setup, "live", ENROLLED, 5, run=2)]

    def lift(service: Service, event: dict[str, Any]) -> None:
        if event["type"] == "access_denied" and event.get("reason") == "lockdown":
            service.policy.set_lockdown(False)  # lifted while the person walks away

    def locked(service: Service, event: dict[str, Any]) -> None:
        if event["type"] == "service_started":
            service.policy.set_lockdown(True)
        lift(service, event)

    events = run(setup, tmp_path, first + empty(2.0) + again + empty(2.0), listener=locked)
    decided = [(e["type"], e.get("reason")) for e in events if e["type"] != "visit_undecided"]
    assert decided == [("access_denied", "lockdown"), ("access_granted", None)], events


def test_a_print_of_the_same_person_after_their_live_frames_is_not_averaged_into_live(setup: dict[str, Any],
                                                                                    tmp_path: Path) -> None:
    """0005 live for three frames, then 0005's own print in the same spot (one face, one segment): every frame
    behind a decision must be live on its own, so the print frames make it a spoof instead of being averaged away."""
    own = [("O", read_image(p)) for p in frames_of(setup, "live", ENROLLED, 3)]
    prints = on_spot(setup, frames_of(setup, "spoof_print", ENROLLED, 2), own[-1][1], "P")
    events = run(setup, tmp_path, own + prints + empty(2.0), settings={"liveness": {"min_frames": 5}})
    assert "access_granted" not in kinds(events), events
    assert [(e["type"], e.get("liveness_reason")) for e in events][:1] == [("spoof_detected", "spoof_texture")]
