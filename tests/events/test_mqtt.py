"""MQTT delivery against a real (private) Mosquitto: in order, never lost, removed only on PUBACK.

Timing: facegate reconnects with a 1 s backoff, the test collector with 0.1-0.2 s, so after a broker restart the
collector is subscribed again before the device re-sends. Every wait polls with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.publish as publish
import pytest
from facegate.config import CommandsConfig
from facegate.events import EventEmitter, Outbox
from facegate.events.commands import CommandVerifier
from facegate.events.discovery import discovery_payload
from facegate.events.mqtt import MqttCommunicator
from support.broker import Collector, Mosquitto, mqtt_config

from tools.wait import wait_for

# `broker` is the private-mosquitto fixture: listing it here marks the import as used for ruff (F401/F811).

DEVICE = "door1"
BASE = f"facegate/{DEVICE}"
EVENTS = f"{BASE}/events"


class Device:
    """Outbox + emitter + communicator sharing one state directory, as the service wires them."""

    def __init__(self, server: Mosquitto, state: Path, **kw: Any) -> None:
        mqtt_overrides = kw.pop("mqtt", {})
        mqtt_overrides.setdefault("discovery", False)
        self.outbox = Outbox(state / "outbox.db", max_events=kw.pop("max_events", 1000))
        self.emitter = EventEmitter(DEVICE, self.outbox)
        self.verifier = CommandVerifier(CommandsConfig(), DEVICE, state / "nonces.db")
        kw.setdefault("reconnect_max_delay", 1)
        self.comm = MqttCommunicator(mqtt_config(server, **mqtt_overrides), DEVICE, self.emitter, self.verifier, **kw)

    def start(self, wait: bool = True) -> Device:
        self.comm.start()
        if wait:
            assert wait_for(lambda: self.comm.connected, timeout=5, fail=False), "device did not connect"
        return self

    def emit(self, n: int, type: str = "door_opened", **fields: Any) -> list[dict[str, Any]]:
        events = []
        for i in range(n):
            event = self.emitter.emit(type, i=i, **fields)
            assert event is not None
            events.append(event)
        return events

    def stop(self, flush: float = 2.0) -> int:
        left = self.comm.stop(flush)
        self.outbox.close()
        return left


@pytest.fixture
def devices(tmp_path: Path) -> Iterator[list[Device]]:
    """Devices created by a test are stopped even when it fails."""
    made: list[Device] = []
    yield made
    for device in made:
        with contextlib.suppress(Exception):
            device.comm.stop(0)


def events_of(collector: Collector) -> list[dict[str, Any]]:
    return [m.json() for m in collector.on(EVENTS)]


def assert_exactly(received: list[dict[str, Any]], sent: list[dict[str, Any]]) -> None:
    """Same events, same order, no duplicates, seq strictly increasing."""
    assert [e["event_id"] for e in received] == [e["event_id"] for e in sent]
    seqs = [e["seq"] for e in received]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_events_arrive_in_order_and_leave_the_outbox(broker: Mosquitto, tmp_path: Path, devices: list[Device]) -> None:
    with Collector(broker, EVENTS) as seen:
        device = Device(broker, tmp_path, max_inflight=5)
        devices.append(device)
        device.start()
        sent = device.emit(40, similarity=0.5)
        seen.wait_for(lambda m: len(m) >= 40)
        assert wait_for(lambda: len(device.outbox) == 0, timeout=5)
        received = events_of(seen)
        assert_exactly(received, sent)
        assert received == sent  # the published JSON is the stored event, field for field
        assert all(m.qos == 1 and not m.retain for m in seen.on(EVENTS))
        assert device.stop() == 0


def test_broker_down_for_all_emits_then_everything_delivered_once(
    broker: Mosquitto, tmp_path: Path, devices: list[Device]
) -> None:
    broker.stop()
    device = Device(broker, tmp_path)
    devices.append(device)
    device.start(wait=False)
    sent = device.emit(15)
    time.sleep(0.3)  # the first connection attempt has failed; the next is 1 s later
    assert not device.comm.connected
    assert len(device.outbox) == 15 and device.comm.inflight == 0  # nothing published while disconnected
    broker.start()
    with Collector(broker, EVENTS) as seen:
        seen.wait_for(lambda m: len(m) >= 15, timeout=5)
        assert wait_for(lambda: len(device.outbox) == 0, timeout=3)
        time.sleep(0.1)
        assert_exactly(events_of(seen), sent)
    assert device.stop() == 0


def test_events_leave_the_outbox_only_after_puback(broker: Mosquitto, tmp_path: Path, devices: list[Device]) -> None:
    with Collector(broker, EVENTS) as seen:
        device = Device(broker, tmp_path, max_inflight=3)
        devices.append(device)
        device.start()
        broker.pause()  # the connection stays up but nothing is acknowledged
        sent = device.emit(8)
        assert wait_for(lambda: device.comm.inflight == 3, timeout=3)
        time.sleep(0.3)
        assert len(device.outbox) == 8, "an event left the outbox without a PUBACK"
        assert device.comm.inflight == 3, "more than max_inflight events in flight"
        broker.resume()
        seen.wait_for(lambda m: len(m) >= 8)
        assert wait_for(lambda: len(device.outbox) == 0, timeout=3)
        assert_exactly(events_of(seen), sent)
        device.stop()


def test_unacked_events_survive_broker_crash_and_device_restart(
    broker: Mosquitto, tmp_path: Path, devices: list[Device]
) -> None:
    first = Device(broker, tmp_path)
    devices.append(first)
    first.start()
    broker.pause()
    sent = first.emit(5)
    assert wait_for(lambda: first.comm.inflight == 5, timeout=3)
    broker.kill()  # the broker dies holding the unacknowledged messages
    assert first.stop(flush=0.2) == 5  # the device shuts down too: nothing was acknowledged

    broker.start()
    with Collector(broker, EVENTS) as seen:
        second = Device(broker, tmp_path)  # "after reboot": new Outbox instance on the same file
        devices.append(second)
        assert len(second.outbox) == 5
        second.start()
        later = second.emit(2)
        seen.wait_for(lambda m: len(m) >= 7)
        assert wait_for(lambda: len(second.outbox) == 0, timeout=3)
        assert_exactly(events_of(seen), sent + later)
        assert later[0]["seq"] == sent[-1]["seq"] + 1  # seq continues across the restart
        second.stop()


def test_reconnect_resends_inflight_before_newer_events(
    broker: Mosquitto, tmp_path: Path, devices: list[Device]
) -> None:
    with Collector(broker, EVENTS) as seen:
        device = Device(broker, tmp_path, max_inflight=4)
        devices.append(device)
        device.start()
        broker.pause()
        sent = device.emit(4)
        assert wait_for(lambda: device.comm.inflight == 4, timeout=3)
        mark = seen.subscriptions
        broker.kill()
        assert wait_for(lambda: not device.comm.connected, timeout=3)
        sent += device.emit(6)  # while disconnected: must queue behind the 4 in flight
        broker.start()
        seen.wait_subscribed(after=mark)
        seen.wait_for(lambda m: len(m) >= 10, timeout=6)
        assert wait_for(lambda: len(device.outbox) == 0, timeout=3)
        assert_exactly(events_of(seen), sent)
        device.stop()


def test_availability_online_offline_and_last_will(broker: Mosquitto, tmp_path: Path, devices: list[Device]) -> None:
    topic = f"{BASE}/availability"
    with Collector(broker, topic) as seen:
        device = Device(broker, tmp_path)
        devices.append(device)
        device.start()
        seen.wait_for(lambda m: [x.text for x in m] == ["online"])
        device.stop()
        seen.wait_for(lambda m: [x.text for x in m] == ["online", "offline"])
    with Collector(broker, topic) as late:  # retained: a late subscriber learns the current state
        late.wait_for(lambda m: len(m) == 1 and m[0].retain and m[0].text == "offline")


_DOOR_PROCESS = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from facegate.config import CommandsConfig, MqttConfig\n"
    "from facegate.events import EventEmitter, Outbox\n"
    "from facegate.events.commands import CommandVerifier\n"
    "from facegate.events.mqtt import MqttCommunicator\n"
    "state = Path(sys.argv[3])\n"
    "lock = sys.argv[4] if len(sys.argv) > 4 else None  # given: a restarted door, discovery on\n"
    "comm = MqttCommunicator(MqttConfig(host=sys.argv[1], port=int(sys.argv[2]), discovery=lock is not None),\n"
    "    'door1', EventEmitter('door1', Outbox(state / 'o.db', 100)), CommandVerifier(CommandsConfig(), 'door1',\n"
    "    state / 'n.db'), **({'status_interval_seconds': None} if lock is not None else {}))\n"
    "if lock is not None:  # as the service does: its states before connecting\n"
    "    comm.publish_state('lock/state', lock)\n"
    "    comm.publish_state('status', {'status_seq': 1, 'lock': lock})\n"
    "comm.start()\n"
    "while not comm.connected: time.sleep(0.01)\n"
    "print('connected', flush=True)\n"
    "time.sleep(30)\n"
)


def door_process(broker: Mosquitto, state: Path, *lock: str) -> subprocess.Popen[bytes]:
    """The door's MQTT side alone in a child process, returned once connected (the tests SIGKILL it: a crash).

    With a lock state it is a restarted door: discovery on, that state and a status published before connecting.
    """
    child = subprocess.Popen([sys.executable, "-c", _DOOR_PROCESS, broker.host, str(broker.port), str(state), *lock],
                             stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"connected"
    except BaseException:
        end_process(child)
        raise
    return child


def end_process(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.kill()
        child.wait(timeout=5)
    if child.stdout is not None:
        child.stdout.close()


def test_last_will_on_crash(broker: Mosquitto, tmp_path: Path) -> None:
    topic = f"{BASE}/availability"
    with Collector(broker, topic) as seen:
        child = door_process(broker, tmp_path)
        try:
            seen.wait_for(lambda m: [x.text for x in m] == ["online"])
            child.send_signal(signal.SIGKILL)  # no DISCONNECT packet: the broker publishes the will
            child.wait(timeout=5)
            seen.wait_for(lambda m: [x.text for x in m] == ["online", "offline"], timeout=5)
        finally:
            end_process(child)


def test_a_restarted_door_publishes_its_fresh_states_before_online(broker: Mosquitto, tmp_path: Path) -> None:
    """A door that crashed while unlocked comes back: Home Assistant must never see it online and unlocked.

    HA shows a lock's retained state as soon as the availability is ``online``; if ``online`` came first, the
    crashed run's UNLOCKED showed for a moment and an automation on "lock turned on" fired."""
    children = []
    try:
        with Collector(broker, f"{BASE}/#") as seen:
            children.append(door_process(broker, tmp_path, "UNLOCKED"))
            seen.wait_for(lambda m: any(x.topic.endswith("/availability") and x.text == "online" for x in m))
            children[0].send_signal(signal.SIGKILL)  # the crash: the broker publishes the will
            children[0].wait(timeout=5)
            seen.wait_for(lambda m: m[-1].topic.endswith("/availability") and m[-1].text == "offline", timeout=5)
            crashed = len(seen.messages)
            children.append(door_process(broker, tmp_path, "LOCKED"))
            after = seen.wait_for(lambda m: any(x.topic.endswith("/availability") and x.text == "online"
                                                for x in m[crashed:]))[crashed:]
        order = [(x.topic.removeprefix(BASE + "/"), x.text) for x in after]
        online = order.index(("availability", "online"))
        assert ("lock/state", "LOCKED") in order[:online], order
        assert any(topic == "status" and '"LOCKED"' in text for topic, text in order[:online]), order
        assert ("lock/state", "UNLOCKED") not in order, order
    finally:
        for child in children:
            end_process(child)


