"""Each subsystem builder of the service (facegate/wiring) builds its part alone, without the rest of the door.

That is what lets a newcomer change one subsystem and test it on its own: events without a camera, the door
without models, recognition without pins.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from facegate.config import Config, ConfigError, parse_config
from facegate.gallery.store import Gallery
from facegate.journal import Journal
from facegate.recognition.operating_point import door_threshold
from facegate.recognition.thresholds import table_for
from facegate.wiring.communicator import build_communicator
from facegate.wiring.door import build_door
from facegate.wiring.events import build_events
from facegate.wiring.recognition import build_recognition
from facegate.wiring.sync import build_sync
from gpiozero.pins.mock import MockFactory

from tools.wait import wait_for


def config_in(tmp_path: Path, **sections: dict[str, Any]) -> Config:
    data: dict[str, Any] = {"device_id": "w1", "state_dir": str(tmp_path / "state"),
                            "door": {"relay_pin": 17, "unlock_seconds": 0.2}, "mqtt": {"enabled": False},
                            "liveness": {"enabled": False}}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return parse_config(data)


def test_events_and_journal_build_alone(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    config.state_dir.mkdir(parents=True)
    parts = build_events(config)
    assert parts.journal is not None and parts.journal_open_error is None
    parts.journal.start()
    parts.emitter.emit("service_started", version="x")
    parts.journal.stop()
    assert [e["type"] for _, e in parts.outbox.peek(10)] == ["service_started"]
    with Journal(config.journal_path, readonly=True) as journal:  # written on the journal's own thread
        assert journal.latest("service_started") is not None
    # Without a broker the transport is the local one: events stay in the outbox.
    communicator = build_communicator(config, parts.emitter, lambda: None)
    assert communicator.stop(0) == 1


def test_door_builds_alone_on_mock_pins(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    events: list[tuple[str, dict[str, Any]]] = []
    factory = MockFactory()
    door, outputs = build_door(config, lambda kind, **fields: events.append((kind, fields)), factory)
    try:
        assert outputs == []  # no [osdp] / [wiegand]: no panel outputs
        relay = factory.pin(17)
        door.unlock(reason="test")
        assert relay.state == 1
        assert wait_for(lambda: relay.state == 0, 5)  # relocked on its own after unlock_seconds
        assert [k for k, _ in events][:2] == ["door_unlocked", "door_locked"]
    finally:
        door.close()


def test_door_builder_names_the_section_when_pins_clash(tmp_path: Path) -> None:
    config = config_in(tmp_path, door={"relay_pin": 17, "contact_pin": 17})
    with pytest.raises(ConfigError, match=r"^door: cannot set up the door pins"):
        build_door(config, lambda kind, **fields: None, MockFactory())


def test_recognition_builds_alone(tmp_path: Path, pipeline: Any) -> None:
    config = config_in(tmp_path)
    config.state_dir.mkdir(parents=True)
    with Gallery(config.gallery_path) as gallery:
        gallery.enroll("p1", [], pipeline.embedder_sha256, name="P One")
    parts = build_recognition(config)
    try:
        table = table_for(parts.pipeline.manifest.directory, parts.pipeline.embedder_sha256)
        # the one operating-point resolver: an empty gallery gets the default point's FAR 1e-4 floor
        assert parts.thresholds is not None and parts.thresholds.points == table.points
        assert parts.threshold == door_threshold(config.recognition, table, 0, 0).similarity
        assert parts.threshold == table.point_for(1e-4, config.recognition.operating_point).similarity
        assert parts.names == {"p1": "P One"} and parts.index.templates == 0
        assert parts.liveness is None and parts.calibration is None
    finally:
        parts.gallery.close()


def test_recognition_refuses_a_table_for_another_embedder(tmp_path: Path, pipeline: Any) -> None:
    models = tmp_path / "models"
    models.mkdir()
    source = pipeline.manifest.directory
    for item in source.iterdir():
        (models / item.name).symlink_to(item)
    (models / "thresholds.json").unlink()
    data = json.loads((source / "thresholds.json").read_text())
    (models / "thresholds.json").write_text(json.dumps({**data, "embedder_sha256": "0" * 64}))
    config = config_in(tmp_path, models={"dir": str(models)})
    with pytest.raises(ConfigError, match=r"^recognition\.threshold: .*another embedder"):
        build_recognition(config)


def test_sync_is_off_without_trusted_keys(tmp_path: Path) -> None:
    config = config_in(tmp_path, sync={"url": "http://127.0.0.1:9/bundle"})
    assert build_sync(config, "0" * 64, 512, lambda kind, **fields: None, lambda *a: None) is None
