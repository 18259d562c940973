"""The event transport: MQTT with verified commands and Home Assistant discovery, or none (events stay local).

MQTT and command verification are imported only when ``[mqtt] enabled``: unused, their libraries (paho + ssl,
cryptography) would cost a small Pi megabytes of resident memory (tools/bench/bench_footprint.py).
"""

from __future__ import annotations

from collections.abc import Callable

from facegate.config import Config
from facegate.events.communicator import Communicator, NullCommunicator
from facegate.events.discovery import DoorFeatures, discovery_payload, pi_model
from facegate.events.emitter import EventEmitter


def build_communicator(config: Config, emitter: EventEmitter,
                       configuration_url: Callable[[], str | None]) -> Communicator:
    """``configuration_url``: read at each discovery, so a console started later still shows on HA's page."""
    if not config.mqtt.enabled:
        return NullCommunicator(emitter)
    from facegate.events.commands import CommandVerifier
    from facegate.events.mqtt import MqttCommunicator

    verifier = CommandVerifier(config.commands, config.device_id, config.state_dir / "command_nonces.db")
    # Home Assistant discovery declares what this door has and which unlock mode it runs.
    features = DoorFeatures(
        contact=config.door.contact_pin is not None, exit_button=config.door.exit_pin is not None,
        ha_unlock=verifier.home_assistant_mode, ha_lockdown=verifier.home_assistant_lockdown,
        code_format=config.commands.home_assistant_code_format)
    hw_version = pi_model()
    return MqttCommunicator(
        config.mqtt, config.device_id, emitter, verifier, status_interval_seconds=None,
        discovery=lambda: discovery_payload(config.mqtt, config.device_id, features=features,
                                            hw_version=hw_version, configuration_url=configuration_url()))
