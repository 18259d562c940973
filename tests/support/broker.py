"""A private Mosquitto per test (tools/mosquitto.py, a fixture every test module has through tests/conftest.py),
plus a subscriber that records what reaches the broker.

Tests never use the system broker on 127.0.0.1:1883: they need to stop and restart theirs (outage tests) and must
not see anyone else's retained messages. Usage::

    from support.broker import Collector, Mosquitto  # tests/ is on sys.path (tests/conftest.py is there)

    def test_x(broker: Mosquitto) -> None:
        with Collector(broker, "facegate/#") as seen:
            ...
            seen.wait_for(lambda msgs: len(msgs) >= 3)
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tools.mosquitto import Mosquitto, find_mosquitto
from tools.wait import wait_for

__all__ = ["Collector", "Message", "Mosquitto", "broker", "find_mosquitto", "module_broker", "mqtt_config"]


def _running_broker() -> Iterator[Mosquitto]:
    """A started broker until the generator is closed (the test skipped when mosquitto is not installed)."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto binary not found: install the 'mosquitto' package to run broker tests")
    server = Mosquitto()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    """A fresh broker for one test (skipped when mosquitto is not installed)."""
    yield from _running_broker()


@pytest.fixture(scope="module")
def module_broker() -> Iterator[Mosquitto]:
    """One broker shared by a module's tests, for a module-scoped door that many quick tests talk to (each
    test then uses its own topics or nonces, as they cannot rely on a clean broker)."""
    yield from _running_broker()


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
        if not wait_for(lambda: self.subscriptions > after and self._subscribed.is_set(), timeout, fail=False):
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
        if not wait_for(lambda: predicate(self.messages), timeout, fail=False):
            seen = "\n".join(f"  {m.topic} retain={m.retain} {m.payload[:200]!r}" for m in self.messages)
            raise AssertionError(f"timed out after {timeout} s; {len(self.messages)} message(s) seen:\n{seen}")
        return self.messages

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
