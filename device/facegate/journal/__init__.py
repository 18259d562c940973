"""The access journal: every event the service emits, kept on the door as searchable local history.

Why apart from the outbox: the outbox holds an event until the broker acknowledges it (delivery) and then
forgets it; the journal keeps it for ``max_events`` / ``retention_days`` (history). Either can fail without
touching the other.

Interface (stable; the web console and the CLI use only this):

``Journal(path, max_events=1_000_000, retention_days=365, *, readonly=False)``
    Open (or create) the SQLite file. ``readonly=True`` never writes or creates it and raises
    :class:`JournalError` if it is missing; use it from other processes and from web threads while the service
    writes (WAL: readers never block the writer, nor it them). Thread-safe. Context manager; ``close()``.
``record(event)`` / ``record_many(events) -> int``
    Store emitted event dicts (``ts``, ``type``, optional ``person_id``/``name`` are the indexed columns), then
    take one bounded pruning step. Raises :class:`JournalError` (disk full, corruption).
``query(since=None, until=None, types=None, person=None, limit=100, *, before_id=None, after_id=None,
offset=0, newest_first=True) -> list[dict]``
    The events as emitted plus ``journal_id``. ``since`` inclusive, ``until`` exclusive: aware datetimes or
    epoch seconds. ``types``: a list of event types. ``person``: ``person_id`` exactly or ``name`` ignoring case.
    ``limit=None``: all. Keyset paging: the last row's ``journal_id`` as ``before_id`` (newest first) or
    ``after_id`` (oldest first).
``count(since=None, until=None, types=None, person=None) -> int``
``purge_person(person_id, anonymise=False) -> int``
    Delete the person's events, or keep them with ``person_id``/``name`` set to null and ``"anonymised": true``.
``prune_step() -> int`` / ``prune() -> int``
    Retention (oldest first): one bounded batch, or until within both limits.
``len(journal)``: rows (as this connection last counted them).
``query_plan(...) -> list[str]``: SQLite's plan for a query (which index it uses).

``JournalWriter(journal)`` (the service's): ``submit(event)`` is the emitter listener (never blocks, never
raises), ``start()``, ``stop(timeout) -> int`` (flush and close), ``status() -> {"enabled", "events", "errors",
"pending", "last_error"}`` (the status message's ``journal``), ``errors``.
``open_journal(path, max_events, retention_days)``: a damaged file is moved aside and a new one started.
``parse_time(text) -> datetime``: ISO-8601 (zone-less = local time) or ``24h``/``7d``/``30m``/``2w``/``now``.
"""

from facegate.journal.store import DEFAULT_MAX_EVENTS, DEFAULT_RETENTION_DAYS, Journal, JournalError
from facegate.journal.timespec import parse_time
from facegate.journal.writer import JournalWriter, open_journal

__all__ = [
    "DEFAULT_MAX_EVENTS",
    "DEFAULT_RETENTION_DAYS",
    "Journal",
    "JournalError",
    "JournalWriter",
    "open_journal",
    "parse_time",
]
