"""The durable outbox: every event is written here before anyone tries to send it.

facegate must never lose an access event, so the MQTT side never sends from memory: an event is first committed
to this SQLite table, and a row is deleted only once the broker has acknowledged it (PUBACK). A crash, a power
cut or a broker outage therefore delays events but does not drop them.

Durability choices (SQLite in WAL mode):

* ``append`` commits with ``synchronous=FULL``: the WAL is fsynced before the call returns, so an event survives
  a power cut the moment ``append`` returns. A Raspberry Pi losing power is an everyday failure, and events are
  rare (a few per visit), so one fsync per event is an acceptable price.
* ``next_seq`` and ``ack`` commit with ``synchronous=NORMAL`` (no fsync of their own). Losing one of those commits
  on power loss is harmless: the WAL is sequential, so the next ``append`` (FULL) makes every earlier frame durable,
  including the counter step that produced that event's ``seq``; a lost counter step therefore only reissues a
  number no durable event carries. A lost ``ack`` makes an already delivered event be sent again, which the
  delivery contract (at-least-once, consumers dedupe by ``event_id``) allows. This halves the fsyncs per event.

Row ids use ``AUTOINCREMENT`` so they are never reused, even after the table has been emptied: the publisher
keeps a cursor ("sent everything up to row id N") and relies on new events always getting larger ids.

The class is thread-safe: one connection guarded by one lock (the frame loop appends while the MQTT pump acks).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from facegate.base.private_files import private_sqlite
from facegate.errors import FacegateError
from facegate.privacy.seal import Sealer
from facegate.privacy.store import Progress, bind, scrub, seal_in_one_transaction

__all__ = ["Outbox", "OutboxError", "OutboxFull", "scrub_delivered"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO counters (name, value) VALUES ('seq', 0);
"""


class OutboxError(FacegateError):
    """The outbox database cannot be opened or written (the message names the file)."""


class OutboxFull(OutboxError):
    """``max_events`` events are pending: the new event was refused, nothing was trimmed."""

    def __init__(self, path: Path, max_events: int) -> None:
        super().__init__(f"{path}: outbox full ({max_events} events pending); event refused")
        self.max_events = max_events


