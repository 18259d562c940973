"""Fleet sync end to end in the door service: publish a signed bundle to a real broker, the running service
applies it without stopping its frame loop, emits gallery_updated, and then grants the enrolled person."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from facegate.config import ConfigError, parse_config
from facegate.gallery.store import Gallery, NewTemplate
from facegate.service import Service
from facegate.sync.export import export_bundle
from facegate.sync.mqtt import MqttTarget, publish_bundle
from gpiozero.pins.mock import MockFactory
from support.broker import Collector, Mosquitto
from support.sync_keys import add_random_persons, keypair

from tools.demo import augment, in_scene
from tools.wait import wait_for

DEVICE = "sync1"
TOPIC = "fleet/gallery"


def write_loop(folder: Path, photos: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Path:
    """An empty scene, then the astronaut walking up: replayed in a loop. The empty part lasts longer than
    recognition.track_timeout_seconds, so each pass is a new visit (a new track and a new decision)."""
    astronaut, _hopper, background = photos
    folder.mkdir(parents=True, exist_ok=True)
    frames = [background] * 20 + [in_scene(augment(astronaut, 2 - 0.4 * i, 0.9, False), background, 500 + 6 * i,
                                          60, 0) for i in range(8)]
    for n, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{n:04d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


def admin_gallery(path: Path, pipeline: Any, photos: Any) -> Gallery:
    astronaut = photos[0]
    templates = []
    for image in (astronaut, augment(astronaut, 4, 1.1, True, 0.9)):
        best = pipeline.process(image, largest_only=True)[0]
        templates.append(NewTemplate(best.embedding, best.quality.as_dict(), "astronaut"))
    g = Gallery(path)
    g.enroll("astro", templates, pipeline.embedder_sha256, name="Eileen Collins")
    add_random_persons(g, 200, emb=pipeline.embedder_sha256)
    return g


def test_published_bundle_is_applied_live_and_the_person_is_granted(tmp_path, broker: Mosquitto, photos,  # type: ignore[no-untyped-def]
                                                                   pipeline) -> None:
    key, _, public = keypair()
    admin = admin_gallery(tmp_path / "admin.db", pipeline, photos)
    bundle = export_bundle(admin, key)
    config = parse_config({
        "device_id": DEVICE, "state_dir": str(tmp_path / "state"),
        "camera": {"source": f"replay:{write_loop(tmp_path / 'frames', photos)}", "fps": 15, "loop": True},
        "door": {"relay_pin": 17, "unlock_seconds": 0.3},
        "mqtt": {"host": broker.host, "port": broker.port, "discovery": False},
        "outbox": {"flush_timeout_seconds": 5},
        "liveness": {"enabled": False},  # the visitor is a pasted photo (liveness has its own tests)
        "sync": {"public_keys": [public], "topic": TOPIC},
    })
    factory = MockFactory()
    service = Service(config, pin_factory=factory)
    assert service.sync is not None and service.index.persons == 0
    local: list[dict[str, Any]] = []
    service.emitter.add_listener(local.append)
    thread = threading.Thread(target=service.run, daemon=True)
    try:
        with Collector(broker, f"facegate/{DEVICE}/#") as seen:
            thread.start()
            assert wait_for(lambda: service.sync is not None and service.sync.mqtt is not None
                              and service.sync.mqtt.connected and service.stats.frames > 20, timeout=20)
            assert "access_granted" not in [e["type"] for e in local]  # nobody enrolled yet
            publish_bundle(bundle.data, MqttTarget(broker.host, broker.port), TOPIC)
            assert wait_for(lambda: "access_granted" in [e["type"] for e in local], timeout=20), [
                {k: v for k, v in e.items() if k not in ("event_id", "ts", "device_id")} for e in local]
            types = [e["type"] for e in local]
            assert types.index("gallery_updated") < types.index("access_granted")
            updated = next(e for e in local if e["type"] == "gallery_updated")
            assert (updated["version"], updated["persons"], updated["templates"]) == (bundle.version, 201, 202)
            granted = next(e for e in local if e["type"] == "access_granted")
            assert granted["person_id"] == "astro" and granted["name"] == "Eileen Collins"
            # On the broker too, and the retained status reports the new gallery version.
            seen.wait_for(lambda m: any(x.topic.endswith("/events") and x.json()["type"] == "access_granted"
                                        for x in m), timeout=10)
            statuses = seen.wait_for(lambda m: any(x.topic.endswith("/status") and x.json().get("gallery", {})
                                                   .get("version") == bundle.version for x in m))
            assert any(x.json().get("gallery", {}).get("persons") == 201 for x in statuses
                       if x.topic.endswith("/status"))
            frames_before = service.stats.frames
            assert wait_for(lambda: service.stats.frames > frames_before + 5)  # the loop kept running
    finally:
        service.stop_event.set()
        thread.join(20)
        factory.reset()
    assert not thread.is_alive()
    assert service.index.persons == 201


def test_sync_is_off_without_keys_and_needs_mqtt_for_a_topic(tmp_path, photos, caplog) -> None:  # type: ignore[no-untyped-def]
    frames = write_loop(tmp_path / "frames", photos)
    config = parse_config({"state_dir": str(tmp_path / "s"), "camera": {"source": f"replay:{frames}"},
                           "mqtt": {"enabled": False}, "sync": {"url": "http://127.0.0.1:9/x"}})
    factory = MockFactory()
    try:
        service = Service(config, pin_factory=factory)
        assert service.sync is None
        assert "fleet sync is off" in caplog.text
        service.door.close()
    finally:
        factory.reset()
    with pytest.raises(ConfigError, match=r"mqtt\.enabled"):
        parse_config({"mqtt": {"enabled": False}, "sync": {"public_keys": ["A" * 43 + "="], "topic": "t"}})
