"""A token bucket for events that outsiders can trigger at will.

Anyone allowed to publish on ``lock/set`` can send thousands of bad commands a second. Each refusal is an
event, and every event is an fsynced outbox row: unthrottled, such a flood would wear the SD card and fill the
outbox until real events (a grant, a forced door) were refused as ``outbox_full``. So refusals are reported
at a bounded rate, and the ones not reported are counted and carried by the next report.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["ReportLimiter"]


class ReportLimiter:
    """Allows ``burst`` reports at once and ``per_minute`` on average; counts what it holds back."""

    def __init__(self, burst: int = 20, per_minute: float = 20.0, clock: Callable[[], float] = time.monotonic) -> None:
        if burst < 1 or per_minute <= 0:
            raise ValueError("burst must be >= 1 and per_minute > 0")
        self._burst = float(burst)
        self._rate = per_minute / 60.0
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self._held_back = 0
        self._lock = threading.Lock()

    def admit(self) -> int | None:
        """None when this report must be dropped (it is counted); else how many were dropped before it."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now
            if self._tokens < 1.0:
                self._held_back += 1
                return None
            self._tokens -= 1.0
            held, self._held_back = self._held_back, 0
            return held
