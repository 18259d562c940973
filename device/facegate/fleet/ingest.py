"""Door messages in: one MQTT session that survives restarts, QoS 1, acknowledged only once stored.

The fleet server subscribes to every door's ``events``, ``status`` and ``availability`` with a fixed client id and
a persistent session (MQTT 5: clean start off and a session expiry; 3.1.1: clean session off), so while the
server is down the broker queues events for it. paho's automatic acknowledgement is off: a message's PUBACK is
sent only after the transaction holding it committed, so a crash between the two means a redelivery (then
skipped by ``event_id``), never a loss. The doors' outboxes cover the other side: a door deletes an event only
on the broker's PUBACK. Messages are stored in batches (one transaction per batch) on a thread of their own;
paho's network thread only queues them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from facegate.events.mqtt_client import MqttTarget, new_client
from facegate.fleet.doors import BadMessage, DoorRegistry, parse_event, parse_status
from facegate.fleet.store import EventRow, FleetStore

log = logging.getLogger(__name__)

__all__ = ["Ingest", "IngestStats"]

BATCH_MAX = 500
# After the first message of a batch, what else arrives this soon joins it. Short, because nothing is acknowledged
# until the batch commits and the broker sends only its in-flight window (Mosquitto: max_inflight_messages,
# 20 by default) before it waits for those acknowledgements.
BATCH_WAIT_SECONDS = 0.005
# MQTT 5: QoS 1 messages the broker may have sent and not yet seen acknowledged (without it, 65,535: a backlog
# after an outage arrived all at once, waited in memory, and was all redelivered if the server stopped meanwhile).
RECEIVE_MAXIMUM = 1000
SESSION_EXPIRY_SECONDS = 7 * 24 * 3600  # how long the broker keeps queueing for a fleet server that is down
RETRY_SECONDS = 2.0


@dataclass
class IngestStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    refused: int = 0
    store_errors: int = 0
    connected: bool = False
    last_error: str | None = None
    refused_reasons: dict[str, int] = field(default_factory=dict)


class Ingest:
    def __init__(self, target: MqttTarget, client_id: str, prefix: str, store: FleetStore,
                 registry: DoorRegistry) -> None:
        self.target, self.prefix, self.store, self.registry = target, prefix, store, registry
        self.stats = IngestStats()
        self._queue: queue.Queue[paho.MQTTMessage | None] = queue.Queue()
        self._stop = threading.Event()
        self.client = new_client(target, client_id, persistent=True)
        self.client.manual_ack_set(True)
        self.client.max_inflight_messages_set(100)
        self.client.reconnect_delay_set(1, 10)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda c, u, msg: self._queue.put(msg)
        self._thread = threading.Thread(target=self._run, name="facegate-fleet-ingest", daemon=True)
        self.connected = threading.Event()

    # ------------------------------------------------------------------ connection

    def start(self) -> None:
        if self.target.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = SESSION_EXPIRY_SECONDS
            props.ReceiveMaximum = RECEIVE_MAXIMUM
            self.client.connect_async(self.target.host, self.target.port, keepalive=self.target.keepalive,
                                      clean_start=False, properties=props)
        else:
            self.client.connect_async(self.target.host, self.target.port, keepalive=self.target.keepalive)
        self.client.loop_start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout=10)
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.stats.last_error = f"broker refused the connection: {reason}"
            log.error("fleet ingest: %s", self.stats.last_error)
            return
        # Subscribed on every connection: a broker that lost its session (no persistence) must learn them again.
        client.subscribe([(f"{self.prefix}/+/events", 1), (f"{self.prefix}/+/status", 1),
                          (f"{self.prefix}/+/availability", 1)])
        self.stats.connected = True
        self.connected.set()
        log.info("fleet ingest connected to %s:%d", self.target.host, self.target.port)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.stats.connected = False
        self.connected.clear()

    def publish(self, topic: str, payload: bytes, qos: int = 1, timeout: float = 5.0) -> bool:
        """Publish on the ingest's connection (signed door commands); True when the broker acknowledged."""
        info = self.client.publish(topic, payload, qos=qos, retain=False)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    # ------------------------------------------------------------------ storing

    def _run(self) -> None:
        pending: list[paho.MQTTMessage] = []
        while not self._stop.is_set():
            if not pending:
                pending = self._next_batch()
            if not pending:
                continue
            try:
                self._store(pending)
            except Exception as exc:  # the database is down or full: keep the batch, do not acknowledge
                self.stats.store_errors += 1
                self.stats.last_error = f"storing failed: {exc}"
                log.exception("fleet ingest: storing %d messages failed; retrying", len(pending))
                self._stop.wait(RETRY_SECONDS)
                continue
            for msg in pending:
                if msg.qos > 0:
                    self.client.ack(msg.mid, msg.qos)
            pending = []

    def _next_batch(self) -> list[paho.MQTTMessage]:
        try:
            first = self._queue.get(timeout=0.5)
        except queue.Empty:
            return []
        if first is None:
            return []
        batch = [first]
        deadline = time.monotonic() + BATCH_WAIT_SECONDS
        while len(batch) < BATCH_MAX:
            try:
                msg = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if msg is None:
                break
            batch.append(msg)
        return batch

    def _refuse(self, door: str, what: str, reason: str) -> None:
        self.stats.refused += 1
        self.stats.refused_reasons[what] = self.stats.refused_reasons.get(what, 0) + 1
        self.registry.refused(door, what, reason)

    def _store(self, batch: list[paho.MQTTMessage]) -> None:
        rows: list[EventRow] = []
        others: list[tuple[str, str, bytes]] = []
        for msg in batch:
            self.stats.received += 1
            parts = msg.topic.split("/")
            door, kind = parts[-2], parts[-1]
            if not self.registry.admits(door):
                self._refuse(door, kind, "not a door id this fleet admits")
                continue
            if kind == "events":
                try:
                    rows.append(parse_event(door, bytes(msg.payload)))
                except BadMessage as exc:
                    self._refuse(door, "event", str(exc))
            else:
                others.append((door, kind, bytes(msg.payload)))
        if rows:
            new = self.store.insert_new_events(rows)
            fresh = [r for r, is_new in zip(rows, new, strict=True) if is_new]
            self.stats.stored += len(fresh)
            self.stats.duplicates += len(rows) - len(fresh)
            self.registry.events(fresh)
        for door, kind, payload in others:
            try:
                if kind == "status":
                    if payload:  # an empty retained message clears the topic
                        self.registry.status(door, parse_status(door, payload))
                else:
                    self.registry.availability(door, payload)
            except BadMessage as exc:
                self._refuse(door, kind, str(exc))
