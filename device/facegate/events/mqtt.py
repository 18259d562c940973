"""MQTT transport: delivers the outbox to the broker, publishes retained states, receives signed commands.

Threads (none of them is the caller's):

* paho's network thread (``loop_start``) runs the callbacks. ``on_publish`` only queues the acknowledged message
  id and ``on_connect``/``on_disconnect`` only flip flags, so the network thread never waits on SQLite or on our
  locks (paho calls ``on_publish`` while holding its own message lock; touching ours there could deadlock).
  Commands are verified and handed to the registered handler on this thread.
* the pump thread owns every ``publish()``: it reads the outbox in row order, keeps at most ``max_inflight``
  events unacknowledged, deletes a row only when its PUBACK has arrived, and publishes the retained states.

So the frame loop only pays for the durable SQLite append in ``emit``; it never waits on the network.

Delivery is at-least-once. A QoS 1 message whose PUBACK is lost with the connection is sent again (by paho after
reconnecting, or from the outbox after a restart), so consumers must deduplicate by ``event_id``. Ordering:
events leave in ``seq`` order; after a reconnect no new event is sent until the ones that were in flight have
been acknowledged again, so a subscriber never sees an older event after a newer one.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from facegate import __version__
from facegate.config import MqttConfig
from facegate.events.commands import CommandRejected, CommandVerifier
from facegate.events.communicator import Command, CommandHandler, status_seq
from facegate.events.discovery import Topics, discovery_payload, topics
from facegate.events.emitter import EventEmitter, format_ts
from facegate.events.mqtt_client import MqttTarget, connect_async, new_client
from facegate.events.outbox import OutboxError
from facegate.events.ratelimit import ReportLimiter
from facegate.validate.names import is_plain_topic

__all__ = ["MqttCommunicator"]

log = logging.getLogger(__name__)
_paho_log = logging.getLogger("facegate.events.paho")

#: QoS 1 slots kept free for availability, discovery and state messages next to the event window.
_STATE_HEADROOM = 8
#: The status is re-sent when the outbox counters it carries changed, at most this often.
COUNTERS_REFRESH_SECONDS = 1.0
#: ``outbox_pending`` counts events waiting longer than this: a backlog, not the event in flight right now. Every
#: event is pending for the milliseconds until its PUBACK, and a status sent in between (the service publishes
#: one after each grant) made Home Assistant's "Undelivered events" flip to 1 and back after every event.
BACKLOG_AFTER_SECONDS = 5.0
#: Largest packet the broker may send us (MQTT 5): commands are at most 4 KiB, Home Assistant's status a word.
MAX_INBOUND_PACKET_BYTES = 64 * 1024


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class MqttCommunicator:
    """The :class:`~facegate.events.communicator.Communicator` for a real broker (paho-mqtt 2.x).

    ``status_interval_seconds``: the ``status`` topic is re-published this often (with fresh ``outbox_pending``
    and ``events_dropped`` counters) even when the service has not called ``publish_state("status", ...)``;
    None: never on a timer (the service's :class:`~facegate.events.status.StatusPublisher` has its own). In any
    case the status is re-sent within :data:`COUNTERS_REFRESH_SECONDS` when those counters change, and no status
    is published before the service supplied one (a status is always complete).
    ``discovery``: builds the Home Assistant discovery payload (default: :func:`discovery_payload` with no
    optional features). The keyword-only knobs exist for tests and unusual brokers; the defaults suit a Pi.
    """

    def __init__(
        self,
        config: MqttConfig,
        device_id: str,
        emitter: EventEmitter,
        verifier: CommandVerifier,
        status_interval_seconds: float | None = 60,
        *,
        discovery: Callable[[], dict[str, Any]] | None = None,
        max_inflight: int = 20,
        reconnect_min_delay: int = 1,
        reconnect_max_delay: int = 30,
        inflight_timeout_seconds: float = 120.0,
        failure_retry_seconds: float = 5.0,
        sw_version: str = __version__,
    ) -> None:
        if max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")
        self._config = config
        self._device_id = device_id
        self._emitter = emitter
        self._outbox = emitter.outbox
        self._verifier = verifier
        self._rejections = ReportLimiter()
        self._status_interval = None if status_interval_seconds is None else float(status_interval_seconds)
        self._discovery = discovery or (lambda: discovery_payload(config, device_id, sw_version=sw_version))
        self._max_inflight = max_inflight
        self._window = max_inflight
        self._inflight_timeout = inflight_timeout_seconds
        self._failure_retry = failure_retry_seconds
        self._sw_version = sw_version
        self._reconnect_delays = (reconnect_min_delay, reconnect_max_delay)
        self.topics: Topics = topics(config, device_id)

        # Shared between threads: plain attribute writes (atomic in CPython) plus the wake event.
        self._wake = threading.Event()
        self._acks: queue.SimpleQueue[tuple[int, bool]] = queue.SimpleQueue()
        self._connected = False
        self._connect_generation = 0
        self._lost_connection = False
        self._discovery_due = False
        self._handler: CommandHandler | None = None
        self._state_lock = threading.Lock()
        self._states: dict[str, str | dict[str, Any]] = {}
        self._dirty: set[str] = set()
        self._started = False
        self._stopping = False
        self._pump: threading.Thread | None = None
        self._last_connect_error: str | None = None

        # Pump-thread-only state.
        self._inflight: dict[int, tuple[int, float]] = {}  # mid -> (outbox rowid, monotonic send time)
        self._inflight_rows: set[int] = set()
        self._cursor = 0  # highest outbox row id handed to paho
        self._ack_backlog: list[int] = []  # delivered rows whose ack could not be written yet (a full disk)
        self._barrier = False  # after a reconnect: wait for re-sent in-flight events before sending new ones
        self._hold_until = 0.0
        self._published_generation = 0
        self._generation_started = 0.0
        self._next_status = 0.0
        self._published_counters: tuple[int, int] | None = None  # (pending, dropped) in the last status sent
        self._status_sent_at = -float("inf")

        self._target = MqttTarget.from_config(config)  # ConfigError naming the key, before anything starts
        self._client = self._make_client()

    # ------------------------------------------------------------------ construction

    def _make_client(self) -> paho.Client:
        """Build and configure the paho client; configuration mistakes raise ConfigError naming the key."""
        cfg = self._config
        # Clean sessions on purpose (new_client): commands queued by the broker while we were away would be
        # stale anyway (and then refused as expired); events do not need the session: the outbox re-sends them.
        client = new_client(self._target, cfg.client_id or f"facegate-{self._device_id}")
        # paho's own messages go to DEBUG: while the broker is away it logs every retry at ERROR, and our
        # callbacks already report connection changes once, at the right level.
        client.on_log = self._on_log
        client.will_set(self.topics.availability, "offline", qos=1, retain=True)
        client.reconnect_delay_set(min_delay=self._reconnect_delays[0], max_delay=self._reconnect_delays[1])
        # Headroom above the event window for the retained state messages.
        client.max_inflight_messages_set(self._max_inflight + _STATE_HEADROOM)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    # ------------------------------------------------------------------ Communicator API

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def pending(self) -> int:
        """Events in the outbox not yet acknowledged by the broker (includes those in flight)."""
        return len(self._outbox)

    @property
    def inflight(self) -> int:
        """Events published and awaiting their PUBACK (at most ``max_inflight``)."""
        return len(self._inflight)

    def start(self) -> None:
        """Connect in the background (returns at once, even with the broker down) and start the pump."""
        if self._started:
            raise RuntimeError("MqttCommunicator.start() called twice")
        self._started = True
        self._emitter.add_listener(self._on_event)
        connect_async(self._client, self._target, MAX_INBOUND_PACKET_BYTES)
        self._client.loop_start()
        self._pump = threading.Thread(target=self._run_pump, name="facegate-mqtt-pump", daemon=True)
        self._pump.start()

    def stop(self, flush_timeout_seconds: float) -> int:
        """Flush for up to ``flush_timeout_seconds``, announce ``offline``, disconnect; return events still pending.

        Events still pending stay in the outbox and are sent after the next start.
        """
        if not self._started or self._stopping:
            return len(self._outbox)
        deadline = time.monotonic() + max(0.0, flush_timeout_seconds)
        while len(self._outbox) > 0 and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.02)
        self._stopping = True
        self._wake.set()
        if self._pump is not None:
            self._pump.join(timeout=5.0)
        self._emitter.remove_listener(self._on_event)
        if self._connected:
            try:
                # The pump has ended: states set during shutdown (the final status, lock state) go out here, on
                # the same connection and so before "offline", whose acknowledgement we wait for.
                self._publish_states()
                info = self._client.publish(self.topics.availability, "offline", qos=1, retain=True)
                info.wait_for_publish(timeout=2.0)
            except (RuntimeError, ValueError) as exc:
                log.warning("could not publish offline availability: %s", exc)
        self._client.disconnect()
        self._client.loop_stop()
        self._connected = False
        try:
            self._apply_acks()  # PUBACKs that arrived while announcing offline (the pump has exited)
        except Exception:
            log.exception("could not record the last acknowledgements")
        remaining = len(self._outbox)
        if remaining:
            log.warning("MQTT stopped with %d event(s) undelivered; they stay in the outbox", remaining)
        return remaining

    def publish_state(self, name: str, payload: str | dict[str, Any]) -> None:
        """Set a retained state; published by the pump thread now if connected, else after reconnecting."""
        if not is_plain_topic(name):
            raise ValueError(f"invalid state name {name!r}")
        with self._state_lock:
            if name == "status" and status_seq(payload) < status_seq(self._states.get(name)):
                return  # last writer wins: an older status never replaces a newer one
            self._states[name] = payload
            self._dirty.add(name)
        self._wake.set()

    def on_command(self, handler: CommandHandler) -> None:
        self._handler = handler

    # ------------------------------------------------------------------ paho callbacks (network thread)

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        try:
            self._handle_connect(client, reason_code, properties)
        except Exception:  # never let an exception escape into paho's network thread
            log.exception("error handling the MQTT connection acknowledgement")

    def _handle_connect(self, client: paho.Client, reason_code: ReasonCode, properties: Properties | None) -> None:
        if reason_code.is_failure:
            message = f"broker {self._config.host}:{self._config.port} refused the connection: {reason_code}"
            if message != self._last_connect_error:
                log.error("%s", message)
                self._last_connect_error = message
            return
        self._last_connect_error = None
        receive_max = getattr(properties, "ReceiveMaximum", None) if properties is not None else None
        if isinstance(receive_max, int) and receive_max > 0:
            # MQTT 5: stay under what the broker accepts unacknowledged, leaving room for the state messages.
            self._window = max(1, min(self._max_inflight, receive_max - _STATE_HEADROOM))
        else:
            self._window = self._max_inflight
        # MQTT 5 keeps the publisher's retain flag on live delivery (retainAsPublished), so a command published
        # retained is refused even when the device is already subscribed. MQTT 3.1.1 clears that flag on live
        # delivery: there only the re-delivery on (re)subscribe is flagged; the nonce store refuses it anyway.
        command_qos: Any = SubscribeOptions(qos=1, retainAsPublished=True) if self._config.protocol == "5" else 1
        subscriptions: list[tuple[str, Any]] = [(self.topics.lock_set, command_qos)]
        if self._config.discovery:
            status_qos: Any = SubscribeOptions(qos=1) if self._config.protocol == "5" else 1
            subscriptions.append((self.topics.ha_status, status_qos))
        client.subscribe(subscriptions)
        log.info("MQTT connected to %s:%d", self._config.host, self._config.port)
        self._connect_generation += 1
        self._connected = True
        self._wake.set()

    @staticmethod
    def _on_log(client: paho.Client, userdata: Any, level: int, message: str) -> None:
        _paho_log.debug("%s", message)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        message = f"cannot reach broker {self._config.host}:{self._config.port}"
        if message != self._last_connect_error:
            log.warning("%s; retrying with backoff", message)
            self._last_connect_error = message

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._connected and not self._stopping:
            log.warning("MQTT connection lost (%s); events wait in the outbox", reason_code)
        self._connected = False
        self._lost_connection = True
        self._wake.set()

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Properties
    ) -> None:
        # Called with paho's message lock held: only hand over to the pump, take no lock of ours.
        self._acks.put((mid, reason_code.is_failure))
        self._wake.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            if message.topic == self.topics.lock_set:
                self._handle_command(bytes(message.payload), bool(message.retain))
            elif message.topic == self.topics.ha_status and bytes(message.payload).strip().lower() == b"online":
                self._discovery_due = True
                self._wake.set()
        except Exception:  # never let an exception escape into paho: it would stop the network thread
            log.exception("error handling MQTT message on %s", message.topic)

    def _handle_command(self, payload: bytes, retained: bool) -> None:
        try:
            command = self._verifier.verify(payload, retained=retained)
        except CommandRejected as exc:
            held_back = self._rejections.admit()
            if held_back is None:
                log.debug("%s (not reported: too many refusals)", exc)
                return
            log.warning("%s", exc)
            self._emitter.emit("command_rejected", reason=exc.reason, action=exc.action, suppressed=held_back)
            return
        handler = self._handler
        if handler is None:
            log.error("command %s verified but no handler is registered; ignored", command.action)
            return
        log.info("command %s accepted", command.action)
        self._emitter.emit("command_accepted", action=command.action, nonce=command.nonce)
        self._call_handler(handler, command)

    @staticmethod
    def _call_handler(handler: CommandHandler, command: Command) -> None:
        try:
            handler(command)
        except Exception:
            log.exception("command handler failed for %s", command.action)

    def _on_event(self, event: dict[str, Any]) -> None:
        self._wake.set()

    # ------------------------------------------------------------------ pump thread

    def _run_pump(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            timeout = (self._next_status - now) if self._connected and self._status_interval is not None else 1.0
            if self._connected and self._counters_changed():
                timeout = min(timeout, self._status_sent_at + COUNTERS_REFRESH_SECONDS - now)
            if self._inflight:
                timeout = min(timeout, 1.0)
            if self._hold_until > now:
                timeout = min(timeout, self._hold_until - now)
            self._wake.wait(timeout=max(0.01, min(timeout, 5.0)))
            self._wake.clear()
            if self._stopping:
                break
            try:
                self._step()
            except Exception:
                log.exception("MQTT pump error; retrying")
                time.sleep(0.5)
        try:
            self._apply_acks()
        except Exception:
            log.exception("MQTT pump error while applying final acknowledgements")

    def _step(self) -> None:
        self._apply_acks()
        if self._lost_connection:
            self._lost_connection = False
            # paho re-sends its unacknowledged QoS 1 messages after reconnecting; hold new events behind them.
            self._barrier = bool(self._inflight)
        if not self._connected:
            return
        now = time.monotonic()
        generation = self._connect_generation
        announce = generation != self._published_generation
        if announce:
            self._published_generation = generation
            self._generation_started = now
            with self._state_lock:
                self._dirty.update(self._states)
                self._dirty.add("status")
            self._discovery_due = self._config.discovery
        if self._discovery_due:
            self._discovery_due = False
            self._publish("discovery", self.topics.discovery, _dumps(self._discovery()), retain=True)
        due = self._status_interval is not None and now >= self._next_status
        if due or (self._counters_changed() and now >= self._status_sent_at + COUNTERS_REFRESH_SECONDS):
            with self._state_lock:
                self._dirty.add("status")
        self._publish_states()
        if announce:
            # "online" last, on the same connection (so the broker delivers it after them): until it arrives,
            # Home Assistant shows the door unavailable instead of the retained states of a run that crashed
            # (an "unlocked" lock for a moment fires automations on the lock turning on).
            self._publish("availability", self.topics.availability, "online", retain=True)
        self._check_stuck(now)
        self._fill_window(now)

    def _publish(self, what: str, topic: str, payload: str, *, retain: bool) -> MQTTErrorCode:
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.warning("publishing %s failed: %s", what, paho.error_string(info.rc))
        return info.rc

    def _counters(self) -> tuple[int, int]:
        """(backlog, dropped) as the status reports them (see :data:`BACKLOG_AFTER_SECONDS`)."""
        return self._outbox.waiting_longer_than(BACKLOG_AFTER_SECONDS), self._emitter.dropped

    def _counters_changed(self) -> bool:
        """True when a status was sent and the outbox counters it carried are no longer true."""
        return self._published_counters is not None and self._counters() != self._published_counters

    def _status_payload(self, base: str | dict[str, Any]) -> str:
        if isinstance(base, str):
            return base
        status = dict(base)
        backlog, dropped = self._counters()
        self._published_counters = (backlog, dropped)
        status["outbox_pending"] = backlog
        status["events_dropped"] = dropped
        if isinstance(status.get("outbox"), dict):  # the service's own copy of the counters: keep them equal
            status["outbox"] = {**status["outbox"], "pending": backlog, "dropped": dropped}
        status["ts"] = format_ts(time.time())
        return _dumps(status)

    def _publish_states(self) -> None:
        with self._state_lock:
            dirty, self._dirty = self._dirty, set()
            states = {name: self._states.get(name) for name in dirty}
        for name, value in states.items():
            if value is None:
                continue  # never a status the service did not supply: it would lack most of its keys
            if name == "status":
                payload = self._status_payload(value)
                self._status_sent_at = time.monotonic()
                self._next_status = self._status_sent_at + (self._status_interval or 0.0)
            else:
                payload = value if isinstance(value, str) else _dumps(value)
            self._publish(name, self.topics.state(name), payload, retain=True)

    def _apply_acks(self) -> None:
        delivered: list[int] = []
        while True:
            try:
                mid, failed = self._acks.get_nowait()
            except queue.Empty:
                break
            entry = self._inflight.pop(mid, None)
            if entry is None:
                continue  # a state/availability publish, or a message we stopped tracking
            rowid = entry[0]
            self._inflight_rows.discard(rowid)
            if failed:
                # MQTT 5 broker refused it (e.g. not authorised): keep it and try again later, never drop it.
                log.error("broker refused event row %d; retrying in %.0f s", rowid, self._failure_retry)
                self._cursor = min(self._cursor, rowid - 1)
                self._hold_until = time.monotonic() + self._failure_retry
            else:
                delivered.append(rowid)
        # Found by the full-disk fault test (tests/service/test_faults.py): a failed ack (SQLITE_FULL) lost the row ids,
        # and the rows, already past the cursor, stayed pending until the next restart. Keep them and retry.
        delivered = self._ack_backlog + delivered
        if delivered:
            try:
                self._outbox.ack_many(delivered)
            except OutboxError as exc:
                if not self._ack_backlog:
                    log.warning("cannot record %d delivered event(s) yet, will retry: %s", len(delivered), exc)
                self._ack_backlog = delivered
            else:
                self._ack_backlog = []
        if not self._inflight:
            self._barrier = False

    def _check_stuck(self, now: float) -> None:
        """Safety net: if PUBACKs stop coming while connected, forget in-flight and re-send from the outbox."""
        if not self._inflight:
            return
        oldest = min(max(sent, self._generation_started) for _, sent in self._inflight.values())
        if now - oldest < self._inflight_timeout:
            return
        log.warning(
            "%d event(s) unacknowledged for %.0f s; re-sending from the outbox", len(self._inflight), now - oldest
        )
        self._cursor = min(self._cursor, min(self._inflight_rows) - 1)
        self._inflight.clear()
        self._inflight_rows.clear()
        self._barrier = False

    def _fill_window(self, now: float) -> None:
        if self._barrier or now < self._hold_until:
            return
        room = self._window - len(self._inflight)
        while room > 0 and self._connected:
            batch = self._outbox.peek(limit=room, after=self._cursor)
            if not batch:
                return
            for rowid, event in batch:
                self._cursor = max(self._cursor, rowid)
                if rowid in self._inflight_rows:
                    continue
                info = self._client.publish(self.topics.events, _dumps(event), qos=1, retain=False)
                if info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                    # NO_CONN: paho kept the message and sends it after reconnecting, so it is in flight.
                    self._inflight[info.mid] = (rowid, now)
                    self._inflight_rows.add(rowid)
                    room -= 1
                    if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
                        return
                else:
                    log.warning("publishing event row %d failed: %s", rowid, paho.error_string(info.rc))
                    self._cursor = rowid - 1
                    return
