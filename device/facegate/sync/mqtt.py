"""MQTT plumbing shared by the admin publisher and the door's sync receiver (paho-mqtt 2.x).

The publisher writes every chunk retained with QoS 1 and waits for each PUBACK before it moves the manifest
to the new bundle, so a door that sees the new manifest can always fetch the chunks it names. Stale chunk
topics of a larger previous bundle are cleared (empty retained message) last.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

from facegate.errors import FacegateError
from facegate.events.mqtt_client import MqttTarget, new_client
from facegate.sync.bundle import BundleError, peek_header
from facegate.sync.chunks import (
    DEFAULT_CHUNK_BYTES,
    chunk_topic,
    make_chunks,
    make_manifest,
    manifest_topic,
    parse_manifest,
)
from facegate.validate.names import is_plain_topic

__all__ = ["MqttTarget", "PublishError", "new_client", "publish_bundle"]


class PublishError(FacegateError):
    """The bundle could not be published (broker unreachable, refused, or did not acknowledge in time)."""


def publish_bundle(
    data: bytes,
    target: MqttTarget,
    topic: str,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    client_id: str | None = None,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Publish ``data`` (a bundle file) under ``topic``; returns a summary for the CLI.

    The bundle is not verified here (the admin may not hold the doors' key list); its header is only read for
    the manifest. Raises :class:`PublishError` if anything is not acknowledged within ``timeout`` seconds.
    """
    if not is_plain_topic(topic):
        raise PublishError(f"--topic {topic!r}: must be a plain topic (no wildcards, no leading/trailing '/')")
    try:
        header = peek_header(data)
    except BundleError as exc:
        raise PublishError(f"not a bundle: {exc}") from None
    manifest = make_manifest(data, header, chunk_bytes)
    chunks = make_chunks(data, manifest)
    deadline = time.monotonic() + timeout
    client = new_client(target, client_id or f"facegate-publish-{uuid.uuid4().hex[:12]}")
    connected = threading.Event()
    failure: list[str] = []
    previous: list[bytes] = []
    probe_topic = f"{topic}/probe/{uuid.uuid4().hex}"
    probed = threading.Event()
    subscribed = threading.Event()

    def on_connect(c: paho.Client, u: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            failure.append(f"broker refused the connection: {reason}")
        connected.set()

    def on_message(c: paho.Client, u: Any, msg: paho.MQTTMessage) -> None:
        if msg.topic == manifest_topic(topic) and msg.payload:
            previous.append(bytes(msg.payload))
        elif msg.topic == probe_topic:
            probed.set()

    client.on_connect = on_connect
    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.max_inflight_messages_set(16)
    try:
        client.connect(target.host, target.port, keepalive=target.keepalive)
    except OSError as exc:
        raise PublishError(f"cannot reach broker {target.host}:{target.port}: {exc}") from None
    client.loop_start()
    try:
        if not connected.wait(max(0.1, deadline - time.monotonic())) or failure:
            raise PublishError(failure[0] if failure else "no CONNACK from the broker in time")
        # The previous manifest says how many chunk topics an older bundle used (to clear the extra ones). The
        # broker sends a retained message right after the SUBACK; a message of our own on a private probe topic,
        # published after the SUBACK, arrives after it (one connection keeps order), so once the probe is back
        # we know whether there was a previous manifest, without guessing a delay.
        client.subscribe([(manifest_topic(topic), 1), (probe_topic, 1)])
        if subscribed.wait(max(0.1, deadline - time.monotonic())):
            client.publish(probe_topic, b"", qos=1)
            probed.wait(max(0.1, min(5.0, deadline - time.monotonic())))
        client.unsubscribe([manifest_topic(topic), probe_topic])
        old_count = 0
        if previous:
            try:
                old_count = parse_manifest(previous[-1]).chunks
            except BundleError:
                old_count = 0
        infos = [client.publish(chunk_topic(topic, i), payload, qos=1, retain=True) for i, payload in
                 enumerate(chunks)]
        _wait_all(infos, deadline, "chunks")
        _wait_all([client.publish(manifest_topic(topic), manifest.to_bytes(), qos=1, retain=True)], deadline,
                  "manifest")
        stale = [client.publish(chunk_topic(topic, i), b"", qos=1, retain=True)
                 for i in range(manifest.chunks, old_count)]
        _wait_all(stale, deadline, "stale chunk clean-up")
    finally:
        client.disconnect()
        client.loop_stop()
    return {"bundle": manifest.bundle, "bytes": manifest.size, "chunks": manifest.chunks,
            "chunk_bytes": manifest.chunk_bytes, "version": manifest.version, "kind": manifest.kind,
            "base_version": manifest.base_version, "topic": topic, "stale_chunks_cleared": max(0, old_count
                                                                                              - manifest.chunks),
            "manifest": json.loads(manifest.to_bytes())}


def _wait_all(infos: list[paho.MQTTMessageInfo], deadline: float, what: str) -> None:
    for info in infos:
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise PublishError(f"publishing {what} failed: {paho.error_string(info.rc)}")
        remaining = deadline - time.monotonic()
        try:
            info.wait_for_publish(max(0.01, remaining))
        except (RuntimeError, ValueError) as exc:
            raise PublishError(f"publishing {what} failed: {exc}") from None
        if not info.is_published():
            raise PublishError(f"the broker did not acknowledge the {what} in time")
