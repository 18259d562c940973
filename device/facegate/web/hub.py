"""Events fanned out to the console's live lists (SSE), without ever making the emitting thread wait.

:meth:`EventHub.on_event` is an emitter listener, so it runs on whichever thread emitted (often the frame loop):
it appends to a short ring and ``put_nowait``s into each subscriber's bounded queue. A subscriber whose queue is
full (a stalled browser) is marked dropped and its stream ends; nothing ever blocks.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from typing import Any

RECENT_EVENTS = 50
SUBSCRIBER_QUEUE = 200
DECISION_TYPES = frozenset({"access_granted", "access_denied", "unknown_face", "spoof_detected"})


class Subscriber:
    def __init__(self) -> None:
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue(SUBSCRIBER_QUEUE)
        self.dropped = False


class EventHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        self._subscribers: list[Subscriber] = []
        self.last_decision: tuple[float, dict[str, Any]] | None = None  # (monotonic time, event)
        self.last_challenge: tuple[float, dict[str, Any]] | None = None  # the door screen's head-turn prompt
        self.dropped_subscribers = 0

    def on_event(self, event: dict[str, Any]) -> None:
        with self._lock:
            self._recent.append(event)
            if event.get("type") in DECISION_TYPES:
                self.last_decision = (time.monotonic(), event)
            elif event.get("type") == "liveness_challenge":
                self.last_challenge = (time.monotonic(), event)
            subscribers = self._subscribers
        for sub in subscribers:
            if sub.dropped:
                continue
            try:
                sub.queue.put_nowait(event)
            except queue.Full:
                sub.dropped = True
                self.dropped_subscribers += 1

    def recent(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._recent)

    def subscribe(self) -> Subscriber:
        sub = Subscriber()
        with self._lock:
            self._subscribers = [*self._subscribers, sub]
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            self._subscribers = [s for s in self._subscribers if s is not sub]

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