def test_retained_states_and_status(broker: Mosquitto, tmp_path: Path, devices: list[Device]) -> None:
    device = Device(broker, tmp_path, status_interval_seconds=0.3)
    devices.append(device)
    device.comm.publish_state("lock/state", "LOCKED")  # before connecting: kept and sent on connect
    device.comm.publish_state("status", {"gallery_persons": 3, "fps": 14.5, "last_person": None})
    device.start()
    device.comm.publish_state("door/state", "closed")
    device.comm.publish_state("lock/state", "UNLOCKED")
    device.comm.publish_state("lock/state", "LOCKED")

    def retained_view() -> dict[str, Any]:
        with Collector(broker, f"{BASE}/#") as late:
            late.wait_for(lambda m: {x.topic for x in m} >= {f"{BASE}/lock/state", f"{BASE}/door/state"})
            return {m.topic: m for m in late.messages}

    assert wait_for(lambda: device.comm.inflight == 0 and device.comm.connected)
    time.sleep(0.1)
    view = retained_view()
    assert view[f"{BASE}/lock/state"].text == "LOCKED" and view[f"{BASE}/lock/state"].retain
    assert view[f"{BASE}/door/state"].text == "closed"
    status = view[f"{BASE}/status"].json()
    assert status["gallery_persons"] == 3 and status["fps"] == 14.5
    assert status["outbox_pending"] == 0 and status["events_dropped"] == 0 and status["ts"].endswith("Z")

    with Collector(broker, f"{BASE}/status") as periodic:  # re-published on the interval
        periodic.wait_for(lambda m: len(m) >= 3, timeout=3)

    # The broker loses its retained messages (no persistence): the device restores them after reconnecting.
    broker.restart()
    assert wait_for(lambda: not device.comm.connected, timeout=3)
    assert wait_for(lambda: device.comm.connected, timeout=5)
    time.sleep(0.2)
    view = retained_view()
    assert view[f"{BASE}/lock/state"].text == "LOCKED"
    assert view[f"{BASE}/availability"].text == "online"
    device.stop()


