"""systemd notify protocol (READY=1, WATCHDOG=1, STOPPING=1) over the stdlib socket: no extra dependency."""

from __future__ import annotations

import os
import socket
import time


class SystemdNotifier:
    """Talks to $NOTIFY_SOCKET when systemd started us with Type=notify; does nothing otherwise."""

    def __init__(self, min_watchdog_interval_seconds: float = 1.0) -> None:
        self.address = os.environ.get("NOTIFY_SOCKET")
        usec = os.environ.get("WATCHDOG_USEC")
        # Ping at least twice per watchdog period, at most once a second.
        period = int(usec) / 1e6 / 2 if usec and usec.isdigit() else min_watchdog_interval_seconds
        self.watchdog_interval = max(min(period, 5.0), 0.0) if usec else min_watchdog_interval_seconds
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, message: str) -> None:
        if not self.address:
            return
        address = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.connect(address)
                sock.sendall(message.encode())
            except OSError:
                pass  # systemd went away (shutdown); nothing useful to do

    def ready(self) -> None:
        self.notify("READY=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def watchdog(self) -> None:
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.notify("WATCHDOG=1")
