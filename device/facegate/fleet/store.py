"""The fleet's database: one small interface, SQLite by default, PostgreSQL for sites that outgrow one file.

Tables: ``events`` (the journal of every door; ``event_id`` is the primary key, so a redelivered event is a
no-op insert), ``doors`` (the last status of each door and its group), ``door_sync`` (per door: the gallery
bundle published to it and the one it confirmed), ``alerts`` and ``audit`` (every change made in the console).
The SQL is written once with ``?`` placeholders; the PostgreSQL store turns them into ``%s``. Both stores
serialise use of their one connection with a lock: the ingest thread, the publisher and the web threads share it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facegate.base.private_files import private_sqlite
from facegate.errors import FacegateError

__all__ = ["EventQuery", "EventRow", "FleetStore", "PostgresStore", "SqliteStore", "StoreError", "open_store"]

MAX_QUERY_ROWS = 10_000


class StoreError(FacegateError):
    """The fleet database cannot be opened or used; the message names it."""


@dataclass(frozen=True)
class EventRow:
    event_id: str
    door_id: str
    seq: int
    ts: float  # the event's own time (unix seconds, from its ``ts``)
    type: str
    person_id: str | None
    name: str | None
    body: str  # the event as received (JSON text)


@dataclass(frozen=True)
class EventQuery:
    since: float | None = None
    until: float | None = None
    door: str | None = None
    person: str | None = None  # a person id, or a name (exact)
    type: str | None = None
    limit: int = 200
    offset: int = 0


_TABLES = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY, door_id TEXT NOT NULL, seq BIGINT NOT NULL, ts DOUBLE PRECISION NOT NULL,
    type TEXT NOT NULL, person_id TEXT, name TEXT, received DOUBLE PRECISION NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE INDEX IF NOT EXISTS events_door_ts ON events (door_id, ts);
CREATE INDEX IF NOT EXISTS events_person_ts ON events (person_id, ts);
CREATE INDEX IF NOT EXISTS events_name_ts ON events (name, ts);
CREATE INDEX IF NOT EXISTS events_type_ts ON events (type, ts);
CREATE TABLE IF NOT EXISTS doors (
    door_id TEXT PRIMARY KEY, door_group TEXT, online INTEGER NOT NULL DEFAULT 0, status TEXT,
    last_seen DOUBLE PRECISION, availability_at DOUBLE PRECISION, bad_messages BIGINT NOT NULL DEFAULT 0,
    last_decision TEXT);
CREATE TABLE IF NOT EXISTS door_sync (
    door_id TEXT PRIMARY KEY, published_version BIGINT, published_bundle TEXT, published_kind TEXT,
    published_at DOUBLE PRECISION, applied_version BIGINT, applied_bundle TEXT, applied_at DOUBLE PRECISION,
    rejected_reason TEXT, rejected_at DOUBLE PRECISION, needs_full INTEGER NOT NULL DEFAULT 1);
"""
_SERIAL_TABLES = """
CREATE TABLE IF NOT EXISTS alerts (
    id {serial}, ts DOUBLE PRECISION NOT NULL, door_id TEXT, kind TEXT NOT NULL, detail TEXT NOT NULL,
    event_id TEXT, acknowledged_by TEXT, acknowledged_at DOUBLE PRECISION);
CREATE INDEX IF NOT EXISTS alerts_ts ON alerts (ts);
CREATE TABLE IF NOT EXISTS audit (
    id {serial}, ts DOUBLE PRECISION NOT NULL, user_name TEXT NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL);
"""
_DOOR_COLUMNS = ("door_id", "door_group", "online", "status", "last_seen", "availability_at", "bad_messages",
                 "last_decision")
_SYNC_COLUMNS = ("door_id", "published_version", "published_bundle", "published_kind", "published_at",
                 "applied_version", "applied_bundle", "applied_at", "rejected_reason", "rejected_at", "needs_full")


