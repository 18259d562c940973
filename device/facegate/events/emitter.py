"""Builds event envelopes, stores them in the outbox, and tells listeners.

The frame loop calls :meth:`EventEmitter.emit` and must never crash because of it: when the outbox is full the
event is counted in :attr:`EventEmitter.dropped` (reported in the status message) and ``emit`` returns ``None``.
As soon as there is room again, an ``outbox_full`` event ``{dropped, first_ts, last_ts}`` is stored ahead of the
next event, so the loss itself reaches the dashboards in sequence instead of only a log line on the device.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import PurePath
from typing import Any

from facegate.events.ids import uuid7
from facegate.events.outbox import Outbox, OutboxError

__all__ = ["RESERVED_FIELDS", "EventEmitter", "EventListener", "format_ts"]

log = logging.getLogger(__name__)

EventListener = Callable[[dict[str, Any]], None]

#: Envelope keys set by the emitter; event fields may not override them.
RESERVED_FIELDS = frozenset({"event_id", "seq", "ts", "device_id", "type"})


def format_ts(seconds: float) -> str:
    """ISO-8601 UTC with milliseconds and a 'Z' suffix, e.g. ``2024-05-01T12:00:00.123Z``."""
    stamp = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _jsonable(value: Any, warn: Callable[[Any], None]) -> Any:
    """Convert ``value`` to strict-JSON types so the stored event is exactly what consumers receive.

    Numpy scalars and arrays come from the vision code (similarities), so ``item()``/``tolist()`` are honoured;
    NaN and infinities become ``null`` (JSON has no spelling for them). Anything else unknown is stringified
    with a warning rather than raising: losing the whole event over one odd field would be worse.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, warn) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v, warn) for v in value]
    if isinstance(value, enum.Enum):
        return _jsonable(value.value, warn)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return value.isoformat()
        return format_ts(value.timestamp())
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays and scalars
        return _jsonable(value.tolist(), warn)
    if hasattr(value, "item") and callable(value.item):
        return _jsonable(value.item(), warn)
    warn(value)
    return str(value)


class EventEmitter:
    """Creates events ``{"event_id", "seq", "ts", "device_id", "type", **fields}`` and appends them to the outbox.

    Thread-safe: ``seq`` allocation and the append happen under one lock, so row order in the outbox (the
    publish order) equals ``seq`` order even when several threads emit (the frame loop, the door monitor, the
    MQTT thread reporting rejected commands).
    """

    def __init__(self, device_id: str, outbox: Outbox, clock: Callable[[], float] = time.time) -> None:
        self._device_id = device_id
        self._outbox = outbox
        self._clock = clock
        self._lock = threading.Lock()
        self._listeners: list[EventListener] = []
        self._dropped = 0
        self._unreported = 0  # drops not yet announced by an outbox_full event
        self._first_drop_ts = ""
        self._last_drop_ts = ""

    @property
    def device_id(self) -> str:
        return self._device_id

    @property
    def outbox(self) -> Outbox:
        return self._outbox

    @property
    def dropped(self) -> int:
        """Events refused since start because the outbox was full (or unwritable)."""
        return self._dropped

    @property
    def pending(self) -> int:
        """Events stored and not yet acknowledged by the broker."""
        return len(self._outbox)

    def add_listener(self, listener: EventListener) -> None:
        """Call ``listener(event)`` after each event, on the emitting thread; it must be quick. An event the outbox
        refused (full) is passed too, with ``seq`` None: the journal keeps the door's history even then.

        Exceptions from a listener are logged and swallowed: a logging or wake-up hook must not stop events.
        """
        with self._lock:
            self._listeners = [*self._listeners, listener]

    def remove_listener(self, listener: EventListener) -> None:
        with self._lock:
            self._listeners = [cb for cb in self._listeners if cb is not listener]

    def emit(self, type: str, **fields: Any) -> dict[str, Any] | None:
        """Store one event durably and return it, or return ``None`` when it could not be stored.

        ``None`` means the outbox was full or unwritable: the loss is logged, counted in :attr:`dropped` and the
        caller carries on. Field names in :data:`RESERVED_FIELDS` raise ``ValueError`` (a programming error).
        """
        clash = RESERVED_FIELDS.intersection(fields)
        if clash:
            raise ValueError(f"event field(s) {sorted(clash)} are reserved for the envelope")

        def warn(value: Any) -> None:
            log.warning("event %s: field value of type %s stored as a string", type, _type_name(value))

        body = _jsonable(fields, warn)
        stored: list[dict[str, Any]] = []
        with self._lock:
            ts = format_ts(self._clock())
            if self._unreported:
                # Room again after a loss: first record how many events were lost, so consumers see it in order.
                notice = self._store(
                    "outbox_full",
                    ts,
                    {"dropped": self._unreported, "first_ts": self._first_drop_ts, "last_ts": self._last_drop_ts},
                )
                if notice is not None:
                    self._unreported = 0
                    stored.append(notice)
            event = self._store(type, ts, body) if not self._unreported else None
            if event is None:
                self._dropped += 1
                log.error("event %s dropped: outbox full or unwritable (%d dropped so far)", type, self._dropped)
                self._unreported += 1
                self._first_drop_ts = self._first_drop_ts if self._unreported > 1 else ts
                self._last_drop_ts = ts
                # Not delivered, but it happened: listeners (the local journal, the status) still hear of it,
                # with no seq since it has no place in the delivery sequence.
                stored.append({"event_id": uuid7(), "seq": None, "ts": ts, "device_id": self._device_id,
                               "type": type, **body})
            else:
                stored.append(event)
            listeners = self._listeners
        for item in stored:
            for listener in listeners:
                try:
                    listener(item)
                except Exception:
                    log.exception("event listener %r failed for %s", listener, item["type"])
        return event

    def _store(self, type: str, ts: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Allocate a seq and append; None when the outbox refuses (full or unwritable). Caller holds ``_lock``."""
        if len(self._outbox) >= self._outbox.max_events:
            return None  # known full: do not consume a seq number for an event that cannot be stored
        try:
            event: dict[str, Any] = {
                "event_id": uuid7(),
                "seq": self._outbox.next_seq(),
                "ts": ts,
                "device_id": self._device_id,
                "type": type,
                **body,
            }
            self._outbox.append(event)
        except OutboxError as exc:  # OutboxFull included
            log.debug("outbox refused %s: %s", type, exc)
            return None
        return event


def _type_name(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"
