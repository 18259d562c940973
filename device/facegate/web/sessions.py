"""Console sessions (random tokens in HttpOnly, Secure, SameSite=Strict cookies) and the login rate limit.

Sessions live in memory only: a restart logs everyone out, which is the safe failure. Each carries its own CSRF
token, which every change must echo in ``X-CSRF-Token``; the user's account fingerprint is re-checked on every
request, so ``facegate user passwd/remove`` ends that user's sessions at once.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field

MAX_SESSIONS = 200
ABSOLUTE_SESSION_SECONDS = 12 * 3600
LOGIN_WINDOW_SECONDS = 60.0
LOGIN_MAX_FAILURES = 9  # the 10th wrong attempt within the window is refused unchecked (429)
MAX_TRACKED_ADDRESSES = 10_000


@dataclass
class Session:
    token: str
    user: str
    role: str
    fingerprint: str
    csrf: str
    created: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)


class SessionStore:
    def __init__(self, idle_seconds: float) -> None:
        self._idle = idle_seconds
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    def create(self, user: str, role: str, fingerprint: str) -> Session:
        session = Session(secrets.token_urlsafe(32), user, role, fingerprint, secrets.token_urlsafe(32))
        with self._lock:
            self._expire_locked(time.monotonic())
            while len(self._sessions) >= MAX_SESSIONS:
                oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
                del self._sessions[oldest.token]
            self._sessions[session.token] = session
        return session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        now = time.monotonic()
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return None
            if now - session.last_seen > self._idle or now - session.created > ABSOLUTE_SESSION_SECONDS:
                del self._sessions[token]
                return None
            session.last_seen = now
            return session

    def end(self, token: str) -> None:
        with self._lock:
            self._sessions.pop(token, None)

    def _expire_locked(self, now: float) -> None:
        for token in [t for t, s in self._sessions.items() if now - s.last_seen > self._idle]:
            del self._sessions[token]

    def __len__(self) -> int:
        return len(self._sessions)


class LoginLimiter:
    """Failed logins per client address in a sliding window; memory bounded by ``MAX_TRACKED_ADDRESSES``."""

    def __init__(self, window_seconds: float = LOGIN_WINDOW_SECONDS, max_failures: int = LOGIN_MAX_FAILURES) -> None:
        self._window, self._max = window_seconds, max_failures
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}
        self._throttled: dict[str, float] = {}

    def _recent_locked(self, address: str, now: float) -> deque[float]:
        times = self._failures.get(address)
        if times is None:
            return deque()
        while times and now - times[0] > self._window:
            times.popleft()
        if not times:
            del self._failures[address]
        return times

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try again; 0 when it may try now."""
        now = time.monotonic()
        with self._lock:
            times = self._recent_locked(address, now)
            if len(times) < self._max:
                return 0.0
            return max(1.0, self._window - (now - times[0]))

    def note_throttled(self, address: str) -> bool:
        """True the first time ``address`` is refused in a window: the one moment worth an event."""
        now = time.monotonic()
        with self._lock:
            last = self._throttled.get(address)
            if last is not None and now - last < self._window:
                return False
            if len(self._throttled) >= MAX_TRACKED_ADDRESSES:
                self._throttled.clear()
            self._throttled[address] = now
            return True

    def failed(self, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            if address not in self._failures and len(self._failures) >= MAX_TRACKED_ADDRESSES:
                for key in [k for k, v in self._failures.items() if not v or now - v[-1] > self._window]:
                    del self._failures[key]
                if len(self._failures) >= MAX_TRACKED_ADDRESSES:  # under a spray: forget the stalest
                    del self._failures[min(self._failures, key=lambda k: self._failures[k][-1])]
            self._failures.setdefault(address, deque()).append(now)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)
