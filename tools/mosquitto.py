"""A private Mosquitto on a free loopback port: the one broker launcher of the tests and the tools.

Tests and tools never use the machine's broker on 127.0.0.1:1883: they stop, pause and restart theirs (outage
tests, soaks) and must not see anyone else's retained messages. The tests' per-test fixture and subscriber are in
tests/support/broker.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tools.net import free_port
from tools.wait import wait_for


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary ($MOSQUITTO, PATH, then /usr/sbin), or None."""
    for candidate in (os.environ.get("MOSQUITTO"), shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class Mosquitto:
    """One mosquitto process on a free loopback port; ``restart()`` keeps the port so clients can reconnect."""

    host = "127.0.0.1"

    def __init__(self, binary: str | None = None, port: int | None = None,
                 settings: str = "persistence false\n", stop_timeout: float = 3.0) -> None:
        """``settings``: mosquitto.conf lines after the loopback listener (e.g. ``log_type all`` to log every
        PUBLISH), ``{dir}`` standing for ``dir``, this broker's own temporary folder (removed by ``close()``);
        ``stop_timeout``: how long ``stop()`` waits after SIGTERM (a broker with persistence saves then)."""
        found = binary or find_mosquitto()
        if found is None:
            raise FileNotFoundError("mosquitto binary not found (install the 'mosquitto' package)")
        self.binary = found
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="facegate-mosquitto-"))
        self.config_path = self.dir / "mosquitto.conf"
        self.log_path = self.dir / "mosquitto.log"
        self.config_path.write_text(f"listener {self.port} {self.host}\nallow_anonymous true\n"
                                    + settings.format(dir=self.dir))
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 5.0) -> Mosquitto:
        if self.running:
            return self
        deadline = time.monotonic() + timeout
        while True:
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    [self.binary, "-c", str(self.config_path)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            if wait_for(self._accepting, max(0.1, deadline - time.monotonic()), fail=False):
                return self
            # Most likely the port is briefly unavailable after a restart: try again until the deadline.
            self.stop()
            if time.monotonic() >= deadline:
                raise RuntimeError(f"mosquitto did not start on port {self.port}; log:\n{self.log_text()}")
            time.sleep(0.05)

    def _accepting(self) -> bool:
        if self._proc is None or self._proc.poll() is not None:
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            return s.connect_ex((self.host, self.port)) == 0

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open but nothing is acknowledged until ``resume()``."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """Crash the broker (SIGKILL): whatever it had not acknowledged is gone."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=3)

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``stop_timeout``); connected clients see the connection
        drop."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)  # a paused broker would not act on SIGTERM
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=3)

    def restart(self) -> Mosquitto:
        self.stop()
        return self.start()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
