"""Open console streams (camera MJPEG, event SSE, the door screen's camera), counted per kind and per account.

Per kind, so event streams (any viewer's tabs) never use up the camera streams, and viewers' camera streams
never the door screen's. Per account, so one account cannot hold every stream of a kind. And an admin who finds a
kind full ends the oldest viewer stream of that kind to take its place: a viewer can never keep the admins out.
A stream's loop watches its :attr:`Ticket.stop` and ends when it is set (preempted, or the console stopping).
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field

PER_ACCOUNT = {"camera": 2, "events": 4}  # kinds not named here (the door screen's) have no per-account cap


@dataclass(eq=False)
class Ticket:
    kind: str
    user: str | None
    admin: bool
    order: int
    stop: threading.Event = field(default_factory=threading.Event)
    counted: bool = True


class StreamSlots:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: list[Ticket] = []
        self._order = itertools.count()
        self.dropped = 0
        self.preempted = 0

    def acquire(self, kind: str, limit: int, user: str | None = None, admin: bool = False) -> Ticket | None:
        """A ticket for one more stream of ``kind``, or None when it must be refused (HTTP 503)."""
        with self._lock:
            same = [t for t in self._open if t.kind == kind]
            cap = PER_ACCOUNT.get(kind)
            if cap is not None and user is not None and sum(t.user == user for t in same) >= cap:
                return None
            if len(same) >= limit:
                viewers = [t for t in same if not t.admin and t.user is not None]
                if not admin or not viewers:
                    return None
                victim = min(viewers, key=lambda t: t.order)
                self._forget_locked(victim)
                victim.stop.set()
                self.preempted += 1
            ticket = Ticket(kind, user, admin, next(self._order))
            self._open.append(ticket)
            return ticket

    def release(self, ticket: Ticket, dropped: bool = False) -> None:
        with self._lock:
            self._forget_locked(ticket)
            self.dropped += int(dropped)

    def _forget_locked(self, ticket: Ticket) -> None:
        if ticket.counted:
            ticket.counted = False
            self._open.remove(ticket)

    def count(self, kind: str | None = None) -> int:
        with self._lock:
            return sum(kind is None or t.kind == kind for t in self._open)

    def stop_all(self) -> None:
        with self._lock:
            for t in self._open:
                t.stop.set()
