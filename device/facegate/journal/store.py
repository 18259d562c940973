"""The access journal's SQLite store: local history of every event, kept apart from the outbox.

The outbox forgets an event once the broker has it (delivery); the journal remembers it (history) so the door
itself can answer "who came in" after the network has taken the events away. Separate files, separate
lifetimes: a full journal never refuses an event to the outbox, and a purged outbox never empties the history.

Storage choices:

* WAL, ``synchronous=NORMAL``: a crash loses nothing, a power cut may lose the last few journal rows but never
  corrupts the file. The outbox (fsynced per event) is the no-loss path; the journal is the searchable copy.
* Rows keep the event's JSON as emitted plus the columns that are searched: ``ts_ms`` (event time, UTC
  milliseconds), ``type``, ``person_id`` and ``name``, each indexed together with ``ts_ms`` so a filtered page
  of the newest events is an index walk, not a sort of the table.
* ``AUTOINCREMENT`` ids are never reused, so a paging cursor (a row's ``journal_id``) stays meaningful while
  old rows are pruned.
* ``secure_delete``: pruned and purged rows (names, person ids) are overwritten in the file, and a purge
  checkpoints the WAL so the old page images go too.
* The file is created owner-only (0600): names and who came when are personal data.
* Retention is enforced in bounded batches (:meth:`Journal.prune_step`), so no single call can take long.
* With a sealer (facegate.privacy, docs/privacy.md) the event is stored sealed (AES-GCM, bound to its time and
  type) and ``person_id`` and ``name`` hold keyed hashes (the name's of its case-folded form): the person
  filter and its index work as before, the file holds no name. Time and type stay plain.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from facegate.base.private_files import private_sqlite
from facegate.errors import FacegateError
from facegate.privacy.seal import Sealer
from facegate.privacy.store import Progress, bind, scrub, seal_in_one_transaction

__all__ = ["DEFAULT_MAX_EVENTS", "DEFAULT_RETENTION_DAYS", "Journal", "JournalError", "TimeBound"]

log = logging.getLogger(__name__)

DEFAULT_MAX_EVENTS = 1_000_000
DEFAULT_RETENTION_DAYS = 365.0
SCHEMA_VERSION = 1
PRUNE_BATCH = 500

#: A time bound: an aware datetime, or seconds since the epoch (UTC).
TimeBound = dt.datetime | float | int

# The person filter matches the id exactly or the name case-insensitively (a site manager types names).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms INTEGER NOT NULL,
    type TEXT NOT NULL,
    person_id TEXT,
    name TEXT COLLATE NOCASE,
    event TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts_ms);
CREATE INDEX IF NOT EXISTS events_type_ts ON events(type, ts_ms);
CREATE INDEX IF NOT EXISTS events_person_ts ON events(person_id, ts_ms);
CREATE INDEX IF NOT EXISTS events_name_ts ON events(name, ts_ms);
"""


class JournalError(FacegateError):
    """The journal cannot be opened, read or written (the message names the file)."""


def event_ts_ms(event: dict[str, Any], fallback: float) -> int:
    """The event's own ``ts`` (ISO-8601, as the emitter writes it) in UTC milliseconds; ``fallback`` if absent."""
    ts = event.get("ts")
    if isinstance(ts, str):
        try:
            stamp = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=dt.UTC)
            return round(stamp.timestamp() * 1000)
    return round(fallback * 1000)


