"""Events and journal: the outbox (recovered if damaged), the emitter every part reports through, the journal,
and the status facts the journal carries over a restart.

Built first, so that every later part (and every later failure to build one) can report through the emitter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from facegate.config import Config
from facegate.events.emitter import EventEmitter
from facegate.events.outbox import Outbox
from facegate.events.status import EventFacts
from facegate.journal import JournalError, JournalWriter, open_journal
from facegate.privacy.seal import Sealer
from facegate.wiring.recovery import open_outbox

log = logging.getLogger("facegate.service")


@dataclass
class EventParts:
    outbox: Outbox
    emitter: EventEmitter
    journal: JournalWriter | None  # None when off, or when it could not be opened (then ``journal_open_error``)
    journal_open_error: str | None
    facts: EventFacts  # what the status says about the recent past (a listener is added by the service)
    last_person: str | None  # name (or id) of the last person let in, from the journal across a restart


def build_events(config: Config, sealer: Sealer | None = None) -> EventParts:
    """``sealer``: outbox and journal are stored sealed (facegate.privacy); None keeps them plain."""
    # Damaged files found at start (wiring/recovery.py): the outbox is quarantined and its readable events
    # carried over, reported as outbox_quarantined; a damaged gallery stops the start with what to do.
    outbox, quarantine = open_outbox(config.state_dir / "outbox.db", config.outbox.max_events, sealer)
    emitter = EventEmitter(config.device_id, outbox)
    emitter.add_listener(lambda event: log.info("event %s", event["type"], extra={"event": event}))
    if quarantine is not None:
        emitter.emit("outbox_quarantined", **quarantine.as_event())

    # Access journal: every event also goes into local history, apart from the outbox. Written on its own thread
    # from a bounded queue; a failure is counted in the status, never raised into the loop.
    journal: JournalWriter | None = None
    journal_open_error: str | None = None
    if config.journal.enabled:
        try:
            journal = JournalWriter(open_journal(config.journal_path, config.journal.max_events,
                                                 config.journal.retention_days, sealer))
            emitter.add_listener(journal.submit)
        except (JournalError, OSError) as exc:
            journal_open_error = str(exc)
            log.error("access journal unavailable, events are not kept locally: %s", exc)
    facts, last_person = EventFacts(), None
    if journal is not None:  # "Last access" survives a restart: the newest grant in the journal
        last_grant = journal.journal.latest("access_granted")
        if last_grant is not None:
            facts.on_event(last_grant)
            last_person = last_grant.get("name") or last_grant.get("person_id")
    return EventParts(outbox, emitter, journal, journal_open_error, facts, last_person)