def test_home_assistant_discovery(broker: Mosquitto, tmp_path: Path, devices: list[Device]) -> None:
    topic = f"homeassistant/device/facegate_{DEVICE}/config"
    with Collector(broker, topic) as seen:
        device = Device(broker, tmp_path, mqtt={"discovery": True})
        devices.append(device)
        device.start()
        seen.wait_for(lambda m: len(m) == 1)
        payload = seen.messages[0].json()
        assert payload == discovery_payload(device.comm._config, DEVICE)
        assert payload["dev"]["identifiers"] == [f"facegate_{DEVICE}"]
        assert payload["dev"]["manufacturer"] == "facegate" and payload["o"]["name"] == "facegate"
        assert payload["availability_topic"] == f"{BASE}/availability"
        live = {cid: c for cid, c in payload["cmps"].items() if len(c) > 1}  # {"p": ...} alone removes one
        assert {c["p"] for c in live.values()} == {"event", "binary_sensor", "sensor"}
        assert not any("command_topic" in c for c in live.values())  # no HA unlock mode: nothing to press
        lock = live["lock_state"]
        assert (lock["state_topic"], lock["device_class"], lock["payload_on"]) == (f"{BASE}/lock/state", "lock",
                                                                                   "UNLOCKED")
        assert live["access"]["event_types"][:3] == ["access_granted", "access_denied", "unknown_face"]
        assert "door" not in live  # no contact wired
        assert all(c["qos"] == 1 for c in live.values())
        assert all(c["unique_id"].startswith(f"facegate_{DEVICE}_") for c in live.values())
        # Home Assistant restarted: it announces itself and the device re-sends discovery.
        publish.single("homeassistant/status", "online", hostname=broker.host, port=broker.port)
        seen.wait_for(lambda m: len(m) == 2)
    with Collector(broker, topic) as late:
        late.wait_for(lambda m: len(m) == 1 and m[0].retain)
    device.stop()


