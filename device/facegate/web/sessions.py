"""Console sessions (random tokens in HttpOnly, Secure, SameSite=Strict cookies) and the login rate limit.

Sessions live in memory only: a restart logs everyone out, which is the safe failure. Each carries its own CSRF
token, which every change must echo in ``X-CSRF-Token``; the user's account fingerprint is re-checked on every
request, so ``facegate user passwd/remove`` ends that user's sessions at once.

The login limiter's failures, unlike the sessions, are kept across restarts (``<state_dir>/web_login_failures.json``,
mode 0600): a restart (or a crash someone provokes) must not hand every address a fresh set of guesses.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

MAX_SESSIONS_PER_USER = 16  # a user's 17th login ends that user's own oldest session, never another user's
MAX_SESSIONS = 1000  # memory bound over all accounts (reached only with more than 60 accounts all logged in)
ABSOLUTE_SESSION_SECONDS = 12 * 3600
LOGIN_WINDOW_SECONDS = 60.0
LOGIN_MAX_FAILURES = 9  # the 10th wrong attempt within the window is refused unchecked (429)
MAX_TRACKED_ADDRESSES = 10_000
FAILURES_FILE = "web_login_failures.json"
PERSIST_INTERVAL_SECONDS = 1.0  # the failures file is rewritten at most this often (a flood is not a write storm)


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
            own = [s for s in self._sessions.values() if s.user == user]
            while len(own) >= MAX_SESSIONS_PER_USER:  # a user's logins only ever push out their own sessions
                oldest = min(own, key=lambda s: s.last_seen)
                own.remove(oldest)
                del self._sessions[oldest.token]
            while len(self._sessions) >= MAX_SESSIONS:  # then the busiest account's oldest
                counts: dict[str, int] = {}
                for s in self._sessions.values():
                    counts[s.user] = counts.get(s.user, 0) + 1
                busiest = max(counts, key=lambda u: counts[u])
                oldest = min((s for s in self._sessions.values() if s.user == busiest), key=lambda s: s.last_seen)
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
    """Failed logins per client address in a sliding window; memory bounded by ``MAX_TRACKED_ADDRESSES``.

    An attempt is counted as a failure *before* its password is checked (:meth:`reserve`) and un-counted only
    when it turns out right (:meth:`release`): counted after the check, N parallel wrong passwords all passed
    the "fewer than 9 failures?" test before the first of them was recorded.

    With ``path``, the failures are written there (mode 0600, at most once per ``PERSIST_INTERVAL_SECONDS``, and
    on :meth:`close`) and read back at start, as wall-clock times, so they outlive a restart.
    """

    def __init__(self, window_seconds: float = LOGIN_WINDOW_SECONDS, max_failures: int = LOGIN_MAX_FAILURES,
                 path: Path | None = None) -> None:
        self._window, self._max = window_seconds, max_failures
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}
        self._throttled: dict[str, float] = {}
        self._path = path
        self._write_lock = threading.Lock()
        self._last_write = 0.0
        self._timer: threading.Timer | None = None
        self._dirty = False
        if path is not None:
            self._load(path)

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

    def reserve(self, address: str) -> float | None:
        """Count one attempt from ``address`` as failed, before it is checked; its stamp (for :meth:`release`),
        or None when ``address`` already has its ``max_failures`` in the window (refuse it unchecked)."""
        now = time.monotonic()
        with self._lock:
            if len(self._recent_locked(address, now)) >= self._max:
                return None
            self._append_locked(address, now)
        self._changed()
        return now

    def release(self, address: str, stamp: float) -> None:
        """Un-count a reserved attempt: the password was right, or it was never checked (the checker was busy)."""
        with self._lock:
            times = self._failures.get(address)
            if times is None or stamp not in times:
                return
            times.remove(stamp)
            if not times:
                del self._failures[address]
        self._changed()

    def failed(self, address: str) -> None:
        with self._lock:
            self._append_locked(address, time.monotonic())
        self._changed()

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)
        self._changed()

    def _append_locked(self, address: str, now: float) -> None:
        if address not in self._failures and len(self._failures) >= MAX_TRACKED_ADDRESSES:
            for key in [k for k, v in self._failures.items() if not v or now - v[-1] > self._window]:
                del self._failures[key]
            if len(self._failures) >= MAX_TRACKED_ADDRESSES:  # under a spray: forget the stalest
                del self._failures[min(self._failures, key=lambda k: self._failures[k][-1])]
        self._failures.setdefault(address, deque()).append(now)  # equal stamps are interchangeable for release

    # ------------------------------------------------------------------ persistence

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text())
            stored = data["failures"]
            if not isinstance(stored, dict):
                raise TypeError("failures is not an object")
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: unreadable login failure counts, starting without them: %s", path, exc)
            return
        now_mono, now_wall = time.monotonic(), time.time()
        for address, walls in list(stored.items())[:MAX_TRACKED_ADDRESSES]:
            if not isinstance(address, str) or not isinstance(walls, list):
                continue
            # A time in the future (the clock was set back, as on a Pi without RTC before NTP) counts as now.
            ages = sorted((max(0.0, now_wall - w) for w in walls if isinstance(w, (int, float))), reverse=True)
            recent = [now_mono - age for age in ages if age < self._window][-self._max:]
            if recent:
                self._failures[address] = deque(recent)

    def _changed(self) -> None:
        if self._path is None:
            return
        with self._write_lock:
            self._dirty = True
            if self._timer is not None:
                return  # a write is already scheduled
            wait = PERSIST_INTERVAL_SECONDS - (time.monotonic() - self._last_write)
            if wait > 0:
                self._timer = threading.Timer(wait, self._flush_from_timer)
                self._timer.daemon = True
                self._timer.name = "facegate-web-limiter"
                self._timer.start()
                return
        self.flush()

    def _flush_from_timer(self) -> None:
        with self._write_lock:
            self._timer = None
        self.flush()

    def flush(self) -> None:
        """Write the failures now (if any changed since the last write)."""
        if self._path is None:
            return
        with self._write_lock:
            if not self._dirty:
                return
            self._dirty = False
            self._last_write = time.monotonic()
            now_mono, now_wall = time.monotonic(), time.time()
            with self._lock:
                snapshot = {a: [round(now_wall - (now_mono - t), 3) for t in times]
                            for a, times in self._failures.items() if times and now_mono - times[-1] <= self._window}
            try:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self._path.with_name(self._path.name + ".tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    os.fchmod(fd, 0o600)
                    os.write(fd, json.dumps({"failures": snapshot}).encode())
                finally:
                    os.close(fd)
                os.replace(tmp, self._path)
            except OSError as exc:  # a full or read-only disk must not stop logins
                log.warning("%s: could not save the login failure counts: %s", self._path, exc)

    def close(self) -> None:
        with self._write_lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        self.flush()
