"""The service's side of the journal: events queued from the emitting thread, written on a thread of its own.

The emitter calls its listeners on the thread that emitted (usually the frame loop). A journal write can be slow
(an SD card, a CLI purge holding the file's write lock for a moment) or fail (disk full, a corrupt file): none of
that may reach the frame loop or the outbox. So :meth:`JournalWriter.submit` only puts the event on a bounded
queue and never raises; the writer thread stores whatever has queued up in one transaction, and prunes in
small batches while it has nothing else to do. Events it cannot store are counted in ``errors`` (the status
message's ``journal`` object) and logged at a bounded rate; they are still in the outbox, so nothing is lost
to the dashboards.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from facegate.journal.store import Journal, JournalError
from facegate.privacy.seal import Sealer

__all__ = ["JournalWriter", "open_journal"]

log = logging.getLogger(__name__)

QUEUE_EVENTS = 10_000
IDLE_PRUNE_SECONDS = 60.0
ERROR_LOG_INTERVAL_SECONDS = 60.0
LOCKED_RETRIES = 3  # each waits the journal's busy timeout (10 s)


def open_journal(path: Path, max_events: int, retention_days: float, sealer: Sealer | None = None) -> Journal:
    """Open the service's journal; a file SQLite cannot read is moved aside and a new journal started.

    A door must keep working (and keep a history) when its journal is damaged: the bad file is kept next to
    it as ``<name>.corrupt-<UTC time>`` for whoever wants to recover it, and the error is logged. Anything else
    (a directory that cannot be created, a read-only disk) raises :class:`JournalError`; a wrong privacy key
    raises :class:`~facegate.privacy.keys.PrivacyKeyError` and moves nothing.
    """
    try:
        return Journal(path, max_events, retention_days, sealer=sealer)
    except JournalError as exc:
        if not _is_corrupt(path):
            raise
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = path.with_name(f"{path.name}.corrupt-{stamp}")
        log.error("journal %s is damaged (%s): moved to %s and a new journal started", path, exc, aside)
        for suffix in ("", "-wal", "-shm"):
            part = path.with_name(path.name + suffix)
            if part.exists():
                part.replace(aside.with_name(aside.name + suffix))
        return Journal(path, max_events, retention_days, sealer=sealer)


def _is_corrupt(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            row = db.execute("PRAGMA quick_check").fetchone()
            return row is None or row[0] != "ok"
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return True


class JournalWriter:
    """Owns a :class:`Journal` and writes submitted events to it from one background thread."""

    def __init__(self, journal: Journal, queue_events: int = QUEUE_EVENTS,
                 idle_prune_seconds: float = IDLE_PRUNE_SECONDS) -> None:
        self.journal = journal
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=queue_events)
        self._idle_prune_seconds = idle_prune_seconds
        self._errors = 0
        self._error_lock = threading.Lock()  # submit (emitting thread) and the writer both count
        self._last_error: str | None = None
        self._last_logged = -ERROR_LOG_INTERVAL_SECONDS
        self._unlogged = 0
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ the emitting side

    def submit(self, event: dict[str, Any]) -> None:
        """The emitter listener: queue ``event`` without blocking; a full queue counts it as an error."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._fail(1, f"{self.journal.path}: journal queue full ({self._queue.maxsize} events waiting)")

    @property
    def errors(self) -> int:
        """Events not journaled since start (write failures and a full queue)."""
        return self._errors

    def status(self) -> dict[str, Any]:
        """The status message's ``journal`` object."""
        return {"enabled": True, "events": len(self.journal), "errors": self._errors,
                "pending": self._queue.qsize(), "last_error": self._last_error}

    # ------------------------------------------------------------------ the thread

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="journal", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> int:
        """Write what is queued (up to ``timeout`` seconds), close the journal; returns events left unwritten."""
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=timeout)
            self._thread.join(timeout)
            if self._thread.is_alive():
                left = self._queue.qsize()
                log.warning("journal writer did not finish in %.1f s; %d events not journaled", timeout, left)
                return left
            self._thread = None
        else:
            self._drain()
        left = self._queue.qsize()
        self.journal.close()
        return left

    def _run(self) -> None:
        next_prune = time.monotonic()
        more_to_prune = True
        while True:
            wait = 0.0 if more_to_prune else max(0.0, next_prune - time.monotonic())
            try:
                first = self._queue.get(timeout=max(wait, 0.05))
            except queue.Empty:
                if more_to_prune or time.monotonic() >= next_prune:
                    more_to_prune = self._prune_one()
                    next_prune = time.monotonic() + self._idle_prune_seconds
                continue
            if first is None:
                self._drain()
                return
            batch = [first]
            done = False
            while len(batch) < 1000:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    done = True
                    break
                batch.append(item)
            self._write(batch)
            if done:
                self._drain()
                return
            more_to_prune = True  # a write can push the journal over its count limit

    def _drain(self) -> None:
        batch = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                batch.append(item)
        if batch:
            self._write(batch)

    def _write(self, batch: list[dict[str, Any]]) -> None:
        for attempt in range(1, LOCKED_RETRIES + 1):
            try:
                self.journal.record_many(batch)
                return
            except (JournalError, sqlite3.Error) as exc:
                # Another process (a CLI purge) holding the file past the busy timeout: wait again, the queue
                # absorbs new events meanwhile. Anything else (disk full, corruption) is not worth a retry.
                if "locked" in str(exc) and attempt < LOCKED_RETRIES:
                    log.warning("journal busy (attempt %d of %d): %s", attempt, LOCKED_RETRIES, exc)
                    continue
                self._fail(len(batch), str(exc))
                return
            except Exception as exc:  # never let the thread die: the next event may well succeed
                log.exception("journal write failed")
                self._fail(len(batch), f"{self.journal.path}: {exc!r}")
                return

    def _prune_one(self) -> bool:
        """One pruning step; True when it deleted a full batch (there may be more)."""
        try:
            return self.journal.prune_step() >= self.journal.prune_batch
        except (JournalError, sqlite3.Error) as exc:
            log.warning("journal pruning failed: %s", exc)
            return False

    def _fail(self, events: int, reason: str) -> None:
        with self._error_lock:
            self._errors += events
            self._last_error = reason
            self._unlogged += events
            now = time.monotonic()
            if now - self._last_logged < ERROR_LOG_INTERVAL_SECONDS:
                return
            unlogged, total = self._unlogged, self._errors
            self._last_logged, self._unlogged = now, 0
        log.error("%d event(s) not journaled (%d since start): %s; they are still in the outbox",
                  unlogged, total, reason)