class FleetStore:
    """The SQL both backends share; subclasses open the connection and say how to run a statement."""

    backend = "sql"

    def __init__(self) -> None:
        self._lock = threading.RLock()

    # -- backend hooks --

    def _run(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _run_count(self, sql: str, args: Sequence[Any]) -> int:
        """Run one statement; the number of rows it changed."""
        raise NotImplementedError

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        raise NotImplementedError
        yield

    def close(self) -> None:
        raise NotImplementedError

    # -- journal --

    def insert_events(self, rows: Sequence[EventRow]) -> int:
        """Store ``rows`` in one transaction; returns how many were new (a known ``event_id`` is skipped)."""
        return sum(self.insert_new_events(rows))

    def insert_new_events(self, rows: Sequence[EventRow]) -> list[bool]:
        """Like :meth:`insert_events`, saying for each row whether it was new (alerts fire once per event)."""
        now = time.time()
        sql = ("INSERT INTO events (event_id, door_id, seq, ts, type, person_id, name, received, body) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING")
        with self._lock, self._transaction():
            return [self._run_count(sql, (r.event_id, r.door_id, r.seq, r.ts, r.type, r.person_id, r.name, now,
                                          r.body)) > 0 for r in rows]

    def query_events(self, q: EventQuery) -> list[dict[str, Any]]:
        where: list[str] = ["1 = 1"]
        args: list[Any] = []
        if q.since is not None:
            where.append("ts >= ?")
            args.append(q.since)
        if q.until is not None:
            where.append("ts < ?")
            args.append(q.until)
        if q.door:
            where.append("door_id = ?")
            args.append(q.door)
        if q.type:
            where.append("type = ?")
            args.append(q.type)
        if q.person:
            where.append("(person_id = ? OR name = ?)")
            args += [q.person, q.person]
        limit = max(1, min(int(q.limit), MAX_QUERY_ROWS))
        sql = (f"SELECT body FROM events WHERE {' AND '.join(where)} ORDER BY ts DESC, event_id DESC "
               f"LIMIT {limit} OFFSET {max(0, int(q.offset))}")
        with self._lock:
            return [json.loads(r[0]) for r in self._run(sql, args)]

    def event(self, event_id: str) -> dict[str, Any] | None:
        with self._lock:
            rows = self._run("SELECT body FROM events WHERE event_id = ?", (event_id,))
        return json.loads(rows[0][0]) if rows else None

    def count_events(self) -> int:
        with self._lock:
            return int(self._run("SELECT COUNT(*) FROM events")[0][0])

    def purge_events(self, before: float) -> int:
        with self._lock, self._transaction():
            n = int(self._run("SELECT COUNT(*) FROM events WHERE ts < ?", (before,))[0][0])
            self._run("DELETE FROM events WHERE ts < ?", (before,))
            return n

    # -- doors --

    def door(self, door_id: str) -> dict[str, Any] | None:
        with self._lock:
            rows = self._run(f"SELECT {', '.join(_DOOR_COLUMNS)} FROM doors WHERE door_id = ?", (door_id,))
        return dict(zip(_DOOR_COLUMNS, rows[0], strict=True)) if rows else None

    def doors(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._run(f"SELECT {', '.join(_DOOR_COLUMNS)} FROM doors ORDER BY door_id")
        return [dict(zip(_DOOR_COLUMNS, r, strict=True)) for r in rows]

    def touch_door(self, door_id: str, **fields: Any) -> bool:
        """Create the door if new and set ``fields`` (columns of ``doors``); True when the door was new."""
        return bool(self.touch_doors({door_id: fields}))

    def touch_doors(self, updates: dict[str, dict[str, Any]]) -> list[str]:
        """:meth:`touch_door` for several doors in one transaction (one commit per ingest batch); the new ones."""
        for fields in updates.values():
            bad = set(fields) - set(_DOOR_COLUMNS[1:])
            if bad:
                raise StoreError(f"unknown door field(s): {sorted(bad)}")
        created = []
        with self._lock, self._transaction():
            for door_id, fields in updates.items():
                if not self._run("SELECT 1 FROM doors WHERE door_id = ?", (door_id,)):
                    created.append(door_id)
                    self._run("INSERT INTO doors (door_id) VALUES (?)", (door_id,))
                    self._run("INSERT INTO door_sync (door_id) VALUES (?) ON CONFLICT (door_id) DO NOTHING",
                              (door_id,))
                if fields:
                    sets = ", ".join(f"{k} = ?" for k in fields)
                    self._run(f"UPDATE doors SET {sets} WHERE door_id = ?", (*fields.values(), door_id))
        return created

    def count_bad_message(self, door_id: str) -> None:
        with self._lock:
            self._run("UPDATE doors SET bad_messages = bad_messages + 1 WHERE door_id = ?", (door_id,))

    # -- gallery sync per door --

    def sync_state(self, door_id: str) -> dict[str, Any] | None:
        with self._lock:
            rows = self._run(f"SELECT {', '.join(_SYNC_COLUMNS)} FROM door_sync WHERE door_id = ?", (door_id,))
        return dict(zip(_SYNC_COLUMNS, rows[0], strict=True)) if rows else None

    def sync_states(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = self._run(f"SELECT {', '.join(_SYNC_COLUMNS)} FROM door_sync")
        return {r[0]: dict(zip(_SYNC_COLUMNS, r, strict=True)) for r in rows}

    def update_sync(self, door_id: str, **fields: Any) -> None:
        bad = set(fields) - set(_SYNC_COLUMNS[1:])
        if bad:
            raise StoreError(f"unknown sync field(s): {sorted(bad)}")
        with self._lock, self._transaction():
            self._run("INSERT INTO door_sync (door_id) VALUES (?) ON CONFLICT (door_id) DO NOTHING", (door_id,))
            sets = ", ".join(f"{k} = ?" for k in fields)
            self._run(f"UPDATE door_sync SET {sets} WHERE door_id = ?", (*fields.values(), door_id))

    # -- alerts and audit --

    def add_alert(self, door_id: str | None, kind: str, detail: str, event_id: str | None = None,
                  ts: float | None = None) -> None:
        with self._lock, self._transaction():
            self._run("INSERT INTO alerts (ts, door_id, kind, detail, event_id) VALUES (?, ?, ?, ?, ?)",
                      (ts or time.time(), door_id, kind, detail[:1000], event_id))

    def alerts(self, open_only: bool = False, limit: int = 200) -> list[dict[str, Any]]:
        cols = ("id", "ts", "door_id", "kind", "detail", "event_id", "acknowledged_by", "acknowledged_at")
        where = "WHERE acknowledged_at IS NULL" if open_only else ""
        with self._lock:
            rows = self._run(f"SELECT {', '.join(cols)} FROM alerts {where} ORDER BY id DESC "
                             f"LIMIT {max(1, min(limit, MAX_QUERY_ROWS))}")
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def acknowledge_alert(self, alert_id: int, user: str) -> bool:
        with self._lock, self._transaction():
            found = self._run("SELECT 1 FROM alerts WHERE id = ? AND acknowledged_at IS NULL", (alert_id,))
            self._run("UPDATE alerts SET acknowledged_by = ?, acknowledged_at = ? WHERE id = ?",
                      (user, time.time(), alert_id))
        return bool(found)

    def audit(self, user: str, action: str, **detail: Any) -> None:
        with self._lock, self._transaction():
            self._run("INSERT INTO audit (ts, user_name, action, detail) VALUES (?, ?, ?, ?)",
                      (time.time(), user, action, json.dumps(detail, sort_keys=True, default=str)))

    def audit_log(self, limit: int = 200) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._run("SELECT id, ts, user_name, action, detail FROM audit ORDER BY id DESC "
                             f"LIMIT {max(1, min(limit, MAX_QUERY_ROWS))}")
        return [{"id": r[0], "ts": r[1], "user": r[2], "action": r[3], "detail": json.loads(r[4])} for r in rows]


class SqliteStore(FleetStore):
    backend = "sqlite"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            private_sqlite(self.path)
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a stored event survives a power cut: it was acknowledged
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_TABLES + _SERIAL_TABLES.format(serial="INTEGER PRIMARY KEY AUTOINCREMENT"))
        except (OSError, sqlite3.DatabaseError) as exc:
            raise StoreError(f"cannot open the fleet database {self.path}: {exc}") from None

    def _run(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, tuple(args)).fetchall()

    def _run_count(self, sql: str, args: Sequence[Any]) -> int:
        return int(self._db.execute(sql, tuple(args)).rowcount)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        if self._db.in_transaction:  # nested (RLock re-entry): the outer one commits
            yield
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()


class PostgresStore(FleetStore):
    backend = "postgresql"

    def __init__(self, url: str, schema: str | None = None) -> None:
        super().__init__()
        try:
            import psycopg
        except ImportError:
            raise StoreError("storage.url is PostgreSQL but psycopg is not installed: pip install "
                             "'facegate[fleet]' (psycopg[binary])") from None
        self._psycopg = psycopg
        try:
            self._db = psycopg.connect(url, autocommit=True, connect_timeout=10)
            if schema is not None:  # tests: a schema of their own, dropped afterwards
                self._db.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                self._db.execute(f'SET search_path TO "{schema}"')
            for statement in (_TABLES + _SERIAL_TABLES.format(serial="BIGSERIAL PRIMARY KEY")).split(";"):
                if statement.strip():
                    self._db.execute(statement)
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the fleet database {_redact(url)}: {exc}") from None
        self._depth = 0

    def _run(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self._db.execute(sql.replace("?", "%s"), tuple(args))
        return list(cur.fetchall()) if cur.description is not None else []

    def insert_new_events(self, rows: Sequence[EventRow]) -> list[bool]:
        """One pipelined ``executemany`` (a round trip per row was ~300 rows/s over loopback): RETURNING names the
        rows that were new; a repeat of an id within the batch is not new either."""
        if not rows:
            return []
        now = time.time()
        sql = ("INSERT INTO events (event_id, door_id, seq, ts, type, person_id, name, received, body) "
               "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING RETURNING event_id")
        new: set[str] = set()
        with self._lock, self._transaction(), self._db.cursor() as cur:
            cur.executemany(sql, [(r.event_id, r.door_id, r.seq, r.ts, r.type, r.person_id, r.name, now, r.body)
                                  for r in rows], returning=True)
            while True:
                found = cur.fetchone()
                if found is not None:
                    new.add(found[0])
                if not cur.nextset():
                    break
        out = []
        for r in rows:
            out.append(r.event_id in new)
            new.discard(r.event_id)
        return out

    def _run_count(self, sql: str, args: Sequence[Any]) -> int:
        cur = self._db.execute(sql.replace("?", "%s"), tuple(args))
        return max(0, int(cur.rowcount))

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        if self._depth:
            yield
            return
        self._depth += 1
        try:
            with self._db.transaction():
                yield
        finally:
            self._depth -= 1

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _redact(url: str) -> str:
    """The URL without a password, for messages."""
    head, sep, tail = url.partition("@")
    if not sep:
        return url
    scheme, _, cred = head.partition("://")
    return f"{scheme}://{cred.split(':')[0]}:***@{tail}" if ":" in cred else url


def open_store(url: str) -> FleetStore:
    if url.startswith("sqlite:///"):
        return SqliteStore(Path(url.removeprefix("sqlite://")))
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    raise StoreError(f"storage.url {url!r}: use sqlite:///PATH or postgresql://...")