def test_mqtt5_protocol(broker: Mosquitto, tmp_path: Path, devices: list[Device]) -> None:
    with Collector(broker, EVENTS) as seen:
        device = Device(broker, tmp_path, mqtt={"protocol": "5"})
        devices.append(device)
        device.start()
        sent = device.emit(5)
        seen.wait_for(lambda m: len(m) >= 5)
        assert wait_for(lambda: len(device.outbox) == 0, timeout=3)
        assert_exactly(events_of(seen), sent)
        device.stop()


def test_stop_with_broker_down_keeps_events(broker: Mosquitto, tmp_path: Path, devices: list[Device]) -> None:
    broker.stop()
    device = Device(broker, tmp_path)
    devices.append(device)
    device.start(wait=False)
    device.emit(3)
    started = time.monotonic()
    assert device.comm.stop(0.3) == 3
    assert time.monotonic() - started < 2.0
    assert len(Outbox(tmp_path / "outbox.db", max_events=10)) == 3


def test_outbox_full_is_counted_and_reported(broker: Mosquitto, tmp_path: Path, devices: list[Device]) -> None:
    broker.stop()
    device = Device(broker, tmp_path, max_events=10)
    devices.append(device)
    device.emit(10)
    assert device.emitter.emit("access_granted", person_id="p") is None  # no exception for the frame loop
    assert device.emitter.dropped == 1
    device.comm.publish_state("status", {"gallery_persons": 0, "status_seq": 1})
    broker.start()
    with Collector(broker, f"{BASE}/status") as seen:
        device.start()
        status = seen.wait_for(lambda m: len(m) >= 1)[0].json()
        assert status["events_dropped"] == 1 and status["gallery_persons"] == 0
    device.stop()


