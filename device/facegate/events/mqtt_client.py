"""One way to build a configured paho client, shared by the event transport and the sync receiver/publisher.

Both talk to the same broker with the same credentials; building the client in one place keeps the TLS and
password rules (and their error messages naming the key) identical for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from facegate.config import ConfigError, MqttConfig

__all__ = ["MqttTarget", "connect_async", "new_client"]


@dataclass(frozen=True)
class MqttTarget:
    host: str = "localhost"
    port: int = 1883
    protocol: str = "3.1.1"
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive: int = 30

    @classmethod
    def from_config(cls, cfg: MqttConfig) -> MqttTarget:
        """The door's ``[mqtt]`` settings (same broker, same credentials as its events)."""
        password = cfg.password
        if cfg.password_file is not None:
            if password is not None:
                raise ConfigError("mqtt.password and mqtt.password_file are both set; keep one")
            try:
                password = Path(cfg.password_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"mqtt.password_file: cannot read {cfg.password_file}: {exc}") from None
        return cls(cfg.host, cfg.port, cfg.protocol, cfg.username, password, cfg.tls, cfg.ca_file, cfg.cert_file,
                   cfg.key_file, cfg.keepalive_seconds)


def new_client(target: MqttTarget, client_id: str, *, persistent: bool = False) -> paho.Client:
    """``persistent``: MQTT 3.1.1 keeps the session (subscriptions, queued QoS 1 messages) across reconnections;
    with MQTT 5 the caller asks for that at connect time (clean start off, a session expiry interval)."""
    v5 = target.protocol == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=None if v5 else not persistent,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
    )
    if target.password is not None and target.username is None:
        raise ConfigError("mqtt.password is set but mqtt.username is not")
    if target.username is not None:
        client.username_pw_set(target.username, target.password)
    if target.tls:
        if (target.cert_file is None) != (target.key_file is None):
            raise ConfigError("mqtt.cert_file and mqtt.key_file must be given together")
        try:
            client.tls_set(ca_certs=str(target.ca_file) if target.ca_file else None,
                           certfile=str(target.cert_file) if target.cert_file else None,
                           keyfile=str(target.key_file) if target.key_file else None)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"mqtt TLS files (ca_file/cert_file/key_file): {exc}") from None
    elif target.ca_file or target.cert_file or target.key_file:
        raise ConfigError("mqtt.ca_file/cert_file/key_file are set but mqtt.tls is false")
    client.suppress_exceptions = True  # an exception in a callback must not end paho's network thread
    return client


def connect_async(client: paho.Client, target: MqttTarget, max_packet_bytes: int) -> None:
    """Start connecting in the background; with MQTT 5, a clean start that asks the broker to drop, not deliver,
    any packet over ``max_packet_bytes``.

    paho reads a whole packet into memory before any callback can look at its size, so without the limit one
    huge publish to a subscribed topic can exhaust a Pi's memory. MQTT 3.1.1 has no such property: there, set the
    broker's ``max_packet_size`` (docs/mqtt.md).
    """
    if target.protocol != "5":
        client.connect_async(target.host, target.port, keepalive=target.keepalive)
        return
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.MaximumPacketSize = max_packet_bytes
    client.connect_async(target.host, target.port, keepalive=target.keepalive, clean_start=True, properties=props)