def _bound_ms(value: TimeBound | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("journal time bounds must be timezone-aware datetimes")
        return round(value.timestamp() * 1000)
    return round(float(value) * 1000)


def _text_or_none(value: object) -> str | None:
    return None if value is None else str(value)


class Journal:
    """The journal file: ``record`` events, ``query``/``count`` them, ``purge_person``, prune by count and age.

    Thread-safe (one connection, one lock). Several processes may open the same file: the service writes, the
    CLI and the web console read (``readonly=True`` never writes and never creates the file) or purge.
    """

    def __init__(
        self,
        path: Path | str,
        max_events: int = DEFAULT_MAX_EVENTS,
        retention_days: float = DEFAULT_RETENTION_DAYS,
        *,
        readonly: bool = False,
        clock: Callable[[], float] = time.time,
        prune_batch: int = PRUNE_BATCH,
        busy_timeout_ms: int = 10_000,
        sealer: Sealer | None = None,
        progress: Progress | None = None,
    ) -> None:
        """``sealer``: seal the events (a plain journal is sealed in place, in one transaction, unless read-only);
        a sealed journal opened without one finds the key it recorded (facegate.privacy)."""
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        if retention_days <= 0:
            raise ValueError("retention_days must be positive")
        self.path = Path(path)
        self.max_events = max_events
        self.retention_days = float(retention_days)
        self.readonly = readonly
        self._clock = clock
        self._prune_batch = max(1, prune_batch)
        self._lock = threading.Lock()
        try:
            if readonly:
                if not self.path.is_file():
                    raise JournalError(f"{self.path}: no journal here (the service creates it when it runs "
                                       "with [journal] enabled)")
                self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                           isolation_level=None, check_same_thread=False)
            else:
                private_sqlite(self.path)  # personal data: owner-only (SQLite gives -wal/-shm the same mode)
                self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: cannot open journal: {exc}") from None
        except OSError as exc:
            raise JournalError(f"{self.path}: cannot create the journal's directory: {exc}") from None
        try:
            self._db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            if readonly:
                if self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'events'").fetchone() is None:
                    raise JournalError(f"{self.path}: not a facegate journal (no events table)")
            else:
                mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise JournalError(f"{self.path}: cannot switch to WAL journal mode (got {mode!r})")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute("PRAGMA secure_delete=ON")
                self._db.executescript(_SCHEMA)
                if self._db.execute("PRAGMA user_version").fetchone()[0] == 0:
                    self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self.sealer, plain = bind(self._db, self.path, sealer)
            if plain and readonly:
                self.sealer = None  # a reader does not migrate: the plain file is read as it is
            elif plain:
                self._seal_all(progress)
            if self.sealer is not None and not readonly:
                scrub(self._db, progress)
            self._count: int = int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
            self._data_version = self._db.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error as exc:
            self._db.close()
            raise JournalError(f"{self.path}: cannot use journal: {exc}") from None
        except BaseException:
            self._db.close()
            raise

    # ------------------------------------------------------------------ sealing

    def _row(self, event: dict[str, Any], ts_ms: int, text: str) -> tuple[int, str, Any, Any, Any]:
        """The stored (ts_ms, type, person_id, name, event) of one event."""
        kind = str(event.get("type", ""))
        person, name = _text_or_none(event.get("person_id")), _text_or_none(event.get("name"))
        if self.sealer is None:
            return ts_ms, kind, person, name, text
        return (ts_ms, kind, None if person is None else self._person_key(person),
                None if name is None else self._name_key(name),
                self.sealer.seal(text.encode(), f"events.event|{ts_ms}|{kind}"))

    def _person_key(self, person: str) -> str:
        return person if self.sealer is None else self.sealer.index(f"person:{person}")

    def _name_key(self, name: str) -> str:
        return name if self.sealer is None else self.sealer.index(f"name:{name.casefold()}")

    def _event_of(self, ts_ms: int, kind: str, stored: bytes | str) -> dict[str, Any]:
        if self.sealer is None or isinstance(stored, str):
            return dict(json.loads(stored))
        return dict(json.loads(self.sealer.open(stored, f"events.event|{ts_ms}|{kind}")))

    def _seal_all(self, progress: Progress | None) -> None:
        """Seal every row of a plain journal and record the key, in one transaction (a crash keeps it plain)."""
        db = self._db

        def rewrite() -> None:
            top = 0  # in chunks by id, never a cursor over rows being rewritten
            while batch := db.execute("SELECT id, ts_ms, event FROM events WHERE id > ? ORDER BY id LIMIT 5000",
                                      (top,)).fetchall():
                updates = [(*self._row(json.loads(text), ts, text)[2:], rowid) for rowid, ts, text in batch]
                db.executemany("UPDATE events SET person_id = ?, name = ?, event = ? WHERE id = ?", updates)
                top = batch[-1][0]
            if progress:
                progress("events")

        assert self.sealer is not None
        seal_in_one_transaction(db, self.sealer, progress, rewrite)

    # ------------------------------------------------------------------ writing

    @property
    def prune_batch(self) -> int:
        """Rows one pruning step deletes at most, per limit."""
        return self._prune_batch

    def __len__(self) -> int:
        """Rows in the journal as this connection last saw them (kept in memory by a writer: no query per call)."""
        return self._count

    def record(self, event: dict[str, Any]) -> None:
        """Store one event and take one bounded pruning step."""
        self.record_many((event,))

    def record_many(self, events: Iterable[dict[str, Any]]) -> int:
        """Store events in one transaction, then take one bounded pruning step; returns rows stored.

        Raises :class:`JournalError` when the file cannot be written (disk full, corruption): nothing of the
        batch is stored then.
        """
        self._writable()
        now = self._clock()
        rows = []
        for event in events:
            text = json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)
            rows.append(self._row(event, event_ts_ms(event, now), text))
        if not rows:
            return 0
        with self._lock:
            try:
                with self._transaction():
                    self._db.executemany(
                        "INSERT INTO events (ts_ms, type, person_id, name, event) VALUES (?, ?, ?, ?, ?)", rows)
            except sqlite3.Error as exc:
                raise JournalError(f"{self.path}: cannot record events: {exc}") from None
            self._count += len(rows)
            try:
                self._prune_locked()
            except JournalError as exc:  # the events are stored; retention catches up on a later step
                log.warning("%s", exc)
        return len(rows)

    def prune_step(self) -> int:
        """Delete at most one batch of rows past the age limit and one past the count limit; returns rows deleted.

        Oldest first (by event time). A caller that gets a full batch back knows there is more to do; the
        service's writer thread keeps stepping while it is idle, so a lowered limit is reached without ever
        holding the file for long.
        """
        self._writable()
        with self._lock:
            return self._prune_locked()

    def prune(self) -> int:
        """Every step needed to be within both limits now (tests, maintenance); returns rows deleted."""
        total = 0
        while True:
            deleted = self.prune_step()
            total += deleted
            if deleted == 0:
                return total

    def _prune_locked(self) -> int:
        cutoff = round((self._clock() - self.retention_days * 86_400.0) * 1000)
        deleted = 0
        try:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if version != self._data_version:  # another connection (a CLI purge) changed the file: count again
                self._data_version = version
                self._count = int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
            with self._transaction():
                cur = self._db.execute(
                    "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts_ms < ? ORDER BY ts_ms LIMIT ?)",
                    (cutoff, self._prune_batch))
                deleted += max(cur.rowcount, 0)
                excess = self._count - deleted - self.max_events
                if excess > 0:
                    cur = self._db.execute(
                        "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY ts_ms, id LIMIT ?)",
                        (min(excess, self._prune_batch),))
                    deleted += max(cur.rowcount, 0)
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: cannot prune: {exc}") from None
        self._count -= deleted
        return deleted

    def purge_person(self, person_id: str, anonymise: bool = False) -> int:
        """Delete (or, with ``anonymise``, strip of ``person_id`` and ``name``) every event of one person.

        One transaction: all of the person's rows or none. Anonymised events stay countable ("someone was
        granted at 09:02") and carry ``"anonymised": true``. Returns the number of rows changed.
        """
        self._writable()
        if not person_id:
            raise ValueError("person_id must not be empty")
        with self._lock:
            try:
                with self._transaction():
                    if anonymise:
                        rows = self._db.execute("SELECT id, ts_ms, type, event FROM events WHERE person_id = ?",
                                                (self._person_key(person_id),)).fetchall()
                        updates = []
                        for rowid, ts, kind, stored in rows:
                            event = self._event_of(ts, kind, stored)
                            event["person_id"] = None
                            event["name"] = None
                            event["anonymised"] = True
                            text = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
                            updates.append((self._row(event, ts, text)[4], rowid))
                        self._db.executemany(
                            "UPDATE events SET person_id = NULL, name = NULL, event = ? WHERE id = ?", updates)
                        changed = len(updates)
                    else:
                        changed = max(self._db.execute("DELETE FROM events WHERE person_id = ?",
                                                       (self._person_key(person_id),)).rowcount, 0)
            except sqlite3.Error as exc:
                raise JournalError(f"{self.path}: cannot purge the events of '{person_id}': {exc}") from None
            if not anonymise:
                self._count -= changed
            # The WAL still holds the old pages until a checkpoint; a busy reader only delays that.
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return changed

    # ------------------------------------------------------------------ reading

    def query(
        self,
        since: TimeBound | None = None,
        until: TimeBound | None = None,
        types: Sequence[str] | None = None,
        person: str | None = None,
        limit: int | None = 100,
        *,
        before_id: int | None = None,
        after_id: int | None = None,
        offset: int = 0,
        newest_first: bool = True,
    ) -> list[dict[str, Any]]:
        """Events matching every filter given, as the emitted dicts plus ``journal_id``.

        ``since`` is inclusive, ``until`` exclusive. ``person`` matches ``person_id`` exactly or ``name``
        ignoring case. Ordered by event time (then journal id), newest first unless ``newest_first=False``.
        ``limit=None`` returns everything. Paging: pass the last row's ``journal_id`` as ``before_id`` (newest
        first) or ``after_id`` (oldest first) for the next page; ``offset`` also works but costs more per page.
        """
        sql, params = self._select("id, ts_ms, type, event", since, until, types, person, before_id, after_id)
        direction = "DESC" if newest_first else "ASC"
        sql += f" ORDER BY ts_ms {direction}, id {direction}"
        if limit is not None or offset:
            sql += " LIMIT ? OFFSET ?"
            params += [-1 if limit is None else max(int(limit), 0), max(int(offset), 0)]
        with self._lock:
            try:
                rows = self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise JournalError(f"{self.path}: cannot read the journal: {exc}") from None
        out = []
        for rowid, ts, kind, stored in rows:
            try:
                event = self._event_of(ts, kind, stored)
            except FacegateError as exc:  # SealError: an altered row, or one sealed with another key
                raise JournalError(f"{self.path}: journal row {rowid}: {exc}") from None
            event["journal_id"] = int(rowid)
            out.append(event)
        return out

    def latest(self, event_type: str) -> dict[str, Any] | None:
        """The newest event of one type (by event time), or None; never raises (logged instead).

        For what a restarted door reports about its past, e.g. the status's last access: a journal it cannot
        read only means the door starts without it."""
        try:
            found = self.query(types=[event_type], limit=1)
        except (JournalError, ValueError) as exc:  # ValueError: a row that is not JSON
            log.warning("%s: cannot read the last %s: %s", self.path, event_type, exc)
            return None
        return found[0] if found else None

    def count(
        self,
        since: TimeBound | None = None,
        until: TimeBound | None = None,
        types: Sequence[str] | None = None,
        person: str | None = None,
    ) -> int:
        """How many events match (same filters as :meth:`query`), for page counts and summaries."""
        sql, params = self._select("COUNT(*)", since, until, types, person, None, None)
        with self._lock:
            try:
                return int(self._db.execute(sql, params).fetchone()[0])
            except sqlite3.Error as exc:
                raise JournalError(f"{self.path}: cannot read the journal: {exc}") from None

    def query_plan(
        self,
        since: TimeBound | None = None,
        until: TimeBound | None = None,
        types: Sequence[str] | None = None,
        person: str | None = None,
    ) -> list[str]:
        """SQLite's plan for :meth:`query` with these filters (which index it walks): for tests and tuning."""
        sql, params = self._select("id, event", since, until, types, person, None, None)
        sql += " ORDER BY ts_ms DESC, id DESC LIMIT 100"
        with self._lock:
            return [str(row[-1]) for row in self._db.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()]

    def _select(
        self,
        columns: str,
        since: TimeBound | None,
        until: TimeBound | None,
        types: Sequence[str] | None,
        person: str | None,
        before_id: int | None,
        after_id: int | None,
    ) -> tuple[str, list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        lo, hi = _bound_ms(since), _bound_ms(until)
        if lo is not None:
            where.append("ts_ms >= ?")
            params.append(lo)
        if hi is not None:
            where.append("ts_ms < ?")
            params.append(hi)
        if types:
            names = list(dict.fromkeys(types))
            where.append(f"type IN ({','.join('?' * len(names))})")
            params += names
        if person:
            where.append("(person_id = ? OR name = ?)")
            params += [self._person_key(person), self._name_key(person)]
        for cursor, op in ((before_id, "<"), (after_id, ">")):
            if cursor is not None:
                at = self._cursor_ts(int(cursor), op)
                if at is None:  # nothing on that side of the cursor is left
                    where.append("0")
                    continue
                where.append(f"ts_ms {op}= ? AND (ts_ms {op} ? OR id {op} ?)")
                params += [at, at, int(cursor)]
        sql = f"SELECT {columns} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return sql, params

    def _cursor_ts(self, rowid: int, op: str) -> int | None:
        """Event time of the cursor row; if that row has since been pruned or purged, the nearest one before it
        in insertion order stands in (rows are inserted in time order, apart from clock steps)."""
        with self._lock:
            row = self._db.execute("SELECT ts_ms FROM events WHERE id = ?", (rowid,)).fetchone()
            if row is None:
                order = "DESC" if op == "<" else "ASC"
                row = self._db.execute(f"SELECT ts_ms FROM events WHERE id {op} ? ORDER BY id {order} LIMIT 1",
                                       (rowid,)).fetchone()
        return None if row is None else int(row[0])

    # ------------------------------------------------------------------ plumbing

    def _writable(self) -> None:
        if self.readonly:
            raise JournalError(f"{self.path}: opened read-only")

    @contextlib.contextmanager
    def _transaction(self) -> Any:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
