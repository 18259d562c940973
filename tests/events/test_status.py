"""The status publisher: on change but coalesced, complete every time, in order; the facts it reports."""

from __future__ import annotations

import threading
import time
from typing import Any

from facegate.events.communicator import NullCommunicator
from facegate.events.status import EventFacts, StatusPublisher

from tools.wait import wait_for


class Source:
    """A status whose content changes under the publisher, like the service's."""

    def __init__(self) -> None:
        self.version = 0
        self.published: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def build(self) -> dict[str, Any]:
        return {"version": self.version, "gallery_persons": 1}

    def publish(self, status: dict[str, Any]) -> None:
        with self.lock:
            self.published.append(status)


def test_a_burst_of_changes_is_one_or_two_statuses_with_the_latest_state() -> None:
    source = Source()
    publisher = StatusPublisher(source.build, source.publish, interval_seconds=60, min_gap_seconds=0.3)
    publisher.publish_now()
    publisher.start()
    try:
        for i in range(200):  # e.g. a chattering contact
            source.version = i
            publisher.request()
        assert wait_for(lambda: source.published[-1]["version"] == 199, timeout=2)
        time.sleep(0.5)
        assert 2 <= len(source.published) <= 3  # the start-up one, then at most two for the burst
        assert [s["status_seq"] for s in source.published] == list(range(1, len(source.published) + 1))
    finally:
        publisher.stop()


def test_a_change_is_published_within_the_gap_and_the_heartbeat_keeps_going() -> None:
    source = Source()
    publisher = StatusPublisher(source.build, source.publish, interval_seconds=1.5, min_gap_seconds=0.1)
    publisher.start()
    try:
        assert wait_for(lambda: len(source.published) >= 1, timeout=5)  # the heartbeat, with no request
        first = time.monotonic()
        source.version = 7
        publisher.request()
        assert wait_for(lambda: source.published[-1]["version"] == 7, timeout=5)
        # Well before the next heartbeat (due 1.5 s after the first): the change did not wait for it.
        assert time.monotonic() - first < 1.0 and len(source.published) == 2
        assert wait_for(lambda: len(source.published) >= 3, timeout=5)  # and the heartbeat goes on
    finally:
        publisher.stop()


def test_a_failing_build_does_not_end_publishing() -> None:
    calls = {"n": 0}
    published: list[dict[str, Any]] = []

    def build() -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("gallery locked")
        return {"ok": True}

    publisher = StatusPublisher(build, published.append, interval_seconds=0.1, min_gap_seconds=0.05)
    publisher.start()
    try:
        assert wait_for(lambda: len(published) >= 1, timeout=2)
    finally:
        publisher.stop()


def test_the_null_communicator_keeps_the_newest_status_too() -> None:
    null = NullCommunicator()
    null.publish_state("status", {"status_seq": 3})
    null.publish_state("status", {"status_seq": 2})
    assert null.states["status"] == {"status_seq": 3}


def test_event_facts() -> None:
    facts = EventFacts()
    assert facts.last_access is None and facts.camera["ok"] and not facts.forced_open
    facts.on_event({"type": "access_granted", "person_id": "p1", "name": "Ada", "ts": "T1", "similarity": 0.7,
                    "frame": "0001.jpg"})
    facts.on_event({"type": "access_denied", "person_id": "p2", "name": "Bob", "ts": "T2"})
    assert facts.last_access == {"person_id": "p1", "name": "Ada", "ts": "T1", "similarity": 0.7}
    facts.on_event({"type": "camera_error", "error": "unplugged", "ts": "T3"})
    assert facts.camera == {"ok": False, "error": "unplugged", "since": "T3"}
    facts.on_event({"type": "camera_ok", "ts": "T4"})
    assert facts.camera == {"ok": True, "error": None, "since": "T4"}
    facts.on_event({"type": "door_forced_open"})
    assert facts.forced_open
    facts.on_event({"type": "door_closed", "seconds_open": 3})
    assert not facts.forced_open
