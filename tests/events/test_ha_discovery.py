"""The Home Assistant discovery payload against what HA's MQTT device discovery accepts, platform by platform.

Checked here without a broker: keys per platform, qos on every component, no command topic unless the Home
Assistant unlock mode is on, only wired entities, device info, and every template rendered the way HA renders
it (tests/support/ha_templates.py) against partial statuses. tests/events/test_ha_service.py renders them against every
status and event a running door actually sends.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from facegate.config import CommandsConfig, MqttConfig
from facegate.events.commands import CommandRejected, CommandVerifier
from facegate.events.discovery import (
    ALERT_EVENT_ATTRIBUTES,
    HA_EVENT_TYPES,
    DoorFeatures,
    discovery_payload,
    pi_model,
)
from facegate.events.ha_codes import hash_code
from support.ha_templates import COMMON_KEYS, PLATFORMS, STATE_CLASSES, apply_state, render, render_command

DEVICE = "front"
CODE = "246810"
ALL_FEATURES = [
    pytest.param(DoorFeatures(), id="bare"),
    pytest.param(DoorFeatures(contact=True, exit_button=True), id="wired"),
    pytest.param(DoorFeatures(contact=True, exit_button=True, ha_unlock=True, ha_lockdown=True), id="ha-mode"),
    pytest.param(DoorFeatures(ha_unlock=True), id="ha-mode-no-lockdown"),
]

def payload(features: DoorFeatures, **kw: Any) -> dict[str, Any]:
    built = discovery_payload(MqttConfig(), DEVICE, features=features, **kw)
    return json.loads(json.dumps(built, allow_nan=False))  # what goes on the wire

def components(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The declared components (an entry with only ``p`` removes a component and declares nothing)."""
    return {cid: c for cid, c in data["cmps"].items() if set(c) != {"p"}}

@pytest.mark.parametrize("features", ALL_FEATURES)
def test_every_component_is_what_home_assistant_accepts(features: DoorFeatures) -> None:
    data = payload(features)
    assert "qos" not in data  # HA does not share qos from the device level: it is set per component
    unique_ids = set()
    for cid, c in components(data).items():
        required, optional, classes = PLATFORMS[c["p"]]

        assert required <= set(c), f"{cid}: missing {required - set(c)}"
        unknown = set(c) - required - optional - COMMON_KEYS
        assert not unknown, f"{cid}: keys HA's {c['p']} schema does not have: {unknown}"
        assert c["qos"] == 1, f"{cid}: HA would subscribe/publish at QoS 0"
        assert c["unique_id"] == f"facegate_{DEVICE}_{cid}" and c["unique_id"] not in unique_ids
        unique_ids.add(c["unique_id"])
        if "device_class" in c and classes is not None:
            assert c["device_class"] in classes, f"{cid}: device_class {c['device_class']!r}"
        if "state_class" in c:
            assert c["state_class"] in STATE_CLASSES
        if "entity_category" in c:
            assert c["entity_category"] in ("config", "diagnostic")
        for key in ("state_topic", "command_topic", "json_attributes_topic"):
            if key in c:
                assert c[key].startswith(f"facegate/{DEVICE}/") and not re.search(r"[+#]", c[key])
        if c["p"] == "event":
            assert c["event_types"] and len(set(c["event_types"])) == len(c["event_types"])
        if c["p"] == "sensor" and "state_class" in c:
            assert c.get("unit_of_measurement"), f"{cid}: a measured quantity needs a unit"
    for cid, c in data["cmps"].items():
        if set(c) == {"p"}:
            assert c["p"] in PLATFORMS and cid not in components(data)

@pytest.mark.parametrize("features", ALL_FEATURES)
def test_no_command_topic_without_the_home_assistant_mode(features: DoorFeatures) -> None:
    cmps = components(payload(features))
    commands = {cid for cid, c in cmps.items() if "command_topic" in c}
    if not features.ha_unlock:
        assert commands == set()
        lock = cmps["lock_state"]
        # HA's lock class: on means unlocked.
        assert (lock["p"], lock["device_class"], lock["payload_on"], lock["payload_off"]) == (
            "binary_sensor", "lock", "UNLOCKED", "LOCKED")
        assert cmps["lockdown"]["p"] == "binary_sensor"
    else:
        assert commands == ({"lock", "lockdown_switch"} if features.ha_lockdown else {"lock"})
        lock = cmps["lock"]
        assert lock["code_format"] and lock["optimistic"] is False and lock["retain"] is False
        assert "lock_state" not in cmps

def test_only_wired_entities_are_declared() -> None:
    bare = components(payload(DoorFeatures()))
    assert not {"door", "forced_open", "held_open", "exit"} & set(bare)
    assert not {"door_forced_open", "door_held_open"} & set(bare["alert"]["event_types"])
    wired = components(payload(DoorFeatures(contact=True, exit_button=True)))
    assert {"door", "forced_open", "held_open", "exit"} <= set(wired)
    assert wired["alert"]["event_types"] == list(ALERT_EVENT_ATTRIBUTES)
    assert wired["exit"]["device_class"] == "button" and wired["exit"]["event_types"] == ["exit_request"]
    assert wired["access"]["event_types"] == list(HA_EVENT_TYPES)
    assert "spoof_detected" in HA_EVENT_TYPES and "camera_error" in wired["alert"]["event_types"]
    assert wired["events_dropped"]["entity_category"] == "diagnostic"
    assert wired["camera"]["device_class"] == "problem"
    assert wired["gallery_persons"]["unit_of_measurement"] == "persons"

