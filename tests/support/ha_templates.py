"""What Home Assistant's MQTT integration does with our discovery payload, as far as this machine can tell.

Real Home Assistant 2026 needs Python >= 3.13 and is not installed here, so these helpers stand in for it:

* templates render in Jinja's ``ImmutableSandboxedEnvironment``, the class HA's template engine derives from
  (same sandbox: ``range()`` capped at 100000 values, no list/dict mutation), with ``StrictUndefined`` so any
  access to a missing key fails the test where HA would log "'dict object' has no attribute ...";
* ``value_json`` is the payload parsed as JSON, ``now()`` an aware datetime, as in HA;
* :data:`PLATFORMS` lists, per platform, the keys HA's MQTT discovery schema requires and accepts (from the
  HA MQTT integration documentation for lock, switch, binary_sensor, sensor and event), with the device classes
  and state classes it accepts.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["COMMON_KEYS", "ENV", "PLATFORMS", "apply_state", "render", "render_command"]

ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
ENV.globals["now"] = lambda: datetime.now(UTC)

COMMON_KEYS = {
    "p", "unique_id", "name", "qos", "icon", "entity_category", "enabled_by_default", "object_id",
    "default_entity_id", "encoding", "entity_picture", "json_attributes_topic", "json_attributes_template",
    "availability", "availability_topic", "availability_mode", "availability_template", "payload_available",
    "payload_not_available", "device", "origin",
}
BINARY_SENSOR_CLASSES = {
    "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door", "garage_door", "gas",
    "heat", "light", "lock", "moisture", "motion", "moving", "occupancy", "opening", "plug", "power", "presence",
    "problem", "running", "safety", "smoke", "sound", "tamper", "update", "vibration", "window",
}

#: platform -> (required keys, optional keys, accepted device classes or None for "any sensor class")
PLATFORMS: dict[str, tuple[set[str], set[str], set[str] | None]] = {
    "lock": ({"command_topic"}, {
        "state_topic", "value_template", "command_template", "code_format", "optimistic", "retain",
        "payload_lock", "payload_unlock", "payload_open", "payload_reset", "state_locked", "state_unlocked",
        "state_locking", "state_unlocking", "state_jammed", "state_open", "state_opening"}, set()),
    "switch": ({"command_topic"}, {
        "state_topic", "value_template", "command_template", "optimistic", "retain", "payload_on", "payload_off",
        "state_on", "state_off", "device_class"}, {"outlet", "switch"}),
    "binary_sensor": ({"state_topic"}, {
        "value_template", "payload_on", "payload_off", "device_class", "expire_after", "force_update",
        "off_delay"}, BINARY_SENSOR_CLASSES),
    "sensor": ({"state_topic"}, {
        "value_template", "unit_of_measurement", "state_class", "device_class", "expire_after", "force_update",
        "last_reset_value_template", "suggested_display_precision", "options"}, None),
    "event": ({"state_topic", "event_types"}, {"value_template", "device_class"}, {"button", "doorbell", "motion"}),
}
STATE_CLASSES = {"measurement", "measurement_angle", "total", "total_increasing"}


def render(template: str, payload: str | bytes) -> str:
    """A state/value template against one MQTT payload, as HA's ``async_render_with_possible_json_value``."""
    text = payload.decode() if isinstance(payload, bytes) else payload
    variables: dict[str, Any] = {"value": text}
    with contextlib.suppress(ValueError):
        variables["value_json"] = json.loads(text)  # HA defines value_json only for a JSON payload
    return str(ENV.from_string(template).render(**variables)).strip()


def render_command(template: str, **variables: Any) -> str:
    """A command template (HA passes ``value``, and ``code`` for a lock)."""
    return str(ENV.from_string(template).render(**variables))


def apply_state(component: dict[str, Any], rendered: str) -> str:
    """What HA makes of a rendered state: "ignored", "unknown", or the state it shows; raises if HA would warn."""
    platform = component["p"]
    if platform == "event":
        if rendered in ("", "{}", "None"):
            return "ignored"
        data = json.loads(rendered)
        assert isinstance(data, dict) and data["event_type"] in component["event_types"], rendered
        assert all(v is not None for v in data.values()), f"null attribute in {rendered}"
        return str(data["event_type"])
    if rendered == "":
        return "ignored"  # HA: "Ignoring empty state"
    if rendered == "None":
        return "unknown"
    if platform == "binary_sensor":
        on, off = component.get("payload_on", "ON"), component.get("payload_off", "OFF")
        assert rendered in (on, off), f"{component['unique_id']}: {rendered!r} is neither {on!r} nor {off!r}"
        return "on" if rendered == on else "off"
    if platform == "switch":
        on, off = component.get("state_on", "ON"), component.get("state_off", "OFF")
        assert rendered in (on, off), f"{component['unique_id']}: {rendered!r} is neither {on!r} nor {off!r}"
        return "on" if rendered == on else "off"
    if platform == "lock":
        assert rendered in (component["state_locked"], component["state_unlocked"]), rendered
        return "locked" if rendered == component["state_locked"] else "unlocked"
    if platform == "sensor" and ("state_class" in component or "unit_of_measurement" in component):
        float(rendered)  # HA refuses a non-numeric state for a sensor with a unit or state class
    return rendered
