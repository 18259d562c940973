"""Console password checks: on one thread of their own, a few waiting at most, so memory is bounded by design.

Each scrypt check (facegate.web.accounts) takes 16 MiB. Run on the request threads, N parallel logins were N
checks at once (16 parallel wrong passwords from one address: +257 MB of service RSS), and since each thread
allocated in its own glibc malloc arena, the memory stayed in the process after the burst: a few bursts from a
few addresses were enough for the kernel to kill the door on a 512 MB Pi. Here every check runs on the same
single worker thread (so one arena, 16 MiB at most, whatever the burst); up to ``PASSWORD_QUEUE`` logins wait
their turn and any more are refused at once (:class:`CheckerBusy`, HTTP 429), and when the queue runs empty the
freed heap is handed back to the OS (facegate.process.memtrim). One worker also means a login flood can use at most one
core, never the frame loop's.
"""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError, ThreadPoolExecutor

from facegate.process.memtrim import release_free_memory
from facegate.web.accounts import User, UserStore
from facegate.web.priority import lower_this_thread

PASSWORD_WORKERS = 1
PASSWORD_QUEUE = 4  # logins waiting for the worker; the next is refused at once


class CheckerBusy(Exception):
    """Too many logins are waiting for a password check: refuse this one now (no guess was checked)."""


class PasswordChecker:
    def __init__(self, users: UserStore, workers: int = PASSWORD_WORKERS, waiting: int = PASSWORD_QUEUE) -> None:
        self._users = users
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="facegate-web-password",
                                            initializer=lower_this_thread)
        self._admitted = threading.BoundedSemaphore(workers + waiting)
        self._lock = threading.Lock()
        self._pending = 0
        self.checked = 0
        self.refused_busy = 0

    def authenticate(self, name: str, password: str) -> User | None:
        """The user if ``password`` is theirs, else None; raises :class:`CheckerBusy` when the queue is full."""
        if not self._admitted.acquire(blocking=False):
            with self._lock:
                self.refused_busy += 1
            raise CheckerBusy("too many logins at once")
        try:
            with self._lock:
                self._pending += 1
            try:
                return self._executor.submit(self._check, name, password).result()
            except (CancelledError, RuntimeError):  # the console is stopping
                with self._lock:
                    self._pending -= 1
                raise CheckerBusy("the console is stopping") from None
        finally:
            self._admitted.release()

    def _check(self, name: str, password: str) -> User | None:
        try:
            return self._users.authenticate(name, password)
        finally:
            with self._lock:
                self._pending -= 1
                self.checked += 1
                idle = self._pending == 0
            if idle:  # the end of a burst: scrypt's 16 MiB goes back to the OS, not into the arena's free list
                release_free_memory()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
