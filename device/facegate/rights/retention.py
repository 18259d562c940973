"""Retention: people whose validity ended long enough ago leave the door by themselves (GDPR Art. 5(1)(e)).

``[privacy] retention_days_after_validity``: a person whose ``valid_until`` lies more than that many days in
the past is removed with their templates and policy (one gallery transaction), and, with
``retention_purge_journal``, their journal rows. Each removal is one ``person_expired`` event naming the id,
the validity end and what was removed. Checked at start and then every hour; people without ``valid_until``
never expire.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from typing import Any

from facegate.errors import FacegateError
from facegate.gallery.store import Gallery
from facegate.journal.store import Journal

__all__ = ["CHECK_SECONDS", "Retention", "expired_persons"]

log = logging.getLogger(__name__)

CHECK_SECONDS = 3600.0


def expired_persons(gallery: Gallery, after_days: float, now: dt.datetime) -> list[tuple[str, str]]:
    """(person id, valid_until) of everyone whose validity ended more than ``after_days`` before ``now``."""
    cutoff = now - dt.timedelta(days=after_days)
    out = []
    with gallery.snapshot() as db:
        rows = db.execute("SELECT person_id, valid_until FROM person_policy WHERE valid_until IS NOT NULL "
                          "ORDER BY person_id").fetchall()
    for person_id, until in rows:
        try:
            end = dt.datetime.fromisoformat(str(until).replace("Z", "+00:00"))
        except ValueError:
            log.warning("person %s: valid_until %r is not a date; not expired", person_id, until)
            continue
        if end.tzinfo is None:
            end = end.replace(tzinfo=dt.UTC)
        if end < cutoff:
            out.append((str(person_id), end.isoformat()))
    return out


class Retention:
    """Runs the removals at most once per ``interval_seconds`` (the service's loop asks often)."""

    def __init__(self, after_days: float | None, purge_journal: bool, interval_seconds: float = CHECK_SECONDS,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.after_days = after_days
        self.purge_journal = purge_journal
        self.interval_seconds = interval_seconds
        self._clock = clock
        self._next: dt.datetime | None = None

    def due(self) -> bool:
        return self.after_days is not None and (self._next is None or self._clock() >= self._next)

    def run(self, gallery: Gallery, journal: Journal | None, emit: Callable[..., Any],
            lock: threading.Lock | None = None) -> list[str]:
        """Remove everyone expired now; returns their ids. Each removal is its own transaction and event."""
        if self.after_days is None:
            return []
        now = self._clock()
        self._next = now + dt.timedelta(seconds=self.interval_seconds)
        removed = []
        for person_id, until in expired_persons(gallery, self.after_days, now):
            purged = 0
            try:
                if lock is not None:
                    with lock:
                        templates = gallery.remove(person_id)
                else:
                    templates = gallery.remove(person_id)
                if journal is not None and self.purge_journal:
                    purged = journal.purge_person(person_id)
            except (FacegateError, OSError) as exc:  # the gallery or the journal: tried again next hour
                log.error("retention: could not remove person %s: %s", person_id, exc)
                continue
            removed.append(person_id)
            emit("person_expired", person_id=person_id, valid_until=until, templates_removed=templates,
                 events_purged=purged, retention_days_after_validity=self.after_days)
        return removed
