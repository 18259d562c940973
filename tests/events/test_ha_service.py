"""Home Assistant against a running door on a real Mosquitto: the unlock mode, live complete status, templates.

What HA would publish is rendered from the discovery payload the door put on the broker (tests/support/ha_templates.py
stands in for HA's template engine); what HA would show is every template applied to every status and event
the door sent during the run.
"""

from __future__ import annotations

import json
import time
from typing import Any

import paho.mqtt.publish as publish
from facegate.events.ha_codes import hash_code
from facegate.service import Service
from support.broker import Collector, Mosquitto
from support.ha_templates import apply_state, render, render_command
from support.scenes import DEVICE, enrol, make_config, pulses, run_in_thread, write_frames

from tools.wait import wait_for

CODE = "135790"
BASE = f"facegate/{DEVICE}"
DISCOVERY = f"homeassistant/device/facegate_{DEVICE}/config"


def events(seen: Collector) -> list[dict[str, Any]]:
    return [m.json() for m in seen.on(f"{BASE}/events")]


def statuses(seen: Collector) -> list[dict[str, Any]]:
    return [m.json() for m in seen.on(f"{BASE}/status")]


def rejections(seen: Collector) -> list[str]:
    return [e["reason"] for e in events(seen) if e["type"] == "command_rejected"]


def test_home_assistant_unlock_mode(tmp_path, broker: Mosquitto, photos, factory) -> None:  # type: ignore[no-untyped-def]
    frames = write_frames(tmp_path / "frames", photos, [("bg", 2)])
    config = make_config(tmp_path, frames, broker, camera={"loop": True, "fps": 10},
                         commands={"home_assistant_codes": [hash_code(CODE)]})
    service = Service(config, pin_factory=factory)

    def send(body: str, retain: bool = False) -> None:
        publish.single(f"{BASE}/lock/set", body, qos=1, retain=retain, hostname=broker.host, port=broker.port)

    with Collector(broker, "#") as seen:
        thread = run_in_thread(service)
        try:
            discovery = seen.wait_for(lambda m: any(x.topic == DISCOVERY for x in m), timeout=15)
            cmps = next(x for x in discovery if x.topic == DISCOVERY).json()["cmps"]
            lock, switch = cmps["lock"], cmps["lockdown_switch"]
            assert "lock_state" not in cmps or set(cmps["lock_state"]) == {"p"}
            assert wait_for(lambda: service.communicator.connected, timeout=10)
            time.sleep(0.3)

            def command(value: str, code: str | None = CODE) -> str:
                return render_command(lock["command_template"], value=value, code=code)

            good = command(lock["payload_unlock"])
            send(good)  # what HA publishes when the user enters the right code and presses Unlock
            seen.wait_for(lambda m: any(e["type"] == "command_accepted" for e in events(seen)), timeout=10)
            assert wait_for(lambda: len(pulses(factory.pin(17))) == 1, timeout=5, fail=False), "the relay did not pulse"

            send(command("unlock", code="000000"))
            stale = json.loads(command("unlock"))
            stale["ts"] -= 120  # delivered two minutes late (or recorded and played back)
            send(json.dumps(stale))
            send(good)  # the same message again
            send(command("unlock"), retain=True)
            seen.wait_for(lambda m: len(rejections(seen)) >= 4, timeout=10)
            assert rejections(seen)[:4] == ["bad_code", "expired", "replayed", "retained"]
            assert all(e["action"] == "unlock" for e in events(seen) if e["type"] == "command_rejected")
            time.sleep(0.5)
            assert len(pulses(factory.pin(17))) == 1  # none of them opened the door

            # The lockdown switch: its state comes back through the status, within a second.
            send(render_command(switch["command_template"], value=switch["payload_on"]))
            on = seen.wait_for(lambda m: any(s.get("lockdown") for s in statuses(seen)), timeout=3)
            assert on and apply_state(switch, render(switch["value_template"],
                                                     seen.on(f"{BASE}/status")[-1].payload)) == "on"
            assert service.policy.lockdown
        finally:
            service.stop_event.set()
            thread.join(15)
            publish.single(f"{BASE}/lock/set", b"", qos=1, retain=True, hostname=broker.host, port=broker.port)
    assert not thread.is_alive()


