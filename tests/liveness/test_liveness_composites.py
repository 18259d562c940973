"""Photographs composited into camera frames never pass liveness at the default configuration.

The demo's own scenes (tools/demo.py: scikit-image's astronaut and matplotlib's Grace Hopper pasted into frames)
are replayed through the real ``Service`` with both women enrolled and ``[liveness]`` left at its defaults: no
grant, and each photo is refused for a stated reason. Grace Hopper's scanned photo has a live-looking texture
(mean log-odds about +4.5, above the threshold): it is the moving, nearly planar track that puts it in doubt,
the door asks for a head turn, and a pasted photo does not turn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from facegate.config import Config, parse_config
from facegate.gallery.store import Gallery, NewTemplate
from facegate.service import Service
from facegate.web.hub import EventHub
from facegate.web.terminal import terminal_message
from gpiozero.pins.mock import MockFactory
from support.broker import Collector, Mosquitto

from tools.demo import augment, build_frames, in_scene

DEVICE = "t19"


def config_for(tmp: Path, frames: Path, broker: Mosquitto) -> Config:
    """The demo's camera settings; liveness untouched (its defaults: enabled, challenge = "doubt")."""
    return parse_config({
        "device_id": DEVICE, "state_dir": str(tmp / "state"),
        "camera": {"source": f"replay:{frames}", "fps": 10},
        "door": {"relay_pin": 17, "unlock_seconds": 0.4},
        "mqtt": {"host": broker.host, "port": broker.port},
        "outbox": {"flush_timeout_seconds": 5},
    })


def enrol_both(config: Config, pipeline: Any, photos: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    """Both women enrolled from their own photos (the worst case: a match is not what stops them)."""
    config.state_dir.mkdir(parents=True, exist_ok=True)
    with Gallery(config.gallery_path) as gallery:
        for person, photo in (("astronaut", photos[0]), ("hopper", photos[1])):
            templates = []
            for image in (photo, augment(photo, 4, 1.1, True, 0.9)):
                best = pipeline.process(image, largest_only=True)[0]
                templates.append(NewTemplate(best.embedding, best.quality.as_dict(), person))
            gallery.enroll(person, templates, pipeline.embedder_sha256, name=person)


def run(config: Config, broker: Mosquitto, factory: MockFactory) -> list[dict[str, Any]]:
    with Collector(broker, f"facegate/{DEVICE}/events") as seen:
        Service(config, pin_factory=factory).run()
        seen.wait_for(lambda m: any(x.json()["type"] == "service_stopped" for x in m))
    return [m.json() for m in seen.on(f"facegate/{DEVICE}/events")]


def test_the_demo_scenes_open_for_neither_photo(tmp_path: Path, broker: Mosquitto, pipeline, photos,  # type: ignore[no-untyped-def]
                                                factory: MockFactory) -> None:
    """tools/demo.py's replay exactly as the demo plays it, with liveness at the default."""
    frames = tmp_path / "frames"
    build_frames(frames)
    config = config_for(tmp_path, frames, broker)
    enrol_both(config, pipeline, photos)
    events = run(config, broker, factory)
    kinds = [e["type"] for e in events]
    assert "access_granted" not in kinds, events
    spoofs = {e["person_id"]: e["liveness_reason"] for e in events if e["type"] == "spoof_detected"}
    assert spoofs.get("astronaut") == "spoof_texture", events
    # Grace Hopper's visit is 12 frames (1.2 s), shorter than the turn's time limit, and the replay ends 0.5 s
    # later: the door asked, she never turned, and nothing let her in.
    asked = [e for e in events if e["type"] == "liveness_challenge"]
    assert asked and asked[0]["outcome"] == "asked" and asked[0]["direction"] in ("left", "right"), events
    assert all(e["outcome"] != "passed" for e in asked)
    assert factory.pin(17).state == 0


@pytest.mark.parametrize("who", ["astronaut", "hopper"])
def test_a_composited_photo_that_stays_is_refused(tmp_path: Path, broker: Mosquitto, pipeline, photos,  # type: ignore[no-untyped-def]
                                                  factory: MockFactory, who: str) -> None:
    """Each photo walked up to the door as in the demo and left there for 3 s: refused with a reason."""
    astronaut, hopper, background = photos
    frames = tmp_path / "frames"
    frames.mkdir()
    scene = [background] * 3
    for i in range(30):
        # Walks up for 12 frames, then stands there swaying a little (identical frames would count once).
        k, sway = min(i, 11), 0.15 * max(0, i - 11)
        if who == "astronaut":
            scene.append(in_scene(augment(astronaut, 3 - k * 0.5 + sway, 0.85, False), background, 480 + k * 8, 80, 0))
        else:
            scene.append(in_scene(augment(hopper, -2 + k * 0.3 - sway, 1.0, False), background, 300 + k * 6, 170, 10))
    scene += [background] * 15
    for i, frame in enumerate(scene):
        cv2.imwrite(str(frames / f"{i:04d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    config = config_for(tmp_path, frames, broker)
    enrol_both(config, pipeline, photos)
    events = run(config, broker, factory)
    assert "access_granted" not in [e["type"] for e in events], events
    spoof = next(e for e in events if e["type"] == "spoof_detected")
    assert spoof["person_id"] == who
    if who == "astronaut":
        assert spoof["liveness_reason"] == "spoof_texture"
    else:
        challenge = [e for e in events if e["type"] == "liveness_challenge"]
        assert [e["outcome"] for e in challenge] == ["asked", "no_turn"], challenge
        assert challenge[0]["direction"] == challenge[1]["direction"]
        assert challenge[1]["seconds"] > config.liveness.challenge_timeout_seconds
        assert spoof["liveness_reason"] == "challenge_no_turn"
        denied = next(e for e in events if e["type"] == "access_denied")
        assert denied["reason"] == "liveness"
    assert factory.pin(17).state == 0


def test_the_door_screen_shows_the_turn_prompt_until_it_is_settled() -> None:
    """The hub keeps the last challenge event; the terminal shows an arrow and words while it is open."""
    hub = EventHub()
    hub.on_event({"type": "liveness_challenge", "direction": "left", "outcome": "asked", "timeout_seconds": 1.5})
    assert hub.last_challenge is not None
    at = hub.last_challenge[0]
    state = terminal_message({"locked": True}, False, hub.last_decision, None, now=at + 0.5,
                             challenge=hub.last_challenge)
    assert state["kind"] == "challenge" and state["arrow"] == "\u2190" and "left" in state["message"]
    late = terminal_message({"locked": True}, False, None, None, now=at + 5.0, challenge=hub.last_challenge)
    assert late["kind"] == "look"  # long past the time limit: the prompt is gone
    hub.on_event({"type": "liveness_challenge", "direction": "left", "outcome": "no_turn", "timeout_seconds": 1.5})
    settled = terminal_message({"locked": True}, False, None, None, now=hub.last_challenge[0],
                               challenge=hub.last_challenge)
    assert settled["kind"] == "look"
    hub.on_event({"type": "liveness_challenge", "direction": "right", "outcome": "asked", "timeout_seconds": 1.5})
    right = terminal_message({"locked": True}, False, None, None, now=hub.last_challenge[0],
                             challenge=hub.last_challenge)
    assert right["arrow"] == "\u2192" and "right" in right["message"]
