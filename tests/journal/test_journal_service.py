"""The service writes every event it emits into the journal; a broken journal never costs a grant or an event."""

from __future__ import annotations

import io
import json
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from facegate.access.policy import AccessPolicy
from facegate.cli import main
from facegate.journal import Journal, JournalError
from facegate.service import Service
from support.scenes import enrol, make_config, outbox_rows, pulses, write_frames


def journal_rows(path: Path) -> list[dict[str, Any]]:
    with Journal(path, readonly=True) as j:
        return j.query(limit=None, newest_first=False)


def test_every_emitted_event_is_journaled_with_the_outbox_untouched(tmp_path, photos, astro_templates,  # type: ignore[no-untyped-def]
                                                                   pipeline, factory) -> None:
    frames = write_frames(tmp_path / "frames", photos, [("bg", 2), ("astro", 10), ("hopper", 12), ("bg", 2)])
    config = make_config(tmp_path, frames, None)  # MQTT off: every event stays in the outbox to compare with
    enrol(config, astro_templates, pipeline)
    service = Service(config, pin_factory=factory)
    assert service.run() == 0
    journal = journal_rows(config.journal_path)
    outbox = outbox_rows(config)
    assert [e["event_id"] for e in journal] == [e["event_id"] for e in outbox]  # same events, same order
    assert [{k: v for k, v in e.items() if k != "journal_id"} for e in journal] == outbox
    kinds = [e["type"] for e in journal]
    assert kinds[0] == "service_started" and kinds[-1] == "service_stopped"
    granted = [e for e in journal if e["type"] == "access_granted"]
    assert len(granted) == 1 and granted[0]["person_id"] == "astro" and granted[0]["name"] == "Eileen Collins"
    assert "unknown_face" in kinds and "door_unlocked" in kinds and len(pulses(factory.pin(17))) == 1
    assert service.journal is not None
    status = service.journal.status()  # what the status message carries (the gallery is closed by now)
    assert status["enabled"] and status["errors"] == 0 and status["events"] == len(journal)

    # and the CLI finds them through the config
    toml = tmp_path / "door.toml"
    toml.write_text(f'state_dir = "{config.state_dir}"\n')
    out, err = io.StringIO(), io.StringIO()
    assert main(["events", "--config", str(toml), "--person", "Eileen Collins"], out=out, err=err) == 0
    assert [json.loads(line)["type"] for line in out.getvalue().splitlines()] == ["access_granted"]


def test_a_stop_that_does_not_wait_for_the_broker_still_journals_every_event(tmp_path, photos,  # type: ignore[no-untyped-def]
                                                                             astro_templates, pipeline,
                                                                             factory, monkeypatch) -> None:
    # flush_timeout_seconds = 0 means "do not wait for the broker at stop"; the journal is a local file and
    # must not lose the last events (it used to be stopped with the same 0 s and drop service_stopped).
    frames = write_frames(tmp_path / "frames", photos, [("bg", 2), ("astro", 10), ("bg", 2)])
    config = make_config(tmp_path, frames, None, outbox={"flush_timeout_seconds": 0})
    enrol(config, astro_templates, pipeline)
    record_many = Journal.record_many

    def slow_card(self: Journal, batch: Any) -> Any:  # an SD card that takes 0.3 s per write
        time.sleep(0.3)
        return record_many(self, batch)

    monkeypatch.setattr(Journal, "record_many", slow_card)
    assert Service(config, pin_factory=factory).run() == 0
    monkeypatch.undo()
    journal = journal_rows(config.journal_path)
    assert [e["event_id"] for e in journal] == [e["event_id"] for e in outbox_rows(config)]
    assert journal[-1]["type"] == "service_stopped" and "access_granted" in [e["type"] for e in journal]


def test_denials_are_journaled_with_their_reason(tmp_path, photos, astro_templates, pipeline,  # type: ignore[no-untyped-def]
                                                 factory) -> None:
    frames = write_frames(tmp_path / "frames", photos, [("astro", 10)])
    config = make_config(tmp_path, frames, None)
    enrol(config, astro_templates, pipeline)
    with AccessPolicy(config.gallery_path, config.access) as pol:
        pol.set_lockdown(True)
    Service(config, pin_factory=factory).run()
    with Journal(config.journal_path, readonly=True) as j:
        denied = j.query(types=["access_denied"], person="astro")
        assert len(denied) == 1 and denied[0]["reason"] == "lockdown" and denied[0]["name"] == "Eileen Collins"
        assert j.count(types=["access_granted"]) == 0
    assert pulses(factory.pin(17)) == []


