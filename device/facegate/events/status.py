"""The retained ``status`` topic: published on change, coalesced, complete every time, never out of order.

Dashboards (Home Assistant's sensors) read ``status``; a grant that shows up a minute late, or a status that
lacks half its keys, is a broken sensor. So:

* :class:`StatusPublisher` builds the whole status with the service's plain ``build()`` function, on one
  thread of its own, when something changed (:meth:`StatusPublisher.request`) and on a heartbeat. Requests
  arriving within ``min_gap_seconds`` of the last publication are folded into one, built when the gap has
  passed, so a burst (a queue of grants, a chattering contact) costs at most one status per gap and the
  latest state always goes out.
* Each status carries ``status_seq``, increasing by one per publication; the transport keeps only the highest
  it was given (last writer wins), so an older status can never overwrite a newer one.
* :class:`EventFacts` derives from the event stream what the status reports about the recent past: the last
  access, the camera's health, a forced door.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["CHANGE_EVENTS", "EventFacts", "StatusPublisher"]

log = logging.getLogger(__name__)

#: Events after which the status is re-published (the state they change is in it).
CHANGE_EVENTS = frozenset({
    "access_granted", "access_denied", "unknown_face", "spoof_detected",
    "door_opened", "door_closed", "door_held_open", "door_forced_open", "door_unlocked", "door_locked",
    "camera_error", "camera_ok", "gallery_updated", "outbox_full", "service_started",
    # the access panel's link and counters (the status's ``panel`` object, facegate/panel)
    "osdp_online", "osdp_offline", "osdp_secure_channel_failed", "osdp_tamper", "credential_sent",
    "recognition_error", "recognition_ok",  # the ``recognition`` object (facegate.recognition.health)
})


class EventFacts:
    """What the status says about the recent past, kept up to date as an emitter listener (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_access: dict[str, Any] | None = None
        self._camera: dict[str, Any] = {"ok": True, "error": None, "since": None}
        self._forced_open = False
        self._recognition: dict[str, Any] = {"ok": True, "error": None, "since": None}

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        with self._lock:
            if kind == "access_granted":
                self._last_access = {k: event.get(k) for k in ("person_id", "name", "ts", "similarity")}
            elif kind == "camera_error":
                self._camera = {"ok": False, "error": event.get("error"), "since": event.get("ts")}
            elif kind == "camera_ok":
                self._camera = {"ok": True, "error": None, "since": event.get("ts")}
            elif kind == "recognition_error":
                self._recognition = {"ok": False, "error": event.get("error"), "since": event.get("ts")}
            elif kind == "recognition_ok":
                self._recognition = {"ok": True, "error": None, "since": event.get("ts")}
            elif kind == "door_forced_open":
                self._forced_open = True
            elif kind == "door_closed":
                self._forced_open = False

    @property
    def last_access(self) -> dict[str, Any] | None:
        """``{"person_id", "name", "ts", "similarity"}`` of the last grant, or None."""
        with self._lock:
            return None if self._last_access is None else dict(self._last_access)

    @property
    def camera(self) -> dict[str, Any]:
        """``{"ok", "error", "since"}``: ``since`` is when it last changed (None: fine since start)."""
        with self._lock:
            return dict(self._camera)

    @property
    def recognition(self) -> dict[str, Any]:
        """``{"ok", "error", "since"}`` like ``camera``: False from ``recognition_error`` to ``recognition_ok``."""
        with self._lock:
            return dict(self._recognition)

    @property
    def forced_open(self) -> bool:
        """True from a ``door_forced_open`` until the door closes again."""
        with self._lock:
            return self._forced_open


class StatusPublisher:
    """Builds and publishes the status on request (coalesced) and every ``interval_seconds``."""

    def __init__(
        self,
        build: Callable[[], dict[str, Any]],
        publish: Callable[[dict[str, Any]], None],
        *,
        interval_seconds: float = 60.0,
        min_gap_seconds: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._build = build
        self._publish = publish
        self._interval = float(interval_seconds)
        self._min_gap = float(min_gap_seconds)
        self._clock = clock
        self._lock = threading.Lock()  # one build+publish at a time: seq order is publication order
        self._wake = threading.Event()
        self._requested = False
        self._stopping = False
        self._seq = 0
        self._last = -float("inf")
        self._thread: threading.Thread | None = None

    @property
    def seq(self) -> int:
        """``status_seq`` of the last status published (0: none yet)."""
        return self._seq

    def request(self) -> None:
        """Something in the status changed: publish soon (at most ``min_gap_seconds`` from now). Never blocks."""
        self._requested = True
        self._wake.set()

    def publish_now(self) -> dict[str, Any]:
        """Build and publish at once, in the caller's thread (start-up, shutdown); returns what was published."""
        with self._lock:
            status = dict(self._build())
            self._seq += 1
            status["status_seq"] = self._seq
            self._last = self._clock()
            self._publish(status)
            return status

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("StatusPublisher.start() called twice")
        self._thread = threading.Thread(target=self._run, name="facegate-status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread (a pending request is dropped: call :meth:`publish_now` for a final status)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while not self._stopping:
            now = self._clock()
            due = self._last + (self._min_gap if self._requested else self._interval)
            if now < due:
                self._wake.wait(timeout=due - now)
                self._wake.clear()
                continue
            self._requested = False
            try:
                self.publish_now()
            except Exception:  # a status that cannot be built must not end status publishing for good
                log.exception("could not build or publish the status")
                self._last = self._clock()
