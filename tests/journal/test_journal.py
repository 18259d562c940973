"""The access journal: retention, indexes, paging, purge, a reader in another process, the CLI."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from facegate.cli import main
from facegate.events.emitter import format_ts
from facegate.journal import Journal, JournalError, JournalWriter, open_journal, parse_time
from facegate.journal.export import write_csv

from tools.wait import wait_for

DAY = 86_400.0


def ev(seq: int, ts: float, type: str = "access_granted", person: str | None = "p1", name: str | None = "Ann",
       **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"event_id": f"e{seq}", "seq": seq, "ts": format_ts(ts), "device_id": "d", "type": type}
    if person is not None:
        event.update(person_id=person, name=name)
    return {**event, **extra}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run_cli(*argv: str | Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------ retention


def test_retention_by_count_keeps_the_newest_and_prunes_in_bounded_batches(tmp_path: Path) -> None:
    now = time.time()
    with Journal(tmp_path / "j.db", max_events=50, prune_batch=20) as j:
        j.record_many([ev(i, now - 1000 + i) for i in range(120)])  # one step: at most 20 of the 70 extra go
        assert len(j) == 100
        steps = []
        while (n := j.prune_step()) > 0:
            steps.append(n)
        assert steps == [20, 20, 10] and len(j) == 50 == j.count()
        assert [e["seq"] for e in j.query(limit=None, newest_first=False)] == list(range(70, 120))
        j.record(ev(120, now))  # at the limit: each new event pushes out exactly the oldest one
        assert len(j) == 50 and j.query(limit=1, newest_first=False)[0]["seq"] == 71


def test_retention_by_age_follows_the_clock(tmp_path: Path) -> None:
    clock = Clock(1_800_000_000.0)
    with Journal(tmp_path / "j.db", retention_days=365, clock=clock) as j:
        j.record_many([ev(1, clock.now - 400 * DAY), ev(2, clock.now - 364 * DAY), ev(3, clock.now - DAY)])
        assert [e["seq"] for e in j.query()] == [3, 2]  # the 400-day-old event went in the same call
        clock.now += 2 * DAY
        assert j.prune_step() == 1 and [e["seq"] for e in j.query()] == [3]
        clock.now += 400 * DAY
        assert j.prune() == 1 and len(j) == 0


def test_limits_lowered_on_reopen_are_reached_step_by_step(tmp_path: Path) -> None:
    now = time.time()
    with Journal(tmp_path / "j.db") as j:
        j.record_many([ev(i, now - 10_000 + i) for i in range(3000)])
    with Journal(tmp_path / "j.db", max_events=1000, prune_batch=500) as j:
        assert len(j) == 3000
        assert j.prune_step() == 500  # never more than one batch per step
        assert j.prune() == 1500 and len(j) == 1000
        assert min(e["seq"] for e in j.query(limit=None)) == 2000


# ------------------------------------------------------------------ queries


@pytest.fixture
def filled(tmp_path: Path) -> Journal:
    base = datetime(2026, 11, 1, 8, 0, tzinfo=UTC).timestamp()
    j = Journal(tmp_path / "j.db", clock=Clock(base + 10 * DAY))
    events = []
    for i in range(300):
        kind = ("access_granted", "access_denied", "unknown_face")[i % 3]
        person = None if kind == "unknown_face" else ("ann", "bob")[i % 2]
        name = {"ann": "Ann Smith", "bob": "Bob Jones", None: None}[person]
        events.append(ev(i, base + i * 600, kind, person, name))  # one every 10 minutes
    j.record_many(events)
    return j


def test_filters_combine_and_bounds_are_half_open(filled: Journal) -> None:
    start = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    assert filled.count() == 300
    assert filled.count(types=["access_granted"]) == 100
    assert filled.count(types=["access_granted", "access_denied"]) == 200
    assert filled.count(person="ann") == filled.count(person="ANN SMITH") == 100  # id, or name ignoring case
    assert filled.count(person="ann", types=["access_denied"]) == 50
    assert filled.count(since=start, until=start + timedelta(hours=1)) == 6  # 08:00 counts, 09:00 does not
    assert filled.count(since=start.timestamp() + 600 * 299) == 1
    rows = filled.query(types=["access_denied"], person="bob", limit=5)
    assert [r["seq"] for r in rows] == [295, 289, 283, 277, 271]
    assert all(r["name"] == "Bob Jones" and isinstance(r["journal_id"], int) for r in rows)
    with pytest.raises(ValueError, match="timezone-aware"):
        filled.query(since=datetime(2026, 11, 1))


def test_each_filter_walks_its_index(filled: Journal) -> None:
    """The plans SQLite chooses: a page of the newest events never sorts or scans the table."""
    plan = " | ".join(filled.query_plan(types=["access_granted"]))
    assert "USING INDEX events_type_ts" in plan and "TEMP B-TREE" not in plan
    plan = " | ".join(filled.query_plan(person="ann"))
    assert "events_person_ts" in plan and "events_name_ts" in plan
    plan = " | ".join(filled.query_plan(since=time.time() - DAY))
    assert "USING INDEX events_ts" in plan and "TEMP B-TREE" not in plan
    plan = " | ".join(filled.query_plan())
    assert "events_ts" in plan and "TEMP B-TREE" not in plan


def test_keyset_paging_visits_every_row_once_even_with_equal_times(tmp_path: Path) -> None:
    now = time.time()
    with Journal(tmp_path / "j.db") as j:
        j.record_many([ev(i, now - 100 + i // 7) for i in range(100)])  # groups of 7 share one timestamp
        pages, cursor = [], None
        while True:
            page = j.query(limit=9, before_id=cursor)
            if not page:
                break
            pages.append([r["seq"] for r in page])
            cursor = page[-1]["journal_id"]
        assert [s for p in pages for s in p] == list(range(99, -1, -1)) and len(pages) == 12
        forward = j.query(limit=30, newest_first=False, after_id=j.query(limit=1, newest_first=False)[0]["journal_id"])
        assert [r["seq"] for r in forward] == list(range(1, 31))
        assert [r["seq"] for r in j.query(limit=5, offset=10)] == [89, 88, 87, 86, 85]
        # a cursor row purged meanwhile: the next page still continues below it
        j.record(ev(500, now + 50, person="gone"))
        gone = j.query(limit=1)[0]
        assert j.purge_person("gone") == 1
        assert [r["seq"] for r in j.query(limit=3, before_id=gone["journal_id"])] == [99, 98, 97]


# ------------------------------------------------------------------ purge and anonymise


def test_purge_and_anonymise_touch_only_that_person(filled: Journal) -> None:
    assert filled.purge_person("bob") == 100
    assert filled.count(person="bob") == 0 and filled.count() == 200 and len(filled) == 200
    assert filled.purge_person("ann", anonymise=True) == 100
    assert filled.count(person="ann") == filled.count(person="Ann Smith") == 0 and filled.count() == 200
    anon = filled.query(types=["access_granted", "access_denied"], limit=None)
    assert len(anon) == 100 and all(r["person_id"] is None and r["name"] is None and r["anonymised"] for r in anon)
    assert filled.purge_person("nobody") == 0
    raw = (filled.path.read_bytes() + filled.path.with_name("j.db-wal").read_bytes()
           if filled.path.with_name("j.db-wal").exists() else filled.path.read_bytes())
    assert b"Bob Jones" not in raw and b"Ann Smith" not in raw  # overwritten on disk, WAL checkpointed


def test_a_purge_by_another_process_is_not_made_up_for_by_pruning_history(tmp_path: Path) -> None:
    """The service's journal counts its rows in memory; a purge from the CLI (another connection) must not leave
    that count high, or retention would delete as many of the oldest events as were purged."""
    now = time.time()
    path = tmp_path / "j.db"
    with Journal(path, max_events=100) as service:
        service.record_many([ev(i, now - 1000 + i, person="bob" if i % 10 == 0 else "ann") for i in range(100)])
        with Journal(path) as cli:
            assert cli.purge_person("bob") == 10
        service.record(ev(100, now))
        assert service.count() == 91 and len(service) == 91
        assert service.query(limit=1, newest_first=False)[0]["seq"] == 1  # the oldest of ann's is still there


def test_a_full_outbox_does_not_stop_the_history(tmp_path: Path) -> None:
    """A door with MQTT off (or a broker away for days) fills its outbox and then drops events from delivery;
    the journal is the door's own history and must keep every one (the drop itself is counted and reported)."""
    from facegate.events.emitter import EventEmitter
    from facegate.events.outbox import Outbox

    emitter = EventEmitter("d", Outbox(tmp_path / "outbox.db", max_events=10))
    writer = JournalWriter(Journal(tmp_path / "j.db"))
    emitter.add_listener(writer.submit)
    writer.start()
    stored = [emitter.emit("access_granted", person_id=f"p{i}", name=None) for i in range(25)]
    assert writer.stop(5.0) == 0
    assert sum(e is not None for e in stored) == 10 and emitter.dropped == 15
    with Journal(tmp_path / "j.db", readonly=True) as journal:
        rows = journal.query(limit=None, newest_first=False)
    assert [r["person_id"] for r in rows] == [f"p{i}" for i in range(25)]
    assert all(r["seq"] is None for r in rows[10:])  # never delivered: no place in the delivery sequence


