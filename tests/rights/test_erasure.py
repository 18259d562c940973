"""Erasure that really erases: after `facegate gallery remove --purge-events` no byte of the door's gallery,
outbox or journal files (WAL included) names the person, while the door's connections stay open."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from facegate.cli import main
from facegate.errors import GalleryError
from facegate.events import EventEmitter, Outbox
from facegate.gallery.store import Gallery, NewTemplate
from facegate.journal import Journal
from facegate.sync.export import export_bundle
from support.sync_keys import EMB, add_random_persons, keypair

PERSON, NAME = "zed-4711", "Zebulon Quirke"


def files_naming(state: Path) -> list[str]:
    """Which files of ``state`` contain the person's id or name (raw bytes, UTF-8 as SQLite stores text)."""
    found = []
    for path in sorted(state.iterdir()):
        data = path.read_bytes()
        if PERSON.encode() in data or NAME.encode() in data:
            found.append(path.name)
    return found


def test_purge_leaves_no_trace_in_gallery_outbox_journal_or_their_wal(tmp_path: Path) -> None:
    state = tmp_path / "state"
    gallery = Gallery(state / "gallery.db")  # the service's connections, open throughout
    add_random_persons(gallery, 5, emb=EMB)
    rng = np.random.default_rng(1)
    vector = rng.standard_normal(192).astype("<f4")
    gallery.enroll(PERSON, [NewTemplate(vector / np.linalg.norm(vector), {}, "photo")], EMB, name=NAME)
    key, _, _ = keypair()
    base = gallery.version
    add_random_persons(gallery, 2, start=100, emb=EMB)  # a later change, so a delta from `base` is possible
    export_bundle(gallery, key, base=base)
    outbox = Outbox(state / "outbox.db", max_events=100)
    emitter = EventEmitter("door1", outbox)
    journal = Journal(state / "journal.db")
    for _ in range(3):
        event = emitter.emit("access_granted", person_id=PERSON, name=NAME, similarity=0.9)
        assert event is not None
        journal.record(event)
    other = emitter.emit("access_granted", person_id="p00001", name="someone else")
    assert other is not None
    outbox.ack_many([rowid for rowid, _ in outbox.peek(limit=3)])  # the broker has the person's events
    assert len(outbox) == 1
    assert {"gallery.db", "gallery.db-wal", "outbox.db-wal", "journal.db-wal"} & set(files_naming(state))

    out = io.StringIO()
    assert main(["gallery", "remove", "--gallery", str(state / "gallery.db"), PERSON, "--purge-events"],
                out=out, err=io.StringIO()) == 0
    assert files_naming(state) == []
    result = json.loads(out.getvalue())
    assert result["sync_history_erased"] is True and result["outbox_scrubbed"] is True
    assert result["events_purged"] == 3
    # The door goes on: its open connections still read and write, the undelivered event is still there.
    assert [e["name"] for _, e in outbox.peek()] == ["someone else"]
    assert emitter.emit("door_opened") is not None and len(outbox) == 2
    gallery.enroll("new-1", [NewTemplate(vector / np.linalg.norm(vector), {}, "photo")], EMB)
    assert files_naming(state) == []
    # No tombstone is left to say they existed, so a delta from before the removal cannot carry it: refused,
    # and a full snapshot (without the person) is what doors get.
    with pytest.raises(GalleryError, match="full snapshot"):
        export_bundle(gallery, key, base=base)
    full = export_bundle(gallery, key)
    assert full.persons == 8
    for db in (gallery, outbox, journal):
        db.close()