def test_a_full_journal_disk_costs_neither_the_grant_nor_the_outbox_event(tmp_path, photos, astro_templates,  # type: ignore[no-untyped-def]
                                                                        pipeline, factory) -> None:
    frames = write_frames(tmp_path / "frames", photos, [("bg", 2), ("astro", 10), ("bg", 2)])
    config = make_config(tmp_path, frames, None)
    enrol(config, astro_templates, pipeline)
    service = Service(config, pin_factory=factory)
    assert service.journal is not None
    journal = service.journal.journal
    journal._db.execute(f"PRAGMA max_page_count={journal._db.execute('PRAGMA page_count').fetchone()[0] + 2}")
    for pad in (500, 50, 0):  # SQLite's own disk-full: fill the pages it may use, down to the last small gap
        with pytest.raises(JournalError, match="full"):
            for i in range(10_000):
                journal.record({"type": "filler", "ts": "2026-01-01T00:00:00.000Z", "pad": "x" * pad, "i": i})
    seen: list[dict[str, Any]] = []
    service.emitter.add_listener(seen.append)
    assert service.run() == 0
    assert service.journal is not None
    assert [e["type"] for e in seen].count("access_granted") == 1 and len(pulses(factory.pin(17))) == 1
    assert [e["event_id"] for e in outbox_rows(config)] == [e["event_id"] for e in seen]
    status = service.journal.status()
    assert status["errors"] == len(seen) and "full" in status["last_error"]
    assert {e["type"] for e in journal_rows(config.journal_path)} == {"filler"}


def test_a_damaged_journal_file_does_not_stop_the_door(tmp_path, photos, astro_templates, pipeline,  # type: ignore[no-untyped-def]
                                                      factory) -> None:
    frames = write_frames(tmp_path / "frames", photos, [("astro", 10)])
    config = make_config(tmp_path, frames, None)
    enrol(config, astro_templates, pipeline)
    config.journal_path.write_bytes(b"\x00garbage" * 512)
    assert Service(config, pin_factory=factory).run() == 0
    assert "access_granted" in [e["type"] for e in journal_rows(config.journal_path)]
    assert any(".corrupt-" in p.name for p in config.state_dir.iterdir())


def test_journal_off_writes_no_file(tmp_path, photos, factory) -> None:  # type: ignore[no-untyped-def]
    frames = write_frames(tmp_path / "frames", photos, [("bg", 2)])
    config = make_config(tmp_path, frames, None, journal={"enabled": False})
    service = Service(config, pin_factory=factory)
    assert service.journal is None and service.status()["journal"]["enabled"] is False
    service.run()
    assert not config.journal_path.exists()


def test_a_purge_holding_the_journal_locked_does_not_hold_up_the_door(tmp_path, photos, astro_templates,  # type: ignore[no-untyped-def]
                                                                     pipeline, factory) -> None:
    """Another process (a CLI purge) holds the journal's write lock for 3 s while the person walks up: the grant
    is decided and emitted meanwhile, and the journal gets every event once the lock is gone."""
    frames = write_frames(tmp_path / "frames", photos, [("bg", 2), ("astro", 10), ("bg", 2)])
    config = make_config(tmp_path, frames, None)
    enrol(config, astro_templates, pipeline)
    service = Service(config, pin_factory=factory)
    other = sqlite3.connect(config.journal_path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    released: list[float] = []

    def release() -> None:
        time.sleep(3.0)
        released.append(time.time())
        other.execute("COMMIT")

    holder = threading.Thread(target=release)
    holder.start()
    seen: list[dict[str, Any]] = []
    service.emitter.add_listener(seen.append)
    assert service.run() == 0
    holder.join()
    other.close()
    granted = next(e for e in seen if e["type"] == "access_granted")
    granted_at = datetime.fromisoformat(granted["ts"].replace("Z", "+00:00")).timestamp()
    assert granted_at < released[0] - 1.0  # decided while the journal was locked
    assert [e["event_id"] for e in journal_rows(config.journal_path)] == [e["event_id"] for e in seen]
    assert service.journal is not None and service.journal.errors == 0


def test_last_access_survives_a_restart(tmp_path, photos, astro_templates, pipeline, factory) -> None:  # type: ignore[no-untyped-def]
    """HA's "Last access" read unknown after every restart until the next grant: the status now starts with the
    newest grant in the journal."""
    frames = write_frames(tmp_path / "frames", photos, [("bg", 2), ("astro", 10), ("bg", 2)])
    config = make_config(tmp_path, frames, None)
    enrol(config, astro_templates, pipeline)
    first = Service(config, pin_factory=factory)
    assert first.run() == 0
    granted = [e for e in journal_rows(config.journal_path) if e["type"] == "access_granted"]
    assert len(granted) == 1
    factory.reset()
    restarted = Service(config, pin_factory=factory)  # nobody comes by this time
    try:
        status = restarted.status()
        assert status["last_access"] == {k: granted[0][k] for k in ("person_id", "name", "ts", "similarity")}
        assert status["last_access"]["name"] == "Eileen Collins" and status["last_person"] == "Eileen Collins"
    finally:
        restarted.shutdown()
