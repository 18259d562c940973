"""Topic names and the Home Assistant device-based MQTT discovery message.

One retained message on ``<discovery_prefix>/device/facegate_<device_id>/config`` declares the whole door to
Home Assistant: the device block, the origin block, shared availability, and the components (lock, access
event, door contact, diagnostics). It is re-sent on every connect and whenever Home Assistant announces itself
(``<discovery_prefix>/status`` = ``online``), so HA recovers the entities after its own restart.

The lock entity is state-only in practice: HA's lock publishes plain ``LOCK``/``UNLOCK`` to ``lock/set``, which the
device refuses as ``unsigned`` (a ``command_rejected`` event is published). ``optimistic`` is False so HA never
pretends the door moved. To operate the door from HA, use a signing bridge (docs/mqtt.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from facegate import __version__
from facegate.config import MqttConfig

__all__ = ["HA_EVENT_TYPES", "Topics", "discovery_payload", "discovery_topic", "topics"]

#: The event types surfaced by the HA ``event`` entity (the others are for dashboards and logs).
HA_EVENT_TYPES = ("access_granted", "access_denied", "unknown_face")


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


def _event_template() -> str:
    """Jinja for HA's event entity: map our envelope to ``{"event_type": ...}`` plus attributes.

    Every event type shares one topic, so types HA should not see render ``{}``, which HA ignores.
    """
    types = ", ".join(f"'{t}'" for t in HA_EVENT_TYPES)
    attrs = ", ".join(
        f"'{k}': value_json.get('{k}')"
        for k in ("event_id", "ts", "person_id", "name", "similarity", "reason", "best_similarity")
    )
    return (
        f"{{% if value_json.type in [{types}] %}}"
        f"{{{{ {{'event_type': value_json.type, {attrs}}} | tojson }}}}"
        "{% else %}{}{% endif %}"
    )


def discovery_payload(
    config: MqttConfig,
    device_id: str,
    *,
    name: str | None = None,
    model: str = "facegate door controller",
    sw_version: str = __version__,
) -> dict[str, Any]:
    """The device discovery JSON (as a dict) for this door."""
    t = topics(config, device_id)
    uid = f"facegate_{device_id}"
    components: dict[str, dict[str, Any]] = {
        "lock": {
            "p": "lock",
            "unique_id": f"{uid}_lock",
            "name": "Lock",
            "state_topic": t.lock_state,
            "command_topic": t.lock_set,
            "state_locked": "LOCKED",
            "state_unlocked": "UNLOCKED",
            "payload_lock": "LOCK",
            "payload_unlock": "UNLOCK",
            # The device only obeys signed commands: HA must show the reported state, never assume it.
            "optimistic": False,
        },
        "access": {
            "p": "event",
            "unique_id": f"{uid}_access",
            "name": "Access",
            "state_topic": t.events,
            "event_types": list(HA_EVENT_TYPES),
            "value_template": _event_template(),
            "icon": "mdi:face-recognition",
        },
        "door": {
            "p": "binary_sensor",
            "unique_id": f"{uid}_door",
            "name": "Door",
            "device_class": "door",
            "state_topic": t.door_state,
            "payload_on": "open",
            "payload_off": "closed",
        },
        "gallery_persons": {
            "p": "sensor",
            "unique_id": f"{uid}_gallery_persons",
            "name": "Enrolled persons",
            "state_topic": t.status,
            "value_template": "{{ value_json.gallery_persons }}",
            "state_class": "measurement",
            "icon": "mdi:account-group",
        },
        "fps": {
            "p": "sensor",
            "unique_id": f"{uid}_fps",
            "name": "Frame rate",
            "state_topic": t.status,
            "value_template": "{{ value_json.fps }}",
            "unit_of_measurement": "fps",
            "state_class": "measurement",
            "entity_category": "diagnostic",
        },
        "last_person": {
            "p": "sensor",
            "unique_id": f"{uid}_last_person",
            "name": "Last person",
            "state_topic": t.status,
            "value_template": "{{ value_json.last_person }}",
            "icon": "mdi:account-check",
        },
        "outbox_pending": {
            "p": "sensor",
            "unique_id": f"{uid}_outbox_pending",
            "name": "Undelivered events",
            "state_topic": t.status,
            "value_template": "{{ value_json.outbox_pending }}",
            "state_class": "measurement",
            "entity_category": "diagnostic",
        },
    }
    return {
        "dev": {
            "identifiers": [uid],
            "name": name or f"facegate {device_id}",
            "manufacturer": "facegate",
            "model": model,
            "sw_version": sw_version,
        },
        "o": {"name": "facegate", "sw_version": sw_version},
        "availability_topic": t.availability,
        "payload_available": "online",
        "payload_not_available": "offline",
        "qos": 1,
        "cmps": components,
    }