# ------------------------------------------------------------------ other processes


READER = r"""
import sys, time, json
from facegate.journal import Journal
path, want = sys.argv[1], int(sys.argv[2])
while True:
    try:
        j = Journal(path, readonly=True)
        break
    except Exception:
        time.sleep(0.01)
seen = []
print("ready", flush=True)  # the writer starts only now: a slow interpreter start must not hide the overlap
deadline = time.time() + 60
while time.time() < deadline:
    n = j.count()
    rows = j.query(limit=10)
    assert all(r["type"] == "access_granted" for r in rows)
    seen.append(n)
    if n >= want:
        break
print(json.dumps({"counts": seen}))
"""


def test_a_reader_process_queries_while_the_writer_writes(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal = Journal(path)
    writer = JournalWriter(journal)
    writer.start()
    reader = subprocess.Popen([sys.executable, "-c", READER, str(path), "2000"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert reader.stdout is not None and reader.stdout.readline().strip() == "ready"
    now = time.time()
    for i in range(2000):
        writer.submit(ev(i, now + i / 1000))
        if i % 50 == 0:
            time.sleep(0.01)  # events arrive over time, not in one batch
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err
    counts = json.loads(out)["counts"]
    assert counts == sorted(counts) and counts[-1] == 2000 and len(set(counts)) > 2  # saw it grow
    assert writer.stop() == 0 and writer.errors == 0
    with Journal(path, readonly=True) as j:
        assert j.count() == 2000
        with pytest.raises(JournalError, match="read-only"):
            j.record(ev(1, now))


def test_readonly_open_of_a_missing_journal_says_so(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="no journal here"):
        Journal(tmp_path / "missing.db", readonly=True)
    assert not (tmp_path / "missing.db").exists()


# ------------------------------------------------------------------ failures never reach the emitter


def test_disk_full_is_counted_and_the_writer_keeps_going(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db")
    now = time.time()
    journal.record_many([ev(i, now) for i in range(5)])
    pages = journal._db.execute("PRAGMA page_count").fetchone()[0]
    journal._db.execute(f"PRAGMA max_page_count={pages}")  # SQLite's own way to make the disk full
    writer = JournalWriter(journal)
    writer.start()
    for i in range(5, 505):
        writer.submit(ev(i, now, note="x" * 200))  # submit never raises
    wait_for(lambda: not writer.status()["pending"], 20, interval=0.05, fail=False)  # the asserts below say why
    time.sleep(0.2)
    status = writer.status()
    assert status["errors"] > 0 and "full" in status["last_error"] and status["events"] < 505
    journal._db.execute("PRAGMA max_page_count=1073741823")  # space again: the next events are kept
    writer.submit(ev(999, now))
    assert writer.stop() == 0
    with Journal(tmp_path / "j.db", readonly=True) as j:
        assert j.query(limit=1)[0]["seq"] == 999


def test_a_full_queue_counts_instead_of_blocking(tmp_path: Path) -> None:
    writer = JournalWriter(Journal(tmp_path / "j.db"), queue_events=10)  # not started: nothing drains it
    started = time.monotonic()
    for i in range(25):
        writer.submit(ev(i, time.time()))
    assert time.monotonic() - started < 0.5 and writer.errors == 15
    assert writer.stop() == 0  # the 10 queued are written on stop
    with Journal(tmp_path / "j.db", readonly=True) as j:
        assert j.count() == 10


def test_a_damaged_journal_is_moved_aside_and_a_new_one_started(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    path.write_bytes(b"this is not a database" * 100)
    journal = open_journal(path, 1000, 365)
    journal.record(ev(1, time.time()))
    assert journal.count() == 1
    journal.close()
    aside = [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1 and (tmp_path / aside[0]).read_bytes().startswith(b"this is not")


# ------------------------------------------------------------------ time specs


def test_time_specs() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert parse_time("24h", now) == now - timedelta(hours=24)
    assert parse_time("7d", now) == now - timedelta(days=7)
    assert parse_time("30m", now) == now - timedelta(minutes=30)
    assert parse_time("2w", now) == now - timedelta(weeks=2)
    assert parse_time("now", now) == now
    assert parse_time("2026-12-01T08:00Z") == datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    assert parse_time("2026-12-01T09:00+01:00") == datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    local = parse_time("2026-12-01")
    assert local.tzinfo is not None and local.replace(tzinfo=None) == datetime(2026, 12, 1)
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_time("yesterday")
    with pytest.raises(ValueError, match="too far"):  # argparse reports a ValueError; an OverflowError crashed
        parse_time("99999999999w")


# ------------------------------------------------------------------ facegate events


@pytest.fixture
def door(tmp_path: Path) -> Path:
    """A door config whose journal holds a known day: Ann and Bob granted, a stranger, a denial."""
    state = tmp_path / "state"
    config = tmp_path / "door.toml"
    config.write_text(f'state_dir = "{state}"\n[journal]\nretention_days = 30\n')
    now = time.time()
    with Journal(state / "journal.db") as j:
        j.record_many([
            ev(1, now - 3 * DAY, "access_granted", "ann", "Ann"),
            ev(2, now - 5 * 3600, "access_granted", "bob", "=HYPERLINK(\"http://x\")"),
            ev(3, now - 2 * 3600, "unknown_face", None, None, best_similarity=0.21),
            ev(4, now - 3600, "access_denied", "ann", "Ann", reason="schedule", similarity=0.71),
            ev(5, now - 60, "door_locked", None, None),
        ])
    return config


def test_events_cli_filters_and_orders(door: Path) -> None:
    code, out, _ = run_cli("events", "--config", door)
    assert code == 0 and [json.loads(line)["seq"] for line in out.splitlines()] == [1, 2, 3, 4, 5]
    code, out, _ = run_cli("events", "--config", door, "--since", "24h", "--type", "access_granted,access_denied")
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [2, 4]
    code, out, _ = run_cli("events", "--config", door, "--person", "ann", "--type", "access_denied",
                           "--type", "access_granted")
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [1, 4]
    until = format_ts(time.time() - 2.5 * 3600)
    code, out, _ = run_cli("events", "--config", door, "--since", "4d", "--until", until)
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [1, 2]
    code, out, err = run_cli("events", "--config", door, "--limit", "2", "--newest-first")
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [5, 4] and "newest 2 of 5" in err


def test_events_cli_csv(door: Path) -> None:
    code, out, _ = run_cli("events", "--config", door, "--csv", "--since", "1d")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["seq"] for r in rows] == ["2", "3", "4", "5"]
    assert rows[0]["name"].startswith("'=HYPERLINK")  # a spreadsheet would run it as a formula
    assert rows[2]["reason"] == "schedule" and rows[2]["similarity"] == "0.71" and rows[2]["person_id"] == "ann"
    assert json.loads(rows[1]["details"]) == {"best_similarity": 0.21}
    assert rows[3]["person_id"] == "" and rows[3]["details"] == ""


def test_events_cli_bad_input(door: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        run_cli("events", "--config", door, "--since", "last tuesday")
    assert exc.value.code == 2
    other = tmp_path / "other.toml"
    other.write_text(f'state_dir = "{tmp_path / "nowhere"}"\n[journal]\nenabled = false\n')
    code, _, err = run_cli("events", "--config", other)
    assert code == 2 and "no journal here" in err and "enabled = false" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[journal]\nmax_event = 5\n")
    code, _, err = run_cli("events", "--config", bad)
    assert code == 78 and "journal.max_event: unknown key" in err


def test_events_cli_in_another_process_while_a_writer_holds_the_journal(door: Path, tmp_path: Path) -> None:
    path = tmp_path / "state" / "journal.db"
    writer = JournalWriter(Journal(path))
    writer.start()
    stop = threading.Event()

    def keep_writing() -> None:
        i = 100
        while not stop.is_set():
            writer.submit(ev(i, time.time(), "access_granted", "carl", "Carl"))
            i += 1
            time.sleep(0.002)

    thread = threading.Thread(target=keep_writing)
    thread.start()
    try:
        proc = subprocess.run([sys.executable, "-m", "facegate.cli", "events", "--config", str(door), "--person",
                               "carl", "--limit", "0"], capture_output=True, text=True, timeout=120)
    finally:
        stop.set()
        thread.join()
        writer.stop()
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) > 0 and all(json.loads(x)["person_id"] == "carl"
                                                      for x in proc.stdout.splitlines())


# ------------------------------------------------------------------ gallery remove --purge-events


def _gallery_with(path: Path, *ids: str) -> None:
    import numpy as np
    from facegate.gallery.store import Gallery, NewTemplate

    with Gallery(path) as g:
        for pid in ids:
            vec = np.random.default_rng(len(pid)).normal(size=192).astype(np.float32)
            g.enroll(pid, [NewTemplate(vec / np.linalg.norm(vec), {})], "sha")


def test_gallery_remove_purges_or_anonymises_journal_entries(door: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    gallery = state / "gallery.db"
    _gallery_with(gallery, "ann", "bob")
    code, out, _ = run_cli("gallery", "remove", "--gallery", gallery, "ann", "--purge-events")  # beside the gallery
    assert code == 0
    result = json.loads(out)
    assert result["templates_removed"] == 1 and result["events_purged"] == 2
    code, out, _ = run_cli("gallery", "remove", "--gallery", gallery, "bob", "--anonymise-events", "--config", door)
    assert code == 0 and json.loads(out)["events_anonymised"] == 1
    with Journal(state / "journal.db", readonly=True) as j:
        rows = j.query(limit=None)
        assert [r["seq"] for r in rows] == [5, 3, 2]
        assert rows[2]["person_id"] is None and rows[2]["name"] is None and rows[2]["anonymised"] is True
    # removed earlier without the flag: the journal can still be purged afterwards
    code, out, err = run_cli("gallery", "remove", "--gallery", gallery, "bob", "--purge-events",
                             "--journal", state / "journal.db")
    assert code == 0 and json.loads(out)["events_purged"] == 0 and "purging their journal entries only" in err


def test_gallery_remove_with_purge_but_no_journal_removes_nothing(tmp_path: Path) -> None:
    gallery = tmp_path / "g" / "gallery.db"
    gallery.parent.mkdir()
    _gallery_with(gallery, "ann")
    code, _, err = run_cli("gallery", "remove", "--gallery", gallery, "ann", "--purge-events")
    assert code == 2 and "no access journal" in err and "nothing was removed" in err
    code, out, _ = run_cli("gallery", "list", "--gallery", gallery)
    assert json.loads(out.splitlines()[0])["id"] == "ann"
    with pytest.raises(SystemExit) as exc:  # one or the other, not both
        run_cli("gallery", "remove", "--gallery", gallery, "ann", "--purge-events", "--anonymise-events")
    assert exc.value.code == 2


def test_write_csv_quotes_formulas_only_in_text() -> None:
    out = io.StringIO()
    write_csv([{"ts": "t", "type": "x", "name": "-1", "similarity": -0.5, "person_id": "@p"}], out)
    row = next(iter(csv.DictReader(io.StringIO(out.getvalue()))))
    assert row["name"] == "'-1" and row["similarity"] == "-0.5" and row["person_id"] == "'@p"


@pytest.mark.parametrize("name", [" =HYPERLINK(\"http://x\")", "  +1", "\u00a0=1+1", "\u200b@SUM(A1)", "\ufeff-2",
                                  " \t=1", "\u3000=1", "\uff1d1+1", "\r=1", "\n+1"])
def test_write_csv_quotes_formulas_behind_blanks(name: str) -> None:
    """Spreadsheets trim leading blanks on import: a formula behind them is still a formula."""
    out = io.StringIO(newline="")
    write_csv([{"ts": "t", "type": "access_granted", "name": name}], out)
    row = next(iter(csv.DictReader(io.StringIO(out.getvalue(), newline=""))))
    assert row["name"] == "'" + name


@pytest.mark.parametrize("name", ["Ann  =", " Ann", "Anne-Marie", "", "a@b"])
def test_write_csv_leaves_ordinary_names_alone(name: str) -> None:
    out = io.StringIO()
    write_csv([{"ts": "t", "type": "access_granted", "name": name}], out)
    row = next(iter(csv.DictReader(io.StringIO(out.getvalue()))))
    assert row["name"] == name


def test_sqlite_file_is_wal_and_owner_only(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db") as j:
        j.record(ev(1, time.time()))
        assert all((tmp_path / f"j.db{s}").stat().st_mode & 0o077 == 0 for s in ("", "-wal", "-shm"))
    db = sqlite3.connect(tmp_path / "j.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_a_lock_held_past_the_busy_timeout_is_waited_out_not_counted_as_lost(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    writer = JournalWriter(Journal(path, busy_timeout_ms=300))
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # a purge in another process, longer than one busy timeout
    writer.start()
    writer.submit(ev(1, time.time()))
    time.sleep(0.5)
    other.execute("COMMIT")
    other.close()
    assert writer.stop() == 0 and writer.errors == 0
    with Journal(path, readonly=True) as j:
        assert j.count() == 1
