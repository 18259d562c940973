"""The face embedding behind each grant, kept a short while so an admin can say "This was not them".

A wrong grant is only noticed later (a stranger in the journal, a complaint). To teach the door, the face that
was let in must still exist: this store keeps each grant's embedding, keyed by the ``access_granted`` event's
id, for ``recognition.keep_grant_embeddings_days`` (default 7, never longer than the journal keeps the event).
It is biometric data, so it lives in the state directory, owner-only (facegate/private_files.py), is deleted
with the person (``facegate gallery remove --purge-events``) and counted in ``facegate doctor``.

Several processes open it: the service writes; the console and ``facegate gallery negative add --event`` read.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegate.base.private_files import private_sqlite
from facegate.errors import FacegateError
from facegate.privacy.seal import Sealer

__all__ = ["FILE_NAME", "GrantEmbedding", "GrantEmbeddings", "GrantEmbeddingsError", "open_grant_embeddings"]

FILE_NAME = "grant_embeddings.db"
DAY_SECONDS = 86400.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS grants (
    event_id TEXT PRIMARY KEY,
    person_id TEXT NOT NULL,
    embedding BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS grants_person ON grants(person_id);
CREATE INDEX IF NOT EXISTS grants_created ON grants(created_at);
"""


class GrantEmbeddingsError(FacegateError):
    """The store cannot be opened, or holds no embedding for the event asked for (the message says why)."""


@dataclass(frozen=True)
class GrantEmbedding:
    event_id: str
    person_id: str
    embedding: np.ndarray
    created_at: float


class GrantEmbeddings:
    """``state_dir/grant_embeddings.db``: event id -> (person, embedding, time), pruned by age."""

    def __init__(self, path: Path, keep_days: float, *, clock: Callable[[], float] = time.time,
                 sealer: Sealer | None = None) -> None:
        """``sealer``: each face is stored sealed, bound to its event id (facegate.privacy); ids and times stay
        plain, as in the gallery."""
        if keep_days < 0:
            raise ValueError("keep_days must not be negative")
        self.path = Path(path)
        self.keep_seconds = float(keep_days) * DAY_SECONDS
        self._clock = clock
        self._sealer = sealer
        self._lock = threading.Lock()
        try:
            private_sqlite(self.path)  # faces: owner-only, -wal/-shm included
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute("PRAGMA journal_mode=WAL")
            # No fsync per grant on the frame loop's thread: a power cut may lose the last grant's face, never
            # an event (those are in the outbox), and the file stays consistent (WAL).
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA secure_delete=ON")  # an expired face is overwritten, not left in free pages
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise GrantEmbeddingsError(f"{self.path}: cannot open the grant embeddings: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> GrantEmbeddings:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def put(self, event_id: str, person_id: str, embedding: np.ndarray) -> None:
        """Keep one grant's embedding (nothing when keeping is off) and drop those past their time."""
        if self.keep_seconds <= 0:
            return
        blob = np.asarray(embedding, dtype="<f4").tobytes()
        if self._sealer is not None:
            blob = self._sealer.seal(blob, f"grants.embedding|{event_id}")
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO grants VALUES (?, ?, ?, ?)",
                             (event_id, person_id, blob, self._clock()))
            self._expire_locked()

    def get(self, event_id: str) -> GrantEmbedding:
        """The embedding of a grant still kept, or :class:`GrantEmbeddingsError` saying why there is none."""
        with self._lock:
            self._expire_locked()
            row = self._db.execute("SELECT person_id, embedding, created_at FROM grants WHERE event_id = ?",
                                   (event_id,)).fetchone()
        if row is None:
            days = self.keep_seconds / DAY_SECONDS
            raise GrantEmbeddingsError(
                f"no face is kept for event {event_id!r}: it is not an access_granted event of this door, or it is "
                f"older than recognition.keep_grant_embeddings_days ({days:g}), or its person was removed")
        blob = bytes(row[1])
        if self._sealer is not None:
            blob = self._sealer.open(blob, f"grants.embedding|{event_id}")
        return GrantEmbedding(event_id, str(row[0]), np.frombuffer(blob, dtype="<f4").copy(), float(row[2]))

    def expire(self) -> int:
        """Delete every embedding older than the keeping time; returns how many."""
        with self._lock:
            return self._expire_locked()

    def _expire_locked(self) -> int:
        cutoff = self._clock() - self.keep_seconds
        return int(self._db.execute("DELETE FROM grants WHERE created_at < ?", (cutoff,)).rowcount)

    def purge_person(self, person_id: str) -> int:
        """Delete every kept embedding of a person (erasure); returns how many."""
        with self._lock:
            removed = int(self._db.execute("DELETE FROM grants WHERE person_id = ?", (person_id,)).rowcount)
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM grants").fetchone()[0])


def open_grant_embeddings(state_dir: Path, keep_days: float,
                          sealer: Sealer | None = None) -> GrantEmbeddings | None:
    """The door's store, expired to its keeping time; None when keeping is off (0 days), after deleting what an
    earlier setting kept: with 0 days no grant face may stay on the device."""
    path = Path(state_dir) / FILE_NAME
    if keep_days <= 0:
        if path.is_file():
            with GrantEmbeddings(path, 0.0) as leftover:
                leftover.expire()
        return None
    store = GrantEmbeddings(path, keep_days, sealer=sealer)
    store.expire()
    return store
