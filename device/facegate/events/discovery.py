"""Topic names and the Home Assistant device-based MQTT discovery message.

One retained message on ``<discovery_prefix>/device/facegate_<device_id>/config`` declares the whole door to
Home Assistant: the device block, the origin block, shared availability, and the components. It is re-sent on
every connect and whenever Home Assistant announces itself (``<discovery_prefix>/status`` = ``online``), so HA
recovers the entities after its own restart.

Rules this builder keeps (each is checked by tests/events/test_ha_discovery.py):

* No dead buttons. HA templates cannot sign a command, so without the opt-in Home Assistant unlock mode
  (:mod:`facegate.events.ha_codes`) the lock is a read-only ``binary_sensor`` (device class ``lock``: on means
  unlocked) and no component has a command topic. In that mode the lock asks for a code and the lockdown switch
  appears; both publish JSON the door verifies.
* ``qos: 1`` on every component: HA does not take ``qos`` from the device level.
* Only what is wired: the door contact entities need ``door.contact_pin``, the exit button ``door.exit_pin``.
* Templates tolerate missing keys (``value_json.get``): an empty rendering is ignored by HA, so a status without
  a key leaves the entity as it was instead of logging a warning and flickering.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facegate import __version__
from facegate.config import MqttConfig

__all__ = [
    "ALERT_EVENT_ATTRIBUTES",
    "HA_EVENT_ATTRIBUTES",
    "HA_EVENT_TYPES",
    "DoorFeatures",
    "Topics",
    "discovery_payload",
    "discovery_topic",
    "pi_model",
    "topics",
]

#: Attributes the Access event entity carries per event type (absent or null fields are left out).
HA_EVENT_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "access_granted": ("person_id", "name", "similarity", "frames_used", "liveness_score", "frame", "frame_ts",
                       "track_id"),
    "access_denied": ("person_id", "name", "reason", "similarity", "liveness_score", "liveness_reason", "frame",
                      "frame_ts", "track_id"),
    "unknown_face": ("best_similarity", "frames", "frame", "frame_ts", "track_id"),
    "spoof_detected": ("person_id", "name", "liveness_score", "liveness_reason", "frame", "frame_ts", "track_id"),
    "liveness_challenge": ("direction", "outcome", "seconds", "turn", "frame_ts"),
}
#: The event types surfaced by the HA Access ``event`` entity.
HA_EVENT_TYPES = tuple(HA_EVENT_ATTRIBUTES)
#: The Alert event entity: what needs a person's attention (door types only with a contact wired).
ALERT_EVENT_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "door_forced_open": (),
    "door_held_open": ("seconds",),
    "camera_error": ("error",),
    "camera_ok": (),
    "command_rejected": ("reason", "action", "suppressed"),
    "outbox_full": ("dropped", "first_ts", "last_ts"),
    # "This was not them" (docs/decision.md): an admin marked a grant as a stranger let in
    "false_accept_reported": ("person_id", "name", "granted_event_id", "negative_id", "negatives", "source", "user"),
}
_DOOR_ALERTS = ("door_forced_open", "door_held_open")
#: Every event attribute template also carries these envelope fields.
_ENVELOPE = ("event_id", "ts")
MODEL = "Face-recognition door controller"

#: The HA lock's command: the user's code, the time and a nonce (docs/mqtt.md, "Home Assistant unlock mode").
#: HA's sandbox caps range() at 100000 values, so the nonce joins four draws: 4 x log2(1e5) = 66 bits from
#: Python's (non-cryptographic) random. It only has to be unique within 2 x max_age_seconds, not secret.
_NONCE = "ha-" + "-".join(["{{ range(100000) | random }}"] * 4)
LOCK_COMMAND_TEMPLATE = (
    '{"via": "home_assistant", "action": {{ value | tojson }}, "code": {{ code | tojson }}, '
    '"ts": {{ now().timestamp() | int }}, "nonce": "' + _NONCE + '"}'
)
LOCKDOWN_COMMAND_TEMPLATE = (
    '{"via": "home_assistant", "action": {{ value | tojson }}, '
    '"ts": {{ now().timestamp() | int }}, "nonce": "' + _NONCE + '"}'
)


@dataclass(frozen=True)
class DoorFeatures:
    """What this door has, so discovery declares only entities that can ever have a state."""

    contact: bool = False  # door.contact_pin: door, forced/held open
    exit_button: bool = False  # door.exit_pin: the exit-button event
    ha_unlock: bool = False  # commands.home_assistant_codes: a lock with a code instead of a read-only state
    ha_lockdown: bool = False  # and commands.home_assistant_lockdown: the lockdown switch
    code_format: str = r"^\d{6,12}$"


def pi_model(path: Path = Path("/proc/device-tree/model")) -> str | None:
    """The Raspberry Pi model string (e.g. "Raspberry Pi 4 Model B Rev 1.4"), or None where there is none."""
    try:
        text = path.read_bytes().split(b"\0", 1)[0].decode("utf-8", "replace").strip()
    except OSError:
        return None
    return text or None


@dataclass(frozen=True)
class Topics:
    """Every topic the device uses, derived from the config and device id."""

    base: str
    availability: str
    events: str
    lock_state: str
    lock_set: str
    door_state: str
    status: str
    discovery: str
    ha_status: str

    def state(self, name: str) -> str:
        """Topic of a retained state by its relative name (``lock/state``, ``door/state``, ``status``)."""
        return f"{self.base}/{name}"


def discovery_topic(config: MqttConfig, device_id: str) -> str:
    return f"{config.discovery_prefix}/device/facegate_{device_id}/config"


def topics(config: MqttConfig, device_id: str) -> Topics:
    base = f"{config.topic_prefix}/{device_id}"
    return Topics(
        base=base,
        availability=f"{base}/availability",
        events=f"{base}/events",
        lock_state=f"{base}/lock/state",
        lock_set=f"{base}/lock/set",
        door_state=f"{base}/door/state",
        status=f"{base}/status",
        discovery=discovery_topic(config, device_id),
        ha_status=f"{config.discovery_prefix}/status",
    )


def _event_template(attributes: dict[str, tuple[str, ...]]) -> str:
    """Jinja for an HA event entity: our envelope to ``{"event_type": ..., <that type's fields>}``.

    Every event type shares one topic, so types the entity does not list render ``{}``, which HA ignores
    quietly. Per type only its own fields are attributes, and a null or absent one is left out.
    """
    table = "{" + ", ".join(f"'{t}': [{', '.join(repr(k) for k in (*keys, *_ENVELOPE))}]"
                            for t, keys in attributes.items()) + "}"
    return (
        "{% set t = value_json.get('type') if value_json is defined and value_json is mapping else none %}"
        f"{{% set keys = {table}.get(t) %}}"
        "{% if keys is none %}{}{% else %}"
        '{"event_type": {{ t | tojson }}'
        "{% for k in keys %}{% if value_json.get(k) is not none %}"
        ", {{ k | tojson }}: {{ value_json.get(k) | tojson }}"
        "{% endif %}{% endfor %}}"
        "{% endif %}"
    )


def _status_value(key: str) -> str:
    """A status field as the state; nothing (HA ignores it) when the key is absent, "None" (unknown) when null."""
    return f"{{% if '{key}' in value_json %}}{{{{ value_json.get('{key}') }}}}{{% endif %}}"


def _status_flag(path: tuple[str, ...], invert: bool = False) -> str:
    """ON/OFF from a boolean in the status (possibly nested); nothing when absent, so HA keeps its state."""
    expr = "value_json"
    steps = ""
    for i, key in enumerate(path):
        steps += f"{{% set v{i} = ({expr} if {expr} is mapping else {{}}).get('{key}') %}}"
        expr = f"v{i}"
    on, off = ("OFF", "ON") if invert else ("ON", "OFF")
    return steps + f"{{% if {expr} is not none %}}{{{{ '{on}' if {expr} else '{off}' }}}}{{% endif %}}"


def _status_object(key: str) -> str:
    """A status object as JSON attributes (``{}`` when absent or null: HA then clears them without a warning)."""
    return f"{{{{ (value_json.get('{key}') if value_json.get('{key}') is mapping else {{}}) | tojson }}}}"


def discovery_payload(
    config: MqttConfig,
    device_id: str,
    *,
    features: DoorFeatures | None = None,
    configuration_url: str | None = None,
    name: str | None = None,
    model: str = MODEL,
    sw_version: str = __version__,
    hw_version: str | None = None,
) -> dict[str, Any]:
    """The device discovery JSON (as a dict) for this door.

    ``configuration_url``: the door's web console, when one runs (HA links the device page to it).
    ``hw_version``: the board, e.g. :func:`pi_model`.
    """
    f = features or DoorFeatures()
    t = topics(config, device_id)
    uid = f"facegate_{device_id}"
    cmps: dict[str, dict[str, Any]] = {}

    def add(cid: str, platform: str, name: str, **options: Any) -> None:
        cmps[cid] = {"p": platform, "unique_id": f"{uid}_{cid}", "name": name, "qos": 1, **options}

    def status_sensor(cid: str, name: str, key: str, **options: Any) -> None:
        add(cid, "sensor", name, state_topic=t.status, value_template=_status_value(key), **options)

    if f.ha_unlock:
        add("lock", "lock", "Lock", state_topic=t.lock_state, command_topic=t.lock_set,
            state_locked="LOCKED", state_unlocked="UNLOCKED", payload_lock="lock", payload_unlock="unlock",
            code_format=f.code_format, command_template=LOCK_COMMAND_TEMPLATE,
            # The door reports what the relay did: HA must show that, never assume it.
            optimistic=False, retain=False)
    else:
        # Read-only: HA's lock entity would offer an Unlock button the door (rightly) refuses.
        add("lock_state", "binary_sensor", "Lock", device_class="lock", state_topic=t.lock_state,
            payload_on="UNLOCKED", payload_off="LOCKED")
    if f.ha_lockdown:
        add("lockdown_switch", "switch", "Lockdown", state_topic=t.status,
            value_template=_status_flag(("lockdown",)), state_on="ON", state_off="OFF",
            command_topic=t.lock_set, payload_on="lockdown_on", payload_off="lockdown_off",
            command_template=LOCKDOWN_COMMAND_TEMPLATE, optimistic=False, retain=False, icon="mdi:shield-lock")
    else:
        add("lockdown", "binary_sensor", "Lockdown", state_topic=t.status,
            value_template=_status_flag(("lockdown",)), icon="mdi:shield-lock")
    add("access", "event", "Access", state_topic=t.events, event_types=list(HA_EVENT_TYPES),
        value_template=_event_template(HA_EVENT_ATTRIBUTES), icon="mdi:face-recognition")
    alerts = {k: v for k, v in ALERT_EVENT_ATTRIBUTES.items() if f.contact or k not in _DOOR_ALERTS}
    add("alert", "event", "Alert", state_topic=t.events, event_types=list(alerts),
        value_template=_event_template(alerts), icon="mdi:alert")
    if f.exit_button:
        add("exit", "event", "Exit button", device_class="button", state_topic=t.events,
            event_types=["exit_request"], value_template=_event_template({"exit_request": ()}))
    if f.contact:
        add("door", "binary_sensor", "Door", device_class="door", state_topic=t.door_state,
            payload_on="open", payload_off="closed")
        add("forced_open", "binary_sensor", "Door forced open", device_class="tamper", state_topic=t.status,
            value_template=_status_flag(("door", "forced_open")))
        add("held_open", "binary_sensor", "Door held open", device_class="problem", state_topic=t.status,
            value_template=_status_flag(("door", "held_open")))
    add("camera", "binary_sensor", "Camera", device_class="problem", state_topic=t.status,
        value_template=_status_flag(("camera", "ok"), invert=True), json_attributes_topic=t.status,
        json_attributes_template=_status_object("camera"), entity_category="diagnostic")
    # On while matching fails on every face (e.g. a gallery the matcher cannot use): the door then lets no one in.
    add("recognition", "binary_sensor", "Recognition", device_class="problem", state_topic=t.status,
        value_template=_status_flag(("recognition", "ok"), invert=True), json_attributes_topic=t.status,
        json_attributes_template=_status_object("recognition"), entity_category="diagnostic")
    add("last_access", "sensor", "Last access", state_topic=t.status,
        value_template=("{% set a = value_json.get('last_access') %}{% if a is mapping %}"
                        "{{ a.get('name') or a.get('person_id') }}{% elif 'last_access' in value_json %}None"
                        "{% endif %}"),
        json_attributes_topic=t.status, json_attributes_template=_status_object("last_access"),
        icon="mdi:account-check")
    status_sensor("gallery_persons", "Enrolled persons", "gallery_persons", unit_of_measurement="persons",
                  state_class="measurement", icon="mdi:account-group")
    status_sensor("fps", "Frame rate", "fps", unit_of_measurement="fps", state_class="measurement",
                  entity_category="diagnostic")
    status_sensor("outbox_pending", "Undelivered events", "outbox_pending", unit_of_measurement="events",
                  state_class="measurement", entity_category="diagnostic")
    status_sensor("events_dropped", "Events dropped", "events_dropped", unit_of_measurement="events",
                  state_class="total_increasing", entity_category="diagnostic", icon="mdi:alert-circle")
    # Components of the other unlock mode, and of older versions, are removed by naming only their platform.
    for cid, platform in (("lock", "lock"), ("lock_state", "binary_sensor"), ("lockdown", "binary_sensor"),
                          ("lockdown_switch", "switch"), ("last_person", "sensor")):
        cmps.setdefault(cid, {"p": platform})

    dev: dict[str, Any] = {
        "identifiers": [uid],
        "name": name or f"facegate {device_id}",
        "manufacturer": "facegate",
        "model": model,
        "sw_version": sw_version,
        "serial_number": device_id,
    }
    if hw_version:
        dev["hw_version"] = hw_version
    if configuration_url:
        dev["configuration_url"] = configuration_url
    return {
        "dev": dev,
        "o": {"name": "facegate", "sw_version": sw_version},
        "availability_topic": t.availability,
        "payload_available": "online",
        "payload_not_available": "offline",
        "cmps": cmps,
    }