def test_device_info(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    assert pi_model(model) == "Raspberry Pi 4 Model B Rev 1.4"
    assert pi_model(tmp_path / "absent") is None
    dev = payload(DoorFeatures(), hw_version=pi_model(model))["dev"]
    assert dev["serial_number"] == DEVICE and dev["hw_version"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert dev["model"] != "facegate door controller" and "configuration_url" not in dev
    assert "hw_version" not in payload(DoorFeatures())["dev"]
    url = "https://front.local:8443/"
    assert payload(DoorFeatures(), configuration_url=url)["dev"]["configuration_url"] == url

PARTIAL_STATUSES = [
    "{}",
    '{"ts": "2026-12-01T12:00:00.000Z"}',
    # What the transport alone used to send as the first status after a connect:
    '{"outbox_pending": 1, "events_dropped": 0, "ts": "2026-12-01T12:00:00.000Z"}',
    '{"door": {"lock": "LOCKED"}, "camera": null, "last_access": null}',
]

@pytest.mark.parametrize("status", PARTIAL_STATUSES)
def test_templates_tolerate_a_partial_status(status: str) -> None:
    cmps = components(payload(DoorFeatures(contact=True, exit_button=True, ha_unlock=True, ha_lockdown=True)))
    readers = {cid: c for cid, c in cmps.items() if c.get("state_topic", "").endswith("/status")}
    assert len(readers) >= 8
    for cid, c in readers.items():
        outcome = apply_state(c, render(c["value_template"], status))  # StrictUndefined: no missing-key access
        data = json.loads(status)
        if cid in data or (cid == "lockdown_switch" and "lockdown" in data):
            continue
        assert outcome in ("ignored", "unknown"), f"{cid} showed {outcome!r} from a status without its key"
        if "json_attributes_template" in c:
            assert isinstance(json.loads(render(c["json_attributes_template"], status)), dict)

def test_event_templates_ignore_other_events_and_drop_nulls() -> None:
    cmps = components(payload(DoorFeatures(contact=True, exit_button=True)))
    access, alert = cmps["access"], cmps["alert"]
    door_opened = json.dumps({"type": "door_opened", "locked": True, "event_id": "e1", "ts": "t"})
    assert apply_state(access, render(access["value_template"], door_opened)) == "ignored"
    assert apply_state(alert, render(alert["value_template"], door_opened)) == "ignored"
    unknown = {"type": "unknown_face", "best_similarity": None, "frames": 5, "frame": None,
               "frame_ts": "2026-12-01T12:00:00.000Z", "track_id": 3, "event_id": "e2", "ts": "t", "seq": 4}
    rendered = json.loads(render(access["value_template"], json.dumps(unknown)))
    assert rendered == {"event_type": "unknown_face", "frames": 5, "frame_ts": unknown["frame_ts"], "track_id": 3,
                        "event_id": "e2", "ts": "t"}
    rejected = {"type": "command_rejected", "reason": "bad_code", "action": "unlock", "suppressed": 0,
                "event_id": "e3", "ts": "t"}
    assert json.loads(render(alert["value_template"], json.dumps(rejected)))["reason"] == "bad_code"
    assert apply_state(access, render(access["value_template"], "not json")) == "ignored"

@pytest.fixture
def verifier(tmp_path: Path) -> CommandVerifier:
    return CommandVerifier(CommandsConfig(home_assistant_codes=[hash_code(CODE)]), DEVICE, tmp_path / "nonces.db")

def test_the_lock_command_template_renders_what_the_door_accepts(verifier: CommandVerifier) -> None:
    cmps = components(payload(DoorFeatures(ha_unlock=True, ha_lockdown=True)))
    lock, switch = cmps["lock"], cmps["lockdown_switch"]
    assert re.fullmatch(lock["code_format"], CODE)
    sent = [render_command(lock["command_template"], value=lock["payload_unlock"], code=CODE) for _ in range(3)]
    nonces = {json.loads(s)["nonce"] for s in sent}
    assert len(nonces) == 3  # 66 bits each: distinct
    command = verifier.verify(sent[0].encode(), retained=False)
    assert command.action == "unlock" and "code" not in command.raw
    assert verifier.verify(render_command(lock["command_template"], value=lock["payload_lock"], code=CODE)
                           .encode(), retained=False).action == "lock"
    with pytest.raises(CommandRejected) as info:
        verifier.verify(render_command(lock["command_template"], value="unlock", code=None).encode(), retained=False)
    assert info.value.reason == "bad_code"
    on = render_command(switch["command_template"], value=switch["payload_on"])
    assert verifier.verify(on.encode(), retained=False).action == "lockdown_on"
    # A code containing JSON metacharacters is still one JSON string.
    odd = render_command(lock["command_template"], value="unlock", code='12"}, "x": {"')
    assert json.loads(odd)["code"] == '12"}, "x": {"'
