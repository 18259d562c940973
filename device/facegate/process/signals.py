"""SIGTERM/SIGINT: release what must not stay held (the door's relay), then ask the process to stop.

The handler only writes the signal number into a pipe. Python runs a handler on the main thread wherever that
was interrupted, possibly holding a lock: the event emitter's (SIGTERM during an event write hung the service,
found by tests/service/test_sigkill_service.py), the stop event's own (while the camera supervisor waits out a
back-off), or threading's (starting a thread from a handler needs it). Anything in the handler that takes a lock
can deadlock the stop, so a watcher thread, blocked on the pipe from the start, does the work: it runs
``release`` as soon as the interrupted call lets go of the locks it needs, then ``stop``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

__all__ = ["StopSignals"]

log = logging.getLogger("facegate.service")


class StopSignals:
    """The watcher and the handlers of one process; ``release`` first, whatever happens next, then ``stop``."""

    def __init__(self, release: Callable[[], None], stop: Callable[[], None]) -> None:
        self._release = release
        self._stop = stop
        self._watcher: threading.Thread | None = None
        self._signalled = False  # set by the handler: a plain attribute, no lock
        self._wake_fd: int | None = None

    def install(self) -> None:
        """Start the watcher and take over SIGTERM and SIGINT (call from the main thread)."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        self._wake_fd = write_fd

        def watch() -> None:
            data = os.read(read_fd, 1)
            if not data or data[0] == 0:  # the process ended without a signal (settle wakes us)
                return
            log.info("signal %d: stopping", data[0])
            try:
                self._release()
            finally:
                self._stop()

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            self._signalled = True
            with contextlib.suppress(OSError):  # a full pipe means a signal is already on its way
                os.write(write_fd, bytes([signum]))

        self._watcher = threading.Thread(target=watch, name="facegate-signals", daemon=True)
        self._watcher.start()
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def settle(self, timeout: float = 5.0) -> None:
        """At shutdown: after a signal, wait for its release (so what the release reports comes before what the
        shutdown reports); without one, wake the watcher so it ends."""
        if self._watcher is None:
            return
        if self._signalled:
            self._watcher.join(timeout)
        elif self._wake_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake_fd, b"\0")
