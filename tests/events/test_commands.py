"""Signed commands: only authentic, fresh, unseen, non-retained commands for this door are obeyed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.publish as publish
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from facegate.config import CommandsConfig, ConfigError
from facegate.events import EventEmitter, Outbox
from facegate.events.commands import (
    REASONS,
    CommandRejected,
    CommandVerifier,
    canonical_bytes,
    load_hmac_key,
    sign_command,
)
from facegate.events.communicator import Command
from facegate.events.mqtt import MqttCommunicator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.broker import Collector, Mosquitto, mqtt_config

from tools.wait import wait_for

# `broker` is the private-mosquitto fixture: listing it here marks the import as used for ruff (F401/F811).

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
NOW = 1_714_564_800.0
DEVICE = "front"


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def raw_public(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ed_keys() -> tuple[Ed25519PrivateKey, Ed25519PrivateKey]:
    return Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()


@pytest.fixture
def make_verifier(
    tmp_path: Path, clock: Clock, ed_keys: tuple[Ed25519PrivateKey, Ed25519PrivateKey]
) -> Callable[..., CommandVerifier]:
    def make(**config: Any) -> CommandVerifier:
        config.setdefault("hmac_key", KEY.hex())
        config.setdefault("ed25519_public_keys", [raw_public(k) for k in ed_keys])
        return CommandVerifier(CommandsConfig(**config), DEVICE, tmp_path / "nonces.db", clock=clock)

    return make


def encode(command: dict[str, Any]) -> bytes:
    return json.dumps(command).encode()


def signed(action: str = "unlock", **kw: Any) -> dict[str, Any]:
    kw.setdefault("ts", int(NOW))
    if "ed25519_private_key" not in kw:
        kw.setdefault("hmac_key", KEY)
    return sign_command(action, kw.pop("device_id", DEVICE), **kw)


def reason_of(verifier: CommandVerifier, payload: bytes, retained: bool = False) -> str:
    with pytest.raises(CommandRejected) as info:
        verifier.verify(payload, retained=retained)
    assert info.value.reason in REASONS
    return info.value.reason


# ---------------------------------------------------------------- accepted


def test_valid_hmac_command(make_verifier: Callable[..., CommandVerifier]) -> None:
    command = signed("unlock", nonce="nonce-0001")
    result = make_verifier().verify(encode(command), retained=False)
    assert (result.action, result.ts, result.nonce) == ("unlock", NOW, "nonce-0001")
    assert result.raw == command


def test_valid_ed25519_command_with_second_key(
    make_verifier: Callable[..., CommandVerifier], ed_keys: tuple[Ed25519PrivateKey, Ed25519PrivateKey]
) -> None:
    command = signed("lockdown_on", ed25519_private_key=ed_keys[1])
    assert command["alg"] == "ed25519"
    assert make_verifier().verify(encode(command), retained=False).action == "lockdown_on"


def test_canonical_bytes_and_recipe() -> None:
    assert canonical_bytes("unlock", "front", "abc12345", 1714564800) == (
        b'{"action":"unlock","device_id":"front","nonce":"abc12345","ts":1714564800}'
    )
    command = sign_command("unlock", "front", hmac_key=KEY, ts=1714564800, nonce="abc12345")
    expected = hmac.new(KEY, canonical_bytes("unlock", "front", "abc12345", 1714564800), hashlib.sha256)
    assert command["sig"] == expected.hexdigest()
    with pytest.raises(ValueError):
        sign_command("unlock", "front")


def test_clock_skew_within_max_age_is_accepted(make_verifier: Callable[..., CommandVerifier]) -> None:
    verifier = make_verifier(max_age_seconds=30)
    verifier.verify(encode(signed(ts=NOW - 29.5)), retained=False)
    verifier.verify(encode(signed(ts=NOW + 29.5)), retained=False)


# ---------------------------------------------------------------- rejected


def test_forged_signature(make_verifier: Callable[..., CommandVerifier]) -> None:
    verifier = make_verifier()
    command = signed()
    command["sig"] = ("0" if command["sig"][0] != "0" else "1") + command["sig"][1:]
    assert reason_of(verifier, encode(command)) == "bad_signature"
    tampered = signed("lock")
    tampered["action"] = "unlock"  # signature was for "lock"
    assert reason_of(verifier, encode(tampered)) == "bad_signature"
    assert reason_of(verifier, encode({**signed(), "sig": "zz" * 32})) == "bad_signature"
    assert reason_of(verifier, encode({**signed(), "sig": "é" * 64})) == "bad_signature"


def test_unknown_key(make_verifier: Callable[..., CommandVerifier]) -> None:
    verifier = make_verifier()
    assert reason_of(verifier, encode(signed(hmac_key=OTHER_KEY))) == "bad_signature"
    stranger = Ed25519PrivateKey.generate()
    assert reason_of(verifier, encode(signed(ed25519_private_key=stranger))) == "bad_signature"


def test_command_for_another_door(make_verifier: Callable[..., CommandVerifier]) -> None:
    verifier = make_verifier()
    assert reason_of(verifier, encode(signed(device_id="back"))) == "bad_signature"
    command = signed(device_id="back")
    del command["device_id"]  # even without the field, the signature binds the door
    assert reason_of(verifier, encode(command)) == "bad_signature"


def test_alg_without_configured_key(
    make_verifier: Callable[..., CommandVerifier], ed_keys: tuple[Ed25519PrivateKey, Ed25519PrivateKey]
) -> None:
    ed_only = make_verifier(hmac_key=None)
    assert reason_of(ed_only, encode(signed())) == "bad_signature"
    ed_only.verify(encode(signed(ed25519_private_key=ed_keys[0])), retained=False)
    hmac_only = make_verifier(ed25519_public_keys=[])
    assert reason_of(hmac_only, encode(signed(ed25519_private_key=ed_keys[0]))) == "bad_signature"


def test_expired_and_future(make_verifier: Callable[..., CommandVerifier]) -> None:
    verifier = make_verifier(max_age_seconds=30)
    assert reason_of(verifier, encode(signed(ts=NOW - 31))) == "expired"
    assert reason_of(verifier, encode(signed(ts=NOW + 31))) == "expired"


def test_replayed_nonce_also_after_restart(make_verifier: Callable[..., CommandVerifier], clock: Clock) -> None:
    command = encode(signed(nonce="replay-me-1"))
    first = make_verifier()
    first.verify(command, retained=False)
    assert reason_of(first, command) == "replayed"
    first.close()
    second = make_verifier()  # service restart: same nonce database
    assert reason_of(second, command) == "replayed"
    # Same nonce with a different action and ts is still a replay.
    clock.t += 5
    assert reason_of(second, encode(signed("lock", nonce="replay-me-1", ts=clock.t))) == "replayed"


def test_nonce_store_is_pruned(make_verifier: Callable[..., CommandVerifier], clock: Clock, tmp_path: Path) -> None:
    verifier = make_verifier(max_age_seconds=10)
    for i in range(5):
        verifier.verify(encode(signed(nonce=f"old-nonce-{i}", ts=clock.t)), retained=False)
    clock.t += 25  # beyond 2 x max_age
    verifier.verify(encode(signed(nonce="new-nonce-1", ts=clock.t)), retained=False)
    db = sqlite3.connect(tmp_path / "nonces.db")
    assert [r[0] for r in db.execute("SELECT nonce FROM nonces")] == ["new-nonce-1"]
    db.close()


def test_retained_is_refused_first_and_consumes_nothing(make_verifier: Callable[..., CommandVerifier]) -> None:
    verifier = make_verifier()
    command = encode(signed(nonce="retained-1"))
    assert reason_of(verifier, command, retained=True) == "retained"
    assert reason_of(make_verifier(hmac_key=None, ed25519_public_keys=[]), b"junk", retained=True) == "retained"
    verifier.verify(command, retained=False)  # the nonce was not burnt by the retained copy


def test_unsigned(make_verifier: Callable[..., CommandVerifier]) -> None:
    verifier = make_verifier()
    with pytest.raises(CommandRejected) as info:
        verifier.verify(b"UNLOCK", retained=False)  # what Home Assistant's lock entity sends
    assert (info.value.reason, info.value.action) == ("unsigned", "unlock")
    command = signed()
    del command["sig"]
    assert reason_of(verifier, encode(command)) == "unsigned"
    assert reason_of(verifier, encode({"action": "unlock"})) == "unsigned"


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b"[1, 2]",
        b"\xff\xfe",
        b"",
        b"[" * 5000,
        b'{"action": "unlock", "sig": "x"}' + b" " * 5000,
        encode({**signed(), "ts": "now"}),
        encode({**signed(), "ts": True}),
        encode({**signed(), "ts": 10**400}),
        b'{"action":"unlock","ts":NaN,"nonce":"abcdefgh","alg":"hmac-sha256","sig":"00"}',
        encode({**signed(), "nonce": "short"}),
        encode({**signed(), "nonce": "has space in it"}),
        encode({**signed(), "alg": "md5"}),
        encode({**signed(), "action": 5}),
        encode({**signed(), "action": "UNLOCK!"}),
        encode({**signed(), "sig": 12}),
    ],
)
def test_malformed(make_verifier: Callable[..., CommandVerifier], payload: bytes) -> None:
    assert reason_of(make_verifier(), payload) == "malformed"


def test_unknown_action(make_verifier: Callable[..., CommandVerifier]) -> None:
    assert reason_of(make_verifier(), encode(signed("self_destruct"))) == "unknown_action"


def test_no_key_configured_refuses_everything(make_verifier: Callable[..., CommandVerifier]) -> None:
    verifier = make_verifier(hmac_key=None, ed25519_public_keys=[])
    assert not verifier.has_keys
    assert reason_of(verifier, encode(signed())) == "no_key_configured"


# ---------------------------------------------------------------- key configuration


def test_hmac_key_file_hex_or_raw(tmp_path: Path) -> None:
    hex_file = tmp_path / "hex.key"
    hex_file.write_text(KEY.hex() + "\n")
    assert load_hmac_key(CommandsConfig(hmac_key_file=hex_file)) == KEY
    raw = bytes(range(100, 140)) + b"\n"
    raw_file = tmp_path / "raw.key"
    raw_file.write_bytes(raw)
    assert load_hmac_key(CommandsConfig(hmac_key_file=raw_file)) == raw  # raw bytes are used as they are
    assert load_hmac_key(CommandsConfig()) is None


@pytest.mark.parametrize(
    "config",
    [
        {"hmac_key": "abc"},  # odd hex
        {"hmac_key": "zz" * 16},
        {"hmac_key": "00" * 8},  # too short
        {"hmac_key": KEY.hex(), "hmac_key_file": "/nonexistent"},
        {"hmac_key_file": "/nonexistent/key"},
        {"ed25519_public_keys": ["not base64!"]},
        {"ed25519_public_keys": [base64.b64encode(b"x" * 31).decode()]},
    ],
)
def test_bad_key_configuration_stops_start(tmp_path: Path, config: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        CommandVerifier(CommandsConfig(**config), DEVICE, tmp_path / "n.db")


# ---------------------------------------------------------------- fuzz


@pytest.fixture(scope="module")
def fuzz_verifier(tmp_path_factory: pytest.TempPathFactory) -> CommandVerifier:
    config = CommandsConfig(hmac_key=KEY.hex(), ed25519_public_keys=[raw_public(Ed25519PrivateKey.generate())])
    return CommandVerifier(config, DEVICE, tmp_path_factory.mktemp("fuzz") / "n.db", clock=Clock())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
command_like = st.fixed_dictionaries(
    {},
    optional={
        "action": st.sampled_from(["unlock", "lock", "x", ""]) | json_values,
        "ts": st.sampled_from([NOW, int(NOW), NOW - 1000]) | json_values,
        "nonce": st.sampled_from(["abcdefgh12", "x"]) | json_values,
        "alg": st.sampled_from(["hmac-sha256", "ed25519"]) | json_values,
        "sig": st.sampled_from(["00" * 32, "AAAA", ""]) | json_values,
        "device_id": st.sampled_from([DEVICE, "other"]) | json_values,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.binary(max_size=300) | command_like.map(encode), retained=st.booleans())
def test_verify_only_ever_raises_command_rejected(
    fuzz_verifier: CommandVerifier, payload: bytes, retained: bool
) -> None:
    try:
        fuzz_verifier.verify(payload, retained=retained)
    except CommandRejected as exc:
        assert exc.reason in REASONS
    else:
        pytest.fail("an unsigned fuzz payload was accepted")


# ---------------------------------------------------------------- end to end over MQTT


class Door:
    """A communicator on a private broker, with a collector on the device's topics."""

    def __init__(self, server: Mosquitto, tmp: Path, commands: CommandsConfig, clock: Clock, **mqtt: Any) -> None:
        self.server = server
        self.clock = clock
        self.outbox = Outbox(tmp / "outbox.db", max_events=1000)
        self.emitter = EventEmitter(DEVICE, self.outbox)
        self.verifier = CommandVerifier(commands, DEVICE, tmp / "nonces.db", clock=clock)
        self.comm = MqttCommunicator(mqtt_config(server, discovery=False, **mqtt), DEVICE, self.emitter, self.verifier)
        self.handled: list[Command] = []
        self.comm.on_command(self.handled.append)
        self.collector = Collector(server, f"facegate/{DEVICE}/events").start()
        self.topic = f"facegate/{DEVICE}/lock/set"

    def send(self, payload: bytes, retain: bool = False) -> None:
        publish.single(self.topic, payload, qos=1, retain=retain, hostname=self.server.host, port=self.server.port)

    def command_events(self) -> list[dict[str, Any]]:
        events = [m.json() for m in self.collector.messages]
        return [e for e in events if e["type"] in ("command_rejected", "command_accepted")]

    def send_and_wait(self, payload: bytes, retain: bool = False) -> dict[str, Any]:
        before = len(self.command_events())
        self.send(payload, retain)
        assert wait_for(lambda: len(self.command_events()) > before, timeout=5,
                        fail=False), "no command event published"
        return self.command_events()[before]

    def close(self) -> None:
        self.comm.stop(1.0)
        self.collector.stop()


