"""What the doors say, checked where it enters: events, status and availability become rows, problems and alerts.

A door's messages are untrusted input (a broken door, a compromised one, anyone with publish rights on the
broker): every payload is bounded in size, must be a JSON object of the documented shape, and must name the
door whose topic it came on. Anything else is refused with a reason, counted on that door and reported as a
``bad_message`` alert (at most one open alert per door and reason, so a flood is one line, not a million).
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from facegate.fleet.store import EventRow, FleetStore
from facegate.validate.names import is_door_id

log = logging.getLogger(__name__)

__all__ = ["ALERT_EVENTS", "BadMessage", "DoorRegistry", "parse_event", "parse_status", "problems"]

MAX_MESSAGE_BYTES = 64 * 1024  # a door's largest status is a few KB; events are smaller
EVENT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_TEXT = 512  # person ids and names kept in the indexed columns (the whole event stays in ``body``)
MAX_OPEN_BAD = 10_000  # (door, kind) pairs with an open bad_message alert; beyond, refusals are only logged

#: Events that open an alert, and the alert's kind.
ALERT_EVENTS = {
    "door_forced_open": "forced_open",
    "door_held_open": "held_open",
    "spoof_detected": "spoof_detected",
    "false_accept_reported": "false_accept",
}
DECISIONS = frozenset({"access_granted", "access_denied", "unknown_face", "spoof_detected"})


class BadMessage(ValueError):
    """A door's message was refused; the text says what is wrong."""


