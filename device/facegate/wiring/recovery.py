"""Start-up checks of the door's SQLite files, and what happens when one is damaged (issue 13).

An SD card that lost power mid-write, a full disk, or a bad copy can leave a database truncated or
corrupt while the door is stopped. Start-up then must say exactly what is wrong and what to do, and lose
nothing:

- the **gallery** (who may enter) is never guessed at: a damaged gallery stops the start with the file, the
  SQLite error and the ways to recover (restore a backup, re-sync a signed bundle, re-enrol);
- the **outbox** (events not yet delivered) is *quarantined*: renamed aside as
  ``outbox.db.corrupt-<UTC time>`` (with its ``-wal``/``-shm`` files), every event still readable in it is
  copied into a fresh outbox (same ``event_id``, same ``seq``: consumers dedupe as usual), the fresh
  outbox's sequence continues after the highest ``seq`` recovered, and the service reports an
  ``outbox_quarantined`` event on the new outbox naming the file, the problem and how many events were
  recovered. The door keeps working; the quarantined file stays for an operator (``sqlite3 FILE .recover``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from facegate.errors import GalleryError
from facegate.events.outbox import Outbox, OutboxError

__all__ = ["Quarantine", "check_gallery", "integrity_problem", "open_outbox"]

log = logging.getLogger(__name__)

SIDE_FILES = ("-wal", "-shm")


def integrity_problem(path: Path) -> str | None:
    """None when ``path`` is absent or a sound SQLite database, else SQLite's own description of the damage.

    ``PRAGMA quick_check`` reads every page (milliseconds for a door's files) and catches truncation and
    corruption that opening the file alone does not.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(str(path), timeout=10.0)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        rows = db.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        db.close()
    problems = [str(r[0]) for r in rows if str(r[0]) != "ok"]
    return "; ".join(problems[:3]) if problems else None


def check_gallery(path: Path) -> None:
    """Raise :class:`GalleryError` saying what is wrong and what to do when the gallery file is damaged."""
    problem = integrity_problem(path)
    if problem is None:
        return
    raise GalleryError(
        f"gallery {path} is damaged ({problem}); the door does not start on a damaged gallery. To recover: "
        f"move it aside (mv {path} {path}.bad), then restore a backup to {path}, or start with no gallery file and "
        "re-sync it (a signed bundle by sync.topic/sync.url, or 'facegate gallery apply BUNDLE'), or re-enrol "
        "('facegate enroll'). 'sqlite3 FILE .recover' may rescue rows from the damaged copy."
    )


@dataclass(frozen=True)
class Quarantine:
    """What :func:`open_outbox` did with a damaged outbox (the ``outbox_quarantined`` event's fields)."""

    path: str  # where the damaged file now is
    problem: str
    recovered: int  # events copied into the new outbox
    unreadable: bool  # True when some rows could not be read (they may still be in the file)

    def as_event(self) -> dict[str, object]:
        return {"quarantined_to": self.path, "problem": self.problem, "recovered": self.recovered,
                "unreadable_rest": self.unreadable,
                "action": f"events not recovered may still be in {self.path}: try 'sqlite3 {self.path} .recover'"}


def _salvage(path: Path, max_events: int) -> tuple[list[dict[str, object]], bool]:
    """Every event still readable from a damaged outbox, oldest first; (events, some_rows_unreadable).

    Tried on the file as it is, then on a copy whose header is made to match a truncated file's real length
    (SQLite refuses a file shorter than its header says, even for pages that are all there).
    """
    events, damaged = _read_rows(path, max_events)
    if events or not path.exists():
        return events, damaged
    copy = path.with_name(path.name + ".salvage")
    try:
        data = bytearray(path.read_bytes())
        if len(data) >= 100 and data[:16] == b"SQLite format 3\x00":
            page = int.from_bytes(data[16:18], "big")
            page = 65536 if page == 1 else page
            if page >= 512 and int.from_bytes(data[28:32], "big") * page > len(data):
                data[28:32] = (len(data) // page).to_bytes(4, "big")
                copy.write_bytes(data)
                events, _ = _read_rows(copy, max_events)
    except OSError as exc:  # e.g. no room for the copy: what was read directly stands
        log.warning("outbox salvage copy failed: %s", exc)
    finally:
        copy.unlink(missing_ok=True)
    return events, True


def _read_rows(path: Path, max_events: int) -> tuple[list[dict[str, object]], bool]:
    """A full scan, or, when it hits damage, each row id looked up on its own (a lookup only reads the pages
    on its path, so rows before and after a damaged page are still found)."""
    rows: dict[int, str] = {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    except sqlite3.Error:
        return [], True
    damaged = False
    try:
        try:
            rows = dict(db.execute("SELECT id, event FROM outbox ORDER BY id").fetchall())
        except sqlite3.DatabaseError:
            damaged = True
            try:
                top = int(db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()[0])
            except (sqlite3.DatabaseError, TypeError):
                top = max_events
            for rowid in range(1, min(top, 10 * max_events) + 1):
                try:
                    found = db.execute("SELECT event FROM outbox WHERE id = ?", (rowid,)).fetchone()
                except sqlite3.DatabaseError:
                    continue
                if found is not None:
                    rows[rowid] = found[0]
    finally:
        db.close()
    events: list[dict[str, object]] = []
    for _rowid, text in sorted(rows.items()):
        try:
            event = json.loads(text)
        except (TypeError, ValueError):
            damaged = True
            continue  # one damaged row: the rest is still worth having
        if isinstance(event, dict) and "event_id" in event:
            events.append(event)
    return events, damaged


def _quarantine_name(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    return target


def open_outbox(path: Path, max_events: int) -> tuple[Outbox, Quarantine | None]:
    """The outbox at ``path``; a damaged one is quarantined and replaced (see the module docstring).

    Errors that are not damage (a read-only or full file system) still raise :class:`OutboxError`.
    """
    path = Path(path)
    problem = integrity_problem(path)
    if problem is None:
        try:
            return Outbox(path, max_events), None
        except OutboxError as exc:
            if not isinstance(exc.__cause__, sqlite3.DatabaseError) or isinstance(exc.__cause__,
                                                                                   sqlite3.OperationalError):
                raise
            problem = str(exc.__cause__)
    target = _quarantine_name(path)
    path.rename(target)
    for suffix in SIDE_FILES:
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))
    events, stopped = _salvage(target, max_events)
    log.error("outbox %s is damaged (%s): moved to %s, %d events recovered", path, problem, target, len(events))
    Outbox(path, max_events).close()  # the schema, so the counter can be set before first use
    top = max((seq for e in events if isinstance(seq := e.get("seq"), int)), default=0)
    with sqlite3.connect(str(path)) as db:
        db.execute("UPDATE counters SET value = MAX(value, ?) WHERE name = 'seq'", (top,))
    db.close()
    outbox = Outbox(path, max_events)
    for event in events[:max_events]:
        outbox.append(event)
    return outbox, Quarantine(str(target), problem, min(len(events), max_events), stopped)
