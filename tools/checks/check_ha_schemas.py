#!/usr/bin/env python3
"""Validate the discovery components against Home Assistant's own MQTT platform schemas and template engine.

Not part of the test suite: it needs a separate interpreter with a ``homeassistant`` package (and paho-mqtt 1.x,
which HA 2024.1 imports), e.g.::

    python3 -m venv /tmp/ha && /tmp/ha/bin/pip install homeassistant==2024.1.6 paho-mqtt==1.6.1
    python tools/checks/check_ha_schemas.py --ha-python /tmp/ha/bin/python

HA 2024.1 is the newest release that runs on Python 3.11 (this project's floor); it predates device discovery
(``cmps``), so each component is checked on its own against ``homeassistant.components.mqtt.<platform>``'s
``DISCOVERY_SCHEMA``. Those schemas drop unknown keys silently, so the keys they dropped are listed: a key
this HA version does not know. Then every template is rendered with HA's own ``TemplateEnvironment`` in strict
mode (an undefined key raises) against sample statuses (complete and partial) and events; command templates
get ``value``/``code`` and HA's ``now()``. Exit 1 if any component is invalid or any template fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]

from facegate.config import MqttConfig
from facegate.events.discovery import DoorFeatures, discovery_payload

CHECK = r'''
import importlib, json, sys
import voluptuous as vol
from homeassistant.const import __version__
importlib.import_module("homeassistant.components.persistent_notification")  # breaks an import cycle outside HA
bad = 0
for name, payload in json.load(open(sys.argv[1])).items():
    for cid, comp in payload["cmps"].items():
        comp = dict(comp)
        platform = comp.pop("p")
        if not comp:
            continue  # {"p": ...} alone: a removal, nothing to validate
        schema = importlib.import_module(f"homeassistant.components.mqtt.{platform}").DISCOVERY_SCHEMA
        try:
            kept = schema(comp)
        except vol.Invalid as exc:
            bad += 1
            print(f"{name}/{cid} ({platform}): INVALID: {exc}")
            continue
        dropped = sorted(set(comp) - set(kept))
        note = f"; unknown to it: {dropped}" if dropped else ""
        print(f"{name}/{cid} ({platform}): valid for HA {__version__}{note}")

from datetime import datetime, timezone
from homeassistant.helpers.template import TemplateEnvironment
env = TemplateEnvironment(None, False, True)  # no hass, not limited, strict: undefined raises
env.globals["now"] = lambda: datetime.now(timezone.utc)
samples = json.load(open(sys.argv[2]))
for cid, comp in json.load(open(sys.argv[1]))["ha-mode"]["cmps"].items():
    if set(comp) == {"p"}:
        continue
    topic = comp.get("state_topic", "").rsplit("/", 1)[-1]
    payloads = samples.get(topic, [])
    for key in ("value_template", "json_attributes_template"):
        if key not in comp:
            continue
        shown = set()
        for payload in payloads:
            try:
                out = env.from_string(comp[key]).render(value=json.dumps(payload), value_json=payload).strip()
            except Exception as exc:
                bad += 1
                print(f"{cid}.{key}: FAILED on {payload}: {exc}")
                continue
            if key == "json_attributes_template":
                assert isinstance(json.loads(out), dict), out
            elif comp["p"] == "event" and out not in ("", "{}"):
                event = json.loads(out)
                assert event["event_type"] in comp["event_types"] and None not in event.values(), out
                out = event["event_type"]
            shown.add(out)
        print(f"{cid}.{key}: rendered by HA's engine for {len(payloads)} payloads: {sorted(shown)[:6]}")
    if "command_template" in comp:
        for option in ("payload_unlock", "payload_lock", "payload_on", "payload_off"):
            value = comp.get(option)
            if value is None:
                continue
            out = json.loads(env.from_string(comp["command_template"]).render(value=value, code="246810"))
            print(f"{cid}.command_template({value}): {out}")
sys.exit(1 if bad else 0)
'''

_TS = "2026-12-01T12:00:00.000Z"
_STATUS = {
    "device_id": "front", "version": "0.1.0", "uptime_seconds": 12.5, "fps": 14.8, "frames": 180,
    "gallery": {"version": 3, "persons": 2, "templates": 4}, "gallery_persons": 2, "last_person": "Ada",
    "last_access": {"person_id": "p1", "name": "Ada", "ts": _TS, "similarity": 0.71},
    "camera": {"ok": True, "error": None, "since": None}, "lockdown": False,
    "door": {"lock": "LOCKED", "locked": True, "door": "closed", "held_open": False, "forced_open": False},
    "outbox": {"pending": 0, "dropped": 0}, "status_seq": 4, "outbox_pending": 0, "events_dropped": 0, "ts": _TS,
}
SAMPLES = {
    "status": [_STATUS, {**_STATUS, "last_access": None, "lockdown": True,
                         "camera": {"ok": False, "error": "unplugged", "since": _TS},
                         "door": {**_STATUS["door"], "forced_open": True}},
               {}, {"ts": _TS}, {"outbox_pending": 1, "events_dropped": 0, "ts": _TS}],
    "events": [
        {"type": "access_granted", "person_id": "p1", "name": "Ada", "similarity": 0.7, "frames_used": 3,
         "frame_ts": _TS, "frame": None, "track_id": 2, "event_id": "e1", "ts": _TS, "seq": 1},
        {"type": "access_denied", "person_id": "p1", "name": None, "reason": "liveness", "similarity": 0.7,
         "liveness_score": 0.2, "liveness_reason": "texture", "frame_ts": _TS, "frame": "0001.jpg", "track_id": 2,
         "event_id": "e2", "ts": _TS},
        {"type": "unknown_face", "best_similarity": None, "frames": 5, "frame_ts": _TS, "frame": None,
         "track_id": 3, "event_id": "e3", "ts": _TS},
        {"type": "door_forced_open", "event_id": "e4", "ts": _TS},
        {"type": "command_rejected", "reason": "bad_code", "action": "unlock", "suppressed": 0, "event_id": "e5",
         "ts": _TS},
        {"type": "exit_request", "event_id": "e6", "ts": _TS},
        {"type": "door_opened", "locked": True, "event_id": "e7", "ts": _TS},
    ],
}

FEATURES = {
    "bare": DoorFeatures(),
    "wired": DoorFeatures(contact=True, exit_button=True),
    "ha-mode": DoorFeatures(contact=True, exit_button=True, ha_unlock=True, ha_lockdown=True),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ha-python", required=True, type=Path, help="interpreter with homeassistant installed")
    args = parser.parse_args()
    payloads = {name: discovery_payload(MqttConfig(), "front", features=f, hw_version="Raspberry Pi 4 Model B")
                for name, f in FEATURES.items()}
    with tempfile.TemporaryDirectory() as tmp:
        data, samples, script = Path(tmp) / "discovery.json", Path(tmp) / "samples.json", Path(tmp) / "check.py"
        data.write_text(json.dumps(payloads))
        samples.write_text(json.dumps(SAMPLES))
        script.write_text(CHECK)
        return subprocess.run([str(args.ha_python), str(script), str(data), str(samples)], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