EXPECTED_STATUS_KEYS = {
    "device_id", "version", "uptime_seconds", "fps", "frames", "gallery", "gallery_persons", "last_person",
    "last_access", "camera", "models", "threshold", "far", "lockdown", "door", "outbox", "outbox_pending",
    "events_dropped", "ts", "status_seq",
}


def test_status_is_complete_live_and_every_template_renders_it(  # type: ignore[no-untyped-def]
        tmp_path, broker: Mosquitto, photos, astro_templates, pipeline, factory) -> None:
    frames = write_frames(tmp_path / "frames", photos, [("bg", 3), ("astro", 12), ("bg", 40)])
    config = make_config(tmp_path, frames, broker, camera={"loop": True, "fps": 15},
                         door={"contact_pin": 27, "exit_pin": 22, "unlock_seconds": 0.3},
                         recognition={"cooldown_seconds": 600})
    enrol(config, astro_templates, pipeline)
    service = Service(config, pin_factory=factory)
    contact, button = factory.pin(27), factory.pin(22)
    contact.drive_low()  # closed door
    with Collector(broker, "#") as seen:
        started = time.monotonic()
        thread = run_in_thread(service)
        try:
            # "Undelivered events" reads 0 within seconds of the start, not after the first minute.
            seen.wait_for(lambda m: any(s["outbox_pending"] == 0 for s in statuses(seen)), timeout=10)
            assert time.monotonic() - started < 10
            seen.wait_for(lambda m: any(e["type"] == "access_granted" for e in events(seen)), timeout=20)
            granted_at = time.monotonic()
            seen.wait_for(lambda m: any((s["last_access"] or {}).get("name") == "Eileen Collins"
                                        for s in statuses(seen)), timeout=3)
            assert time.monotonic() - granted_at < 2.0  # on change, not on the 60 s heartbeat
            time.sleep(1.5)  # relocked, past the forced-open grace
            contact.drive_high()  # opened while locked
            seen.wait_for(lambda m: any(s["door"]["forced_open"] for s in statuses(seen)), timeout=3)
            contact.drive_low()
            seen.wait_for(lambda m: not statuses(seen)[-1]["door"]["forced_open"], timeout=3)
            button.drive_low()
            time.sleep(0.1)
            button.drive_high()
            seen.wait_for(lambda m: any(e["type"] == "exit_request" for e in events(seen)), timeout=5)
        finally:
            service.stop_event.set()
            thread.join(15)
        seen.wait_for(lambda m: any(e["type"] == "service_stopped" for e in events(seen)), timeout=10)
    sent = statuses(seen)
    assert len(sent) >= 5
    for status in sent:
        assert set(status) >= EXPECTED_STATUS_KEYS, EXPECTED_STATUS_KEYS - set(status)
    seqs = [s["status_seq"] for s in sent]
    # Never an older status after a newer one; the same seq twice is the transport refreshing its counters.
    assert seqs == sorted(seqs), seqs
    assert [s["ts"] for s in sent] == sorted(s["ts"] for s in sent)
    assert len(sent) < 60  # coalesced: far fewer than the changes (every relay, contact and event)

    # Every template of the discovery payload against every message the door sent on its topic.
    cmps = next(m for m in seen.messages if m.topic.endswith("/config")).json()["cmps"]
    shown: dict[str, set[str]] = {}
    for cid, c in cmps.items():
        if set(c) == {"p"}:
            continue
        for message in seen.on(c["state_topic"]):
            rendered = render(c["value_template"], message.payload) if "value_template" in c else message.text
            shown.setdefault(cid, set()).add(apply_state(c, rendered))
            if "json_attributes_template" in c:
                assert isinstance(json.loads(render(c["json_attributes_template"], message.payload)), dict)
    assert {"on", "off"} <= shown["lock_state"] and {"on", "off"} <= shown["forced_open"]
    assert shown["door"] >= {"on", "off"} and shown["camera"] == {"off"} and shown["lockdown"] == {"off"}
    assert "Eileen Collins" in shown["last_access"] and "1" in shown["gallery_persons"]
    assert "access_granted" in shown["access"] and "door_forced_open" in shown["alert"]
    assert shown["exit"] == {"ignored", "exit_request"}
    assert "0" in shown["outbox_pending"] and "0" in shown["events_dropped"]