class Outbox:
    """A persistent FIFO of JSON events with a persistent sequence counter.

    ``max_events`` bounds the disk used while the broker is unreachable; when it is reached ``append`` raises
    :class:`OutboxFull` instead of silently discarding old events, so the caller can count and report the loss.
    """

    def __init__(self, path: Path, max_events: int, *, clock: Callable[[], float] = time.monotonic,
                 sealer: Sealer | None = None, progress: Progress | None = None) -> None:
        """``sealer``: events are stored sealed (facegate.privacy); a plain outbox is sealed in place at open,
        in one transaction. A sealed outbox opened without one finds the key it recorded."""
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self._path = Path(path)
        self._max_events = max_events
        self._clock = clock
        # (time, highest row id appended by then), oldest first: enough to tell which rows have waited how long
        # (row ids grow with time). Pruned by waiting_longer_than to the marks it can still need.
        self._marks: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()
        try:
            private_sqlite(self._path)  # names of people: owner-only, -wal/-shm included
            # isolation_level=None: we issue BEGIN/COMMIT ourselves so each method is exactly one transaction.
            self._db = sqlite3.connect(str(self._path), timeout=10.0, isolation_level=None, check_same_thread=False)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(f"{self._path}: cannot switch to WAL journal mode (got {mode!r})")
            self._db.execute("PRAGMA synchronous=FULL")
            # Privacy: a delivered (deleted) event's names are zeroed in the file, not left in free space.
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.executescript(_SCHEMA)
            self._sealer, plain = bind(self._db, self._path, sealer)
            if plain:
                self._seal_all(progress)
            if self._sealer is not None:
                scrub(self._db, progress)
            self._count: int = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            top = self._db.execute("SELECT MAX(id) FROM outbox").fetchone()[0]
            if top is not None:  # left by an earlier run: waiting since (at least) now
                self._marks.append((clock(), int(top)))
        except sqlite3.Error as exc:
            raise OutboxError(f"{self._path}: cannot open outbox database: {exc}") from exc
        except OSError as exc:
            raise OutboxError(f"{self._path}: cannot create outbox directory: {exc}") from exc

    def _seal_all(self, progress: Progress | None) -> None:
        """Seal the pending events of a plain outbox and record the key, in one transaction."""
        db = self._db

        def rewrite() -> None:
            rows = db.execute("SELECT id, event FROM outbox WHERE typeof(event) = 'text'").fetchall()
            db.executemany("UPDATE outbox SET event = ? WHERE id = ?",
                           [(self._seal(text), rowid) for rowid, text in rows])
            if progress:
                progress("events")

        assert self._sealer is not None
        seal_in_one_transaction(db, self._sealer, progress, rewrite)

    def _seal(self, text: str) -> str | bytes:
        return text if self._sealer is None else self._sealer.seal(text.encode(), "outbox.event")

    def _open(self, stored: str | bytes) -> dict[str, Any]:
        if self._sealer is None or isinstance(stored, str):
            return dict(json.loads(stored))
        return dict(json.loads(self._sealer.open(stored, "outbox.event")))

    @property
    def path(self) -> Path:
        return self._path

    @property
    def max_events(self) -> int:
        return self._max_events

    def __len__(self) -> int:
        """Events appended and not yet acknowledged (kept in memory: no query per call)."""
        with self._lock:
            return self._count

    def append(self, event: dict[str, Any]) -> None:
        """Store ``event`` durably (fsynced) before returning.

        Raises :class:`OutboxFull` when ``max_events`` are pending, ``ValueError``/``TypeError`` when the event
        is not strict JSON (NaN and infinities are refused: many JSON parsers reject them).
        """
        text = json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        with self._lock:
            if self._count >= self._max_events:
                raise OutboxFull(self._path, self._max_events)
            try:
                rowid = self._db.execute("INSERT INTO outbox (event) VALUES (?)", (self._seal(text),)).lastrowid
            except sqlite3.Error as exc:
                raise OutboxError(f"{self._path}: cannot append event: {exc}") from exc
            self._count += 1
            if rowid is not None:
                self._marks.append((self._clock(), int(rowid)))

    def waiting_longer_than(self, seconds: float) -> int:
        """Events appended more than ``seconds`` ago and still not acknowledged: a backlog, not the event
        that is in flight right now (which the broker acknowledges within milliseconds)."""
        cutoff = self._clock() - seconds
        with self._lock:
            marks = self._marks
            while len(marks) >= 2 and marks[1][0] <= cutoff:
                marks.popleft()  # the newest mark at or before the cutoff is all that is needed of the past
            if self._count == 0 or not marks or marks[0][0] > cutoff:
                return 0
            try:
                row = self._db.execute("SELECT COUNT(*) FROM outbox WHERE id <= ?", (marks[0][1],)).fetchone()
            except sqlite3.Error:
                return self._count  # cannot tell: everything pending counts
            return int(row[0])

    def peek(self, limit: int = 100, after: int = 0) -> list[tuple[int, dict[str, Any]]]:
        """Up to ``limit`` pending events with row id greater than ``after``, oldest first, as (rowid, event)."""
        if limit <= 0:
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT id, event FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
            ).fetchall()
        return [(int(rowid), self._open(stored)) for rowid, stored in rows]

    def ack(self, rowid: int) -> None:
        """Forget one delivered event; unknown row ids are ignored (a duplicate PUBACK is not an error)."""
        self.ack_many((rowid,))

    def ack_many(self, rowids: Iterable[int]) -> int:
        """Forget several delivered events in one transaction; returns how many rows were actually removed."""
        ids = [(int(r),) for r in rowids]
        if not ids:
            return 0
        with self._lock:
            with self._unsynced_transaction("cannot acknowledge events"):
                before = self._db.total_changes
                self._db.executemany("DELETE FROM outbox WHERE id = ?", ids)
                removed = self._db.total_changes - before
            self._count -= removed  # after COMMIT: a failed ack leaves the count as it was
        return removed

    def next_seq(self) -> int:
        """Consume and return the next value of the persistent counter (1, 2, 3, ... across restarts).

        Every call returns a larger number than any call before it, in this process or an earlier one, as long
        as at least one event appended after the earlier call was made durable (see the module docstring). A gap
        in ``seq`` seen by a consumer means an event was refused (outbox full) or never appended.
        """
        # Not UPDATE ... RETURNING: that needs SQLite 3.35, older than some Pi OS images ship.
        with self._lock, self._unsynced_transaction("cannot advance the sequence counter"):
            self._db.execute("UPDATE counters SET value = value + 1 WHERE name = 'seq'")
            row = self._db.execute("SELECT value FROM counters WHERE name = 'seq'").fetchone()
        return int(row[0])

    @contextmanager
    def _unsynced_transaction(self, what: str) -> Iterator[None]:
        """One IMMEDIATE transaction committed without its own fsync (see the module docstring for why that is safe).

        The caller holds ``self._lock``; any SQLite failure becomes an :class:`OutboxError` saying ``what`` failed.
        """
        self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite rolls back by itself on some errors (SQLITE_FULL): a second ROLLBACK would then raise
                # "no transaction is active" and hide the real error (found by the full-disk fault test).
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise OutboxError(f"{self._path}: {what}: {exc}") from exc
        finally:
            self._db.execute("PRAGMA synchronous=FULL")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def scrub_delivered(path: Path, busy_timeout_ms: int = 10_000) -> bool:
    """Erasure: leave nothing of delivered events in ``path`` or its WAL; False if the WAL could not be cleared.

    Delivered rows are deleted (zeroed with ``secure_delete`` by the service's connection), but the WAL keeps
    the page images with their names until a checkpoint, and a file from before ``secure_delete`` may still
    hold them in free pages. So: ``VACUUM`` (rewrites the file from the live rows) and a ``TRUNCATE``
    checkpoint (the WAL back to zero bytes). Events not yet delivered stay: they are still to be sent. Safe
    while the service runs (it waits for the lock, as for any writer).
    """
    db = sqlite3.connect(str(path), timeout=busy_timeout_ms / 1000, isolation_level=None)
    try:
        db.execute("PRAGMA secure_delete=ON")
        db.execute("VACUUM")
        row = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return row is not None and int(row[0]) == 0
    except sqlite3.Error as exc:
        raise OutboxError(f"{path}: cannot clear delivered events: {exc}") from exc
    finally:
        db.close()