@pytest.fixture(scope="module")
def door(module_broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    clock = Clock()
    unit = Door(module_broker, tmp_path_factory.mktemp("door"), CommandsConfig(hmac_key=KEY.hex()), clock)
    unit.comm.start()
    assert wait_for(lambda: unit.comm.connected, timeout=5)
    yield unit
    unit.close()


def test_mqtt_valid_command_is_handled_and_reported(door: Door) -> None:
    event = door.send_and_wait(encode(signed("unlock", nonce="mqtt-ok-1")))
    assert event["type"] == "command_accepted" and event["action"] == "unlock"
    assert wait_for(lambda: any(c.nonce == "mqtt-ok-1" for c in door.handled))
    # The same message again is a replay.
    event = door.send_and_wait(encode(signed("unlock", nonce="mqtt-ok-1")))
    assert (event["type"], event["reason"], event["action"]) == ("command_rejected", "replayed", "unlock")


def _forged() -> bytes:
    command = signed(nonce="forged-001")
    command["sig"] = "0" * 64
    return encode(command)


@pytest.mark.parametrize(
    ("payload", "reason", "action"),
    [
        pytest.param(_forged(), "bad_signature", "unlock", id="forged"),
        pytest.param(encode(signed(hmac_key=OTHER_KEY, nonce="unknown-key")), "bad_signature", "unlock", id="key"),
        pytest.param(encode(signed(ts=NOW - 600, nonce="expired-01")), "expired", "unlock", id="expired"),
        pytest.param(encode(signed(ts=NOW + 600, nonce="future-001")), "expired", "unlock", id="future"),
        pytest.param(b"UNLOCK", "unsigned", "unlock", id="unsigned"),
        pytest.param(b"{nope", "malformed", None, id="malformed"),
        pytest.param(encode(signed("explode", nonce="unknown-01")), "unknown_action", "explode", id="action"),
    ],
)
def test_mqtt_rejections_are_published(door: Door, payload: bytes, reason: str, action: str | None) -> None:
    handled = len(door.handled)
    event = door.send_and_wait(payload)
    assert event["type"] == "command_rejected"
    assert (event["reason"], event["action"]) == (reason, action)
    assert event["device_id"] == DEVICE and "event_id" in event and "seq" in event
    assert len(door.handled) == handled


def test_mqtt_retained_command_is_refused(broker: Mosquitto, tmp_path: Path) -> None:
    # Planted before the door connects: the broker delivers it with the retain flag on subscribe.
    unit = Door(broker, tmp_path, CommandsConfig(hmac_key=KEY.hex()), Clock())
    try:
        unit.send(encode(signed(nonce="retained-01")), retain=True)
        unit.comm.start()
        assert wait_for(lambda: len(unit.command_events()) >= 1, timeout=5)
        event = unit.command_events()[0]
        assert (event["reason"], event["action"]) == ("retained", "unlock")
        assert unit.handled == []
    finally:
        unit.close()


def test_mqtt5_broker_drops_oversized_commands_before_they_reach_the_door(broker: Mosquitto, tmp_path: Path) -> None:
    """paho reads a whole packet before any size check of ours: with MQTT 5 the broker is told not to send one."""
    unit = Door(broker, tmp_path, CommandsConfig(hmac_key=KEY.hex()), Clock(), protocol="5")
    try:
        unit.comm.start()
        assert wait_for(lambda: unit.comm.connected, timeout=5)
        unit.send(b"x" * (1 << 20))
        event = unit.send_and_wait(encode(signed("unlock", nonce="after-big")))
        assert event["type"] == "command_accepted"
        assert unit.command_events() == [event]  # the 1 MiB message never reached the door (no rejection either)
        assert unit.comm.connected
    finally:
        unit.close()


def test_mqtt_a_flood_of_bad_commands_is_reported_at_a_bounded_rate(broker: Mosquitto, tmp_path: Path) -> None:
    unit = Door(broker, tmp_path, CommandsConfig(hmac_key=KEY.hex()), Clock())
    try:
        unit.comm.start()
        assert wait_for(lambda: unit.comm.connected, timeout=5)
        for _ in range(60):
            unit.send(b"UNLOCK")
        unit.send(encode(signed("unlock", nonce="after-flood")))
        # Events leave in order, so once the acceptance is seen every refusal report is in too.
        assert wait_for(lambda: any(e["type"] == "command_accepted" for e in unit.command_events()), timeout=10)
        assert [c.nonce for c in unit.handled] == ["after-flood"]  # the door still obeys a good command
        rejected = [e for e in unit.command_events() if e["type"] == "command_rejected"]
        assert 20 <= len(rejected) <= 22  # the burst, plus what refilled while the flood was sent
    finally:
        unit.close()


def test_mqtt_no_key_configured(broker: Mosquitto, tmp_path: Path) -> None:
    unit = Door(broker, tmp_path, CommandsConfig(), Clock())
    try:
        unit.comm.start()
        assert wait_for(lambda: unit.comm.connected, timeout=5)
        event = unit.send_and_wait(encode(signed(nonce="no-key-001")))
        assert (event["reason"], event["action"]) == ("no_key_configured", "unlock")
        assert unit.handled == []
    finally:
        unit.close()