def test_no_status_until_the_service_supplies_one(broker: Mosquitto, tmp_path: Path, devices: list[Device]) -> None:
    """A status with only the transport's counters would blank every dashboard sensor: it is never sent."""
    with Collector(broker, f"{BASE}/#") as seen:
        device = Device(broker, tmp_path, status_interval_seconds=0.2)
        devices.append(device)
        device.start()
        seen.wait_for(lambda m: any(x.topic == f"{BASE}/availability" for x in m))
        device.emit(3)
        time.sleep(0.8)  # several intervals and counter changes
        assert seen.on(f"{BASE}/status") == []
        device.comm.publish_state("status", {"gallery_persons": 2, "status_seq": 5})
        seen.wait_for(lambda m: any(x.topic == f"{BASE}/status" for x in m))
        device.comm.publish_state("status", {"gallery_persons": 1, "status_seq": 4})  # older: dropped
        time.sleep(0.5)
        assert {x.json()["status_seq"] for x in seen.on(f"{BASE}/status")} == {5}
        device.stop()


def test_status_follows_the_outbox_counters(broker: Mosquitto, tmp_path: Path, devices: list[Device]) -> None:
    """'Undelivered events' must read 0 once the broker has everything, not a minute later."""
    broker.stop()
    device = Device(broker, tmp_path, status_interval_seconds=None)
    devices.append(device)
    device.emit(4)
    device.comm.publish_state("status", {"gallery_persons": 0, "outbox": {"pending": 4, "dropped": 0},
                                         "status_seq": 1})
    broker.start()
    with Collector(broker, f"{BASE}/status") as seen:
        device.start()
        seen.wait_for(lambda m: len(m) >= 1 and m[-1].json()["outbox_pending"] == 0, timeout=5)
        last = seen.on(f"{BASE}/status")[-1].json()
        assert last["outbox"] == {"pending": 0, "dropped": 0} and last["status_seq"] == 1
    device.stop()


def test_undelivered_events_does_not_flip_after_every_event(broker: Mosquitto, tmp_path: Path,
                                                            devices: list[Device]) -> None:
    """A busy door: a status after every event (as the service sends one after each grant). The broker takes each
    event within milliseconds, so Home Assistant's "Undelivered events" must stay 0, not flip to 1 and back
    (each flip is a state change in HA's recorder)."""
    device = Device(broker, tmp_path, status_interval_seconds=None)
    devices.append(device)
    with Collector(broker, f"{BASE}/#") as seen:
        device.start()
        for seq in range(1, 31):
            device.emit(1, type="access_granted")
            device.comm.publish_state("status", {"gallery_persons": 1, "outbox": {"pending": 0, "dropped": 0},
                                                 "status_seq": seq})
            time.sleep(0.03)
        seen.wait_for(lambda m: len([x for x in m if x.topic == EVENTS]) == 30, timeout=10)
        assert wait_for(lambda: len(device.outbox) == 0, timeout=5)
        time.sleep(1.5)  # a counters re-send, if one were due, has gone out
        shown = [x.json()["outbox_pending"] for x in seen.on(f"{BASE}/status")]
    assert len(shown) >= 10 and set(shown) == {0}, shown
    device.stop()


def test_config_errors(broker: Mosquitto, tmp_path: Path) -> None:
    from facegate.config import ConfigError

    emitter = EventEmitter(DEVICE, Outbox(tmp_path / "o.db", 10))
    verifier = CommandVerifier(CommandsConfig(), DEVICE, tmp_path / "n.db")
    bad = [
        {"password": "x"},  # no username
        {"username": "u", "password": "x", "password_file": tmp_path / "pw"},
        {"username": "u", "password_file": tmp_path / "missing"},
        {"tls": True, "ca_file": tmp_path / "missing.pem"},
        {"ca_file": tmp_path / "ca.pem"},  # TLS files without tls = true
    ]
    for overrides in bad:
        with pytest.raises(ConfigError):
            MqttCommunicator(mqtt_config(broker, **overrides), DEVICE, emitter, verifier)
    (tmp_path / "pw").write_text("secret\n")
    MqttCommunicator(mqtt_config(broker, username="u", password_file=tmp_path / "pw"), DEVICE, emitter, verifier)


def test_event_json_is_strict(broker: Mosquitto, tmp_path: Path, devices: list[Device]) -> None:
    with Collector(broker, EVENTS) as seen:
        device = Device(broker, tmp_path)
        devices.append(device)
        device.start()
        device.emitter.emit("access_granted", name="Zoë", similarity=float("nan"))
        raw = seen.wait_for(lambda m: len(m) == 1)[0].payload
        event = json.loads(raw, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
        assert event["name"] == "Zoë" and event["similarity"] is None
        device.stop()