def _json_object(payload: bytes, what: str) -> dict[str, Any]:
    if len(payload) > MAX_MESSAGE_BYTES:
        raise BadMessage(f"{what} of {len(payload)} bytes (limit {MAX_MESSAGE_BYTES})")
    try:
        obj = json.loads(payload.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadMessage(f"{what} is not UTF-8 JSON: {str(exc)[:120]}") from None
    if not isinstance(obj, dict):
        raise BadMessage(f"{what} is not a JSON object")
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _text(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadMessage(f"{key} must be a string")
    return value[:MAX_TEXT]


def parse_ts(value: object) -> float:
    """The envelope's ``ts`` (ISO-8601 UTC with ``Z``) as unix seconds."""
    if not isinstance(value, str) or len(value) > 40:
        raise BadMessage("ts must be an ISO-8601 time string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadMessage(f"ts {value[:40]!r} is not an ISO-8601 time") from None
    if parsed.tzinfo is None:
        raise BadMessage(f"ts {value!r} has no time zone")
    ts = parsed.timestamp()
    if not math.isfinite(ts):
        raise BadMessage("ts out of range")
    return ts


def parse_event(door_id: str, payload: bytes) -> EventRow:
    """One message from ``<prefix>/<door_id>/events`` as a journal row, or :class:`BadMessage`."""
    obj = _json_object(payload, "event")
    event_id = obj.get("event_id")
    if not isinstance(event_id, str) or not EVENT_ID.fullmatch(event_id):
        raise BadMessage("event_id must be a lower-case UUID")
    if obj.get("device_id") != door_id:
        raise BadMessage(f"device_id {str(obj.get('device_id'))[:64]!r} does not match the topic's door {door_id!r}")
    kind = obj.get("type")
    if not isinstance(kind, str) or not EVENT_TYPE.fullmatch(kind):
        raise BadMessage("type must be a lower-case event name")
    seq = obj.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**62:
        raise BadMessage("seq must be a non-negative integer")
    ts = parse_ts(obj.get("ts"))
    person = _text(obj, "person_id")
    name = _text(obj, "name")
    return EventRow(event_id, door_id, seq, ts, kind, person, name, json.dumps(obj, separators=(",", ":")))


def parse_status(door_id: str, payload: bytes) -> dict[str, Any]:
    obj = _json_object(payload, "status")
    if obj.get("device_id") != door_id:
        raise BadMessage(f"device_id {str(obj.get('device_id'))[:64]!r} does not match the topic's door {door_id!r}")
    gallery = obj.get("gallery")
    if gallery is not None and not isinstance(gallery, dict):
        raise BadMessage("gallery must be an object")
    if isinstance(gallery, dict):
        version = gallery.get("version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 0):
            raise BadMessage("gallery.version must be a non-negative integer")
    return obj


def problems(status: dict[str, Any] | None) -> list[str]:
    """What needs a person's attention at a door, in words, from its last status."""
    if not status:
        return []
    out = []

    def part(key: str) -> dict[str, Any]:
        value = status.get(key)
        return value if isinstance(value, dict) else {}

    if part("camera").get("ok") is False:
        out.append(f"camera: {part('camera').get('error') or 'failing'}")
    if part("recognition").get("ok") is False:
        out.append(f"recognition: {part('recognition').get('error') or 'failing'}")
    for channel, state in part("panel").items():
        if isinstance(state, dict) and state.get("online") is False:
            out.append(f"panel {channel}: offline")
        if isinstance(state, dict) and state.get("tamper"):
            out.append(f"panel {channel}: tamper")
    clock = status.get("clock")
    if (isinstance(clock, dict) and clock.get("ok") is False) or status.get("clock_untrusted") is True:
        out.append("clock: not synchronised")
    door = part("door")
    if door.get("forced_open"):
        out.append("door forced open")
    if door.get("held_open"):
        out.append("door held open")
    backlog = status.get("outbox_pending")
    if isinstance(backlog, int) and backlog > 0:
        out.append(f"{backlog} events not yet delivered")
    if status.get("lockdown") is True:
        out.append("lockdown")
    return out


@dataclass
class SyncReport:
    """A door's word on a gallery bundle (from its ``gallery_updated`` / ``gallery_rejected`` events)."""

    door_id: str
    applied: bool
    version: int | None
    bundle: str | None
    reason: str | None
    ts: float


class DoorRegistry:
    """Keeps ``doors`` and ``alerts`` up to date from what the ingest delivers; thread-safe through the store."""

    def __init__(self, store: FleetStore, stale_seconds: float, allow: list[str] | None = None) -> None:
        self.store = store
        self.stale_seconds = stale_seconds
        self.allow = set(allow or [])
        self.on_sync: list[Callable[[SyncReport], None]] = []
        self.on_new_door: list[Callable[[str], None]] = []
        self._lock = threading.Lock()
        self._open_bad: set[tuple[str, str]] = set()

    def admits(self, door_id: str) -> bool:
        return is_door_id(door_id) and (not self.allow or door_id in self.allow)

    def refused(self, door_id: str, what: str, reason: str) -> None:
        """A message that failed its checks: logged, counted on the door, one open alert per door and kind."""
        log.warning("door %s: %s refused: %s", door_id[:64], what, reason)
        known = self.admits(door_id) and self.store.door(door_id) is not None
        if known:
            self.store.count_bad_message(door_id)
        key = (door_id[:64], what)
        with self._lock:
            if key in self._open_bad or len(self._open_bad) >= MAX_OPEN_BAD:  # a flood of invented ids
                return
            self._open_bad.add(key)
        self.store.add_alert(door_id[:64] if known else None, "bad_message",
                             f"{what} from {door_id[:64]!r} refused: {reason}")

    def _seen(self, door_id: str, **fields: Any) -> None:
        if self.store.touch_door(door_id, last_seen=time.time(), **fields):
            self._discovered(door_id)

    def _discovered(self, door_id: str) -> None:
        log.info("door %s discovered", door_id)
        for fn in self.on_new_door:
            fn(door_id)

    def status(self, door_id: str, status: dict[str, Any]) -> None:
        access = status.get("last_access")
        fields: dict[str, Any] = {"status": json.dumps(status, separators=(",", ":"))}
        if isinstance(access, dict):
            fields["last_decision"] = json.dumps({"type": "access_granted", **access}, separators=(",", ":"))
        self._seen(door_id, **fields)
        gallery = status.get("gallery")
        if isinstance(gallery, dict) and isinstance(gallery.get("version"), int):
            sync = self.store.sync_state(door_id) or {}
            # A restarted door reports what it holds: when that is what we published, it is confirmed.
            held = gallery["version"]
            if sync.get("published_version") == held and sync.get("applied_version") != held:
                self.store.update_sync(door_id, applied_version=gallery["version"],
                                       applied_bundle=sync.get("published_bundle"), applied_at=time.time())
                self._report(SyncReport(door_id, True, gallery["version"], sync.get("published_bundle"), None,
                                        time.time()))

    def availability(self, door_id: str, payload: bytes) -> None:
        text = payload.decode("utf-8", "replace").strip()
        if text not in ("online", "offline"):
            raise BadMessage(f"availability must be online or offline, not {text[:20]!r}")
        before = self.store.door(door_id)
        self._seen(door_id, online=int(text == "online"), availability_at=time.time())
        if text == "offline" and before is not None and before["online"]:
            self.store.add_alert(door_id, "door_offline", f"door {door_id} went offline")

    def events(self, rows: list[EventRow]) -> None:
        """Newly stored events (never a duplicate): alerts, the last decision, gallery confirmations.

        A door's ``last_seen`` and last decision are written once per door and batch, not per event: each write
        is a committed transaction, and one per event capped the whole ingest at the disk's commit rate."""
        latest: dict[str, dict[str, Any]] = {}
        for row in rows:
            fields = latest.setdefault(row.door_id, {})
            if row.type in DECISIONS:
                fields["last_decision"] = row.body
        now = time.time()
        for door_id in self.store.touch_doors({d: {"last_seen": now, **f} for d, f in latest.items()}):
            self._discovered(door_id)
        for row in rows:
            kind = ALERT_EVENTS.get(row.type)
            if kind is not None:
                who = f" ({row.name or row.person_id})" if row.name or row.person_id else ""
                self.store.add_alert(row.door_id, kind, f"{row.type}{who}", row.event_id, row.ts)
            if row.type in ("gallery_updated", "gallery_rejected"):
                body = json.loads(row.body)
                version = body.get("version") if isinstance(body.get("version"), int) else None
                bundle = body.get("bundle") if isinstance(body.get("bundle"), str) else None
                reason = body.get("reason") if isinstance(body.get("reason"), str) else None
                report = SyncReport(row.door_id, row.type == "gallery_updated", version, bundle, reason, row.ts)
                self._record_sync(report)

    def _record_sync(self, report: SyncReport) -> None:
        if report.applied:
            self.store.update_sync(report.door_id, applied_version=report.version, applied_bundle=report.bundle,
                                   applied_at=time.time(), rejected_reason=None, needs_full=0)
        else:
            self.store.update_sync(report.door_id, rejected_reason=report.reason, rejected_at=time.time())
        self._report(report)

    def _report(self, report: SyncReport) -> None:
        for fn in self.on_sync:
            try:
                fn(report)
            except Exception:  # a listener's bug must not stop the journal
                log.exception("sync listener failed")

    def check_stale(self, now: float | None = None) -> list[str]:
        """Doors marked online but silent for ``stale_seconds``: shown offline, one alert each."""
        now = now or time.time()
        gone = []
        for door in self.store.doors():
            if door["online"] and door["last_seen"] is not None and now - door["last_seen"] > self.stale_seconds:
                self.store.touch_door(door["door_id"], online=0)
                self.store.add_alert(door["door_id"], "door_offline",
                                     f"door {door['door_id']} silent for {now - door['last_seen']:.0f} s")
                gone.append(door["door_id"])
        return gone

    def view(self) -> list[dict[str, Any]]:
        """Every door for the console: state, versions, problems, the gallery it applied and when."""
        sync = self.store.sync_states()
        out = []
        now = time.time()
        for door in self.store.doors():
            status = json.loads(door["status"]) if door["status"] else None
            state = sync.get(door["door_id"], {})
            models = status.get("models") if isinstance(status, dict) else None
            out.append({
                "door_id": door["door_id"], "group": door["door_group"], "online": bool(door["online"]),
                "last_seen": door["last_seen"], "seconds_since_seen": None if door["last_seen"] is None
                else round(now - door["last_seen"], 1),
                "software": status.get("version") if status else None,
                "models": models if isinstance(models, dict) else None,
                "gallery": status.get("gallery") if status else None,
                "outbox_pending": status.get("outbox_pending") if status else None,
                "problems": problems(status), "bad_messages": door["bad_messages"],
                "last_decision": json.loads(door["last_decision"]) if door["last_decision"] else None,
                "sync": {k: state.get(k) for k in ("published_version", "published_at", "applied_version",
                                                   "applied_at", "rejected_reason", "rejected_at")},
            })
        return out
