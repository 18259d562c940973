"""A private Mosquitto broker per test, plus a subscriber that records what reaches the broker.

Tests never use the system broker on 127.0.0.1:1883: they need to stop and restart theirs (outage tests) and must
not see anyone else's retained messages. Usage::

    from broker import Collector, Mosquitto, broker  # tests/ is on sys.path (tests/conftest.py exists)

    def test_x(broker: Mosquitto) -> None:
        with Collector(broker, "facegate/#") as seen:
            ...
            seen.wait_for(lambda msgs: len(msgs) >= 3)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

__all__ = ["Collector", "Message", "Mosquitto", "broker", "find_mosquitto", "mqtt_config", "wait_until"]


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary ($MOSQUITTO, PATH, then /usr/sbin), or None."""
    for candidate in (os.environ.get("MOSQUITTO"), shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class Mosquitto:
    """One mosquitto process on a free loopback port; ``restart()`` keeps the port so clients can reconnect."""

    host = "127.0.0.1"

    def __init__(self, binary: str | None = None, port: int | None = None) -> None:
        found = binary or find_mosquitto()
        if found is None:
            raise FileNotFoundError("mosquitto binary not found (install the 'mosquitto' package)")
        self.binary = found
        self.port = port or _free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="facegate-mosquitto-"))
        self.config_path = self._dir / "mosquitto.conf"
        self.log_path = self._dir / "mosquitto.log"
        self.config_path.write_text(f"listener {self.port} {self.host}\nallow_anonymous true\npersistence false\n")
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
            if wait_until(self._accepting, timeout=max(0.1, deadline - time.monotonic())):
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
        """Stop the broker (SIGTERM, then SIGKILL); connected clients see the connection drop."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)  # a paused broker would not act on SIGTERM
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=3)
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
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    """A fresh broker for one test (skipped when mosquitto is not installed)."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto binary not found: install the 'mosquitto' package to run broker tests")
    server = Mosquitto()
    try:
        server.start()
        yield server
    finally:
        server.close()


def mqtt_config(server: Mosquitto, **overrides: Any) -> Any:
    """A facegate ``MqttConfig`` pointing at ``server`` (keyword overrides are config fields)."""
    from facegate.config import MqttConfig

    return MqttConfig(host=server.host, port=server.port, **overrides)


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool
    qos: int

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8")

    def json(self) -> Any:
        import json

        return json.loads(self.payload)


class Collector:
    """A paho subscriber that records every message on ``topic_filter`` (thread-safe snapshots via ``messages``).

    It reconnects by itself (1 s backoff) after the broker is restarted and re-subscribes on every connect.
    """

    def __init__(self, server: Mosquitto, topic_filter: str = "#", qos: int = 1) -> None:
        self._server = server
        self._filter = topic_filter
        self._qos = qos
        self._lock = threading.Lock()
        self._messages: list[Message] = []
        self._subscribed = threading.Event()
        self.subscriptions = 0  # completed subscriptions so far: one per (re)connect
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"collector-{os.getpid()}-{id(self)}")
        # Reconnect faster than facegate's 1 s minimum so a test can be subscribed again before the device is.
        self.client.reconnect_delay_set(0.1, 0.2)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if not rc.is_failure:
            client.subscribe(self._filter, qos=self._qos)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        self.subscriptions += 1
        self._subscribed.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._subscribed.clear()

    def wait_subscribed(self, timeout: float = 5.0, after: int = 0) -> None:
        """Block until more than ``after`` subscriptions completed (take ``subscriptions`` before a restart).

        After ``Mosquitto.restart()`` anything published before the collector re-subscribed is not seen.
        """
        if not wait_until(lambda: self.subscriptions > after and self._subscribed.is_set(), timeout=timeout):
            raise TimeoutError("collector did not (re)subscribe in time")

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self._messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos))

    def start(self, timeout: float = 5.0) -> Collector:
        self.client.connect(self._server.host, self._server.port, keepalive=10)
        self.client.loop_start()
        self.wait_subscribed(timeout)
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    @property
    def messages(self) -> list[Message]:
        with self._lock:
            return list(self._messages)

    def on(self, topic: str) -> list[Message]:
        return [m for m in self.messages if m.topic == topic]

    def wait_for(self, predicate: Callable[[list[Message]], bool], timeout: float = 5.0) -> list[Message]:
        """Wait until ``predicate(messages)`` holds; raises AssertionError with what was seen on timeout."""
        if not wait_until(lambda: predicate(self.messages), timeout=timeout):
            seen = "\n".join(f"  {m.topic} retain={m.retain} {m.payload[:200]!r}" for m in self.messages)
            raise AssertionError(f"timed out after {timeout} s; {len(self.messages)} message(s) seen:\n{seen}")
        return self.messages

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
