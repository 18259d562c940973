"""The service tests' scenes and MockFactory helpers: replay frames of the demo's photos (tools/demo.py), the
astronaut's enrolment, a door config against a private broker, and what the relay and the outbox recorded."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from facegate.config import Config, parse_config
from facegate.events.outbox import Outbox
from facegate.gallery.store import Gallery, NewTemplate
from facegate.service import Service
from gpiozero.pins.mock import MockFactory

from support.broker import Collector, Mosquitto
from tools.demo import augment, in_scene, shipped_photos

KEY = bytes(range(32))
DEVICE = "t1"
UNLOCK_SECONDS = 0.4


# ------------------------------------------------------------------ scene and gallery builders


@pytest.fixture(scope="module")
def photos() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return shipped_photos()


def write_frames(folder: Path, photos: tuple[np.ndarray, np.ndarray, np.ndarray], plan: list[tuple[str, int]]) -> Path:
    """Frames for a plan like [("bg", 3), ("astro", 8)]: a person walks up (growing slightly) and leaves."""
    astronaut, hopper, background = photos
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for what, count in plan:
        for i in range(count):
            if what == "bg":
                frame = background
            else:
                photo = astronaut if what == "astro" else hopper
                frame = in_scene(augment(photo, 2 - 0.4 * i, 0.9, False), background, 500 + 6 * i, 60, 0)
            cv2.imwrite(str(folder / f"{n:04d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            n += 1
    return folder


@pytest.fixture(scope="module")
def astro_templates(pipeline, photos) -> list[NewTemplate]:  # type: ignore[no-untyped-def]
    astronaut = photos[0]
    out = []
    for image in (astronaut, augment(astronaut, 4, 1.1, True, 0.9)):
        best = pipeline.process(image, largest_only=True)[0]
        out.append(NewTemplate(best.embedding, best.quality.as_dict(), "astronaut"))
    return out


def make_config(tmp: Path, frames: Path, server: Mosquitto | None, **sections: dict[str, Any]) -> Config:
    data: dict[str, Any] = {
        "device_id": DEVICE,
        "state_dir": str(tmp / "state"),
        "camera": {"source": f"replay:{frames}", "fps": 30},
        "door": {"relay_pin": 17, "unlock_seconds": UNLOCK_SECONDS},
        "mqtt": {"host": server.host, "port": server.port} if server else {"enabled": False},
        "outbox": {"flush_timeout_seconds": 5},
        "commands": {"hmac_key": KEY.hex()},
        # These scenes are registry photos pasted into frames, i.e. photographs: the liveness gate rightly
        # refuses them (see test_photo_of_enrolled_person_is_refused_by_liveness), so it is off here.
        "liveness": {"enabled": False},
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return parse_config(data)


def enrol(config: Config, templates: list[NewTemplate], pipeline: Any) -> None:
    config.state_dir.mkdir(parents=True, exist_ok=True)
    with Gallery(config.gallery_path) as g:
        g.enroll("astro", templates, pipeline.embedder_sha256, name="Eileen Collins")


def pulses(pin: Any) -> list[float]:
    """Durations of the relay's energised periods, from gpiozero's recorded MockPin history.

    MockPin records each change with the time elapsed since the previous change, so the entry that ends a
    pulse carries the pulse's length.
    """
    out, high = [], False
    for st in pin.states[1:]:
        if high and not st.state:
            out.append(st.timestamp)
        high = bool(st.state)
    return out


def events_of(seen: Collector) -> list[dict[str, Any]]:
    return [m.json() for m in seen.on(f"facegate/{DEVICE}/events")]


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def outbox_rows(config: Config) -> list[dict[str, Any]]:
    """What is waiting in the outbox, read through the outbox's own code (as the next start would)."""
    box = Outbox(config.state_dir / "outbox.db", config.outbox.max_events)
    try:
        return [event for _, event in box.peek(limit=100_000)]
    finally:
        box.close()


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.reset()


def run_service(config: Any, factory: MockFactory, source: Any = None) -> tuple[Service, list[dict[str, Any]]]:
    service = Service(config, pin_factory=factory, source=source)
    seen: list[dict[str, Any]] = []
    service.emitter.add_listener(seen.append)
    assert service.run() == 0
    return service, seen


def run_in_thread(service: Service) -> threading.Thread:
    """The service's frame loop on a daemon thread (stop it with ``service.stop_event``)."""
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    return thread
