"""Who may open this door, and when: per-person validity, groups and weekly schedules, plus a lockdown flag.

Storage
    Two tables in the gallery's SQLite file, created with ``CREATE TABLE IF NOT EXISTS``:

    ``person_policy``  one row per person, deleted with the person (``ON DELETE CASCADE`` on ``persons``)::

        person_id    TEXT PRIMARY KEY  -- persons.id
        valid_from   TEXT NULL         -- ISO-8601 in UTC, e.g. "2025-01-31T07:00:00+00:00"; NULL = no start
        valid_until  TEXT NULL         -- ISO-8601 in UTC; NULL = never expires
        groups       TEXT NOT NULL     -- JSON list of strings, e.g. ["staff", "lab"]
        schedule     TEXT NULL         -- JSON weekly schedule (below); NULL = at any time
        updated_at   REAL NOT NULL     -- unix seconds of the last change (for sync)

    Times are stored as ISO-8601 text in UTC rather than unix numbers so exported rows (fleet sync, the
    sqlite3 shell) are readable by people and carry their own unit. Changing a row bumps the gallery
    ``version`` in ``meta``, because the policy is part of "what this door has".

    ``device_local``  device-local key/value rows that fleet sync must NOT copy; the ``lockdown`` row
    (``"1"``/``"0"``) lives here, survives restarts, and deliberately does not bump the gallery version.

    A person with no ``person_policy`` row has the default policy: always valid, no groups, no schedule.

Weekly schedule (user-facing contract)
    A JSON object keyed by weekday, ``"mon" "tue" "wed" "thu" "fri" "sat" "sun"``, each a list of
    ``[start, end]`` ranges of ``"HH:MM"`` 24-hour local times::

        {"mon": [["08:00", "12:00"], ["13:00", "18:00"]], "fri": [["22:00", "06:00"]], "sat": []}

    * Local time is the device's: ``access.timezone`` (an IANA key such as ``"Europe/Berlin"``) or, when
      unset, the operating system's local zone. Daylight-saving changes follow the zone's rules.
    * A range includes its start and excludes its end: ``["08:00", "18:00"]`` admits 08:00:00 and
      17:59:59.999, not 18:00:00.
    * ``end`` earlier than ``start`` crosses midnight, and the range belongs to the day it STARTS on:
      ``"fri": [["22:00", "06:00"]]`` is Friday 22:00 to Saturday 06:00. ``"24:00"`` is accepted as an end
      (``["00:00", "24:00"]`` is the whole day); ``end == start`` is rejected as ambiguous (nothing, or 24 h?).
    * Days that are missing, or have an empty list, admit nobody. A missing schedule (``None``) means at
      any time; an empty object ``{}`` is rejected, because "never" is better said with ``valid_until``.

Decision order
    ``unknown_person`` → ``lockdown`` → ``clock_untrusted`` → ``not_yet_valid``/``expired`` → ``group`` →
    ``schedule``. All must
    pass, so the order only decides which reason is reported when several apply; it runs from the most
    global and most urgent fact to the most transient one. Lockdown first, so that during an incident
    every refusal says "lockdown" rather than a per-person reason that would send people to the wrong fix.
    Validity next: an expired credential needs an administrator, and it must not hide behind "outside
    hours". Group membership is static per door, so it comes before the schedule, which is the reason most
    likely to clear on its own (come back at 08:00). Lockdown only ever removes rights: members of
    ``lockdown_groups`` still need valid dates, the door's groups and their schedule.

    ``clock_untrusted``: the person has a validity date or a schedule and the caller's clock check says the
    clock cannot be believed (facegate/access/clock.py); a person with neither is judged without asking the clock.

    ``unknown_person`` (the id is not in ``persons``) is an addition to the five policy reasons: the
    recogniser's in-memory index can still match a person for a moment after ``Gallery.remove``; without
    this check the default policy would let them in.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from facegate.config import AccessConfig
from facegate.errors import GalleryError
from facegate.gallery.schema import POLICY_SCHEMA as _SCHEMA
from facegate.gallery.store import Gallery

log = logging.getLogger(__name__)

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = datetime.weekday()

Reason = Literal["unknown_person", "lockdown", "clock_untrusted", "expired", "not_yet_valid", "group", "schedule"]

Schedule = dict[str, list[list[str]]]


_TIME = re.compile(r"(\d{2}):(\d{2})")
_DAY_SECONDS = 86_400
_US = 1_000_000


class PolicyError(GalleryError, ValueError):
    """A policy value is invalid; the message names the field. Both a GalleryError and a ValueError, so
    callers that validate user input (CLI, MQTT commands, sync import) can catch either."""


@dataclass(frozen=True)
class AccessDecision:
    allowed: bool
    reason: Reason | None = None


@dataclass(frozen=True)
class PersonPolicy:
    person_id: str
    valid_from: datetime | None  # aware, UTC
    valid_until: datetime | None  # aware, UTC
    groups: tuple[str, ...]
    schedule: Schedule | None  # canonical form (see parse_schedule)


# --- validation -------------------------------------------------------------------------------------------


def _parse_hhmm(value: object, field: str, *, is_end: bool) -> int:
    """Seconds after local midnight; strict "HH:MM" so "8:00" or "08:00:00" is reported, not guessed at."""
    if not isinstance(value, str) or not (m := _TIME.fullmatch(value)):
        raise PolicyError(f"{field}: {value!r} is not a time \"HH:MM\"")
    hours, minutes = int(m[1]), int(m[2])
    if is_end and (hours, minutes) == (24, 0):
        return _DAY_SECONDS
    if hours > 23 or minutes > 59:
        hint = " (\"24:00\" is allowed only as an end)" if (hours, minutes) == (24, 0) else ""
        raise PolicyError(f"{field}: {value!r} is not a time between 00:00 and 23:59{hint}")
    return hours * 3600 + minutes * 60


def parse_schedule(schedule: object, field: str = "schedule") -> Schedule | None:
    """Validate a weekly schedule and return its canonical form (weekday order, lists of [start, end]).

    Public so that every path that writes schedules (CLI, MQTT, fleet-sync import) rejects the same inputs
    with the same messages. ``None`` stays ``None`` (no restriction).
    """
    if schedule is None:
        return None
    if not isinstance(schedule, Mapping):
        raise PolicyError(f"{field}: must be an object keyed by weekday ({', '.join(WEEKDAYS)}) or null")
    if not schedule:
        raise PolicyError(f"{field}: empty schedule admits nobody; use null for 'at any time' or set valid_until")
    unknown = [k for k in schedule if k not in WEEKDAYS]
    if unknown:
        raise PolicyError(f"{field}: unknown weekday key(s) {unknown!r}; use {', '.join(WEEKDAYS)}")
    out: Schedule = {}
    for day in WEEKDAYS:
        if day not in schedule:
            continue
        ranges = schedule[day]
        if isinstance(ranges, str | bytes) or not isinstance(ranges, Sequence):
            raise PolicyError(f"{field}.{day}: must be a list of [start, end] ranges")
        canon: list[list[str]] = []
        for i, item in enumerate(ranges):
            where = f"{field}.{day}[{i}]"
            if isinstance(item, str | bytes) or not isinstance(item, Sequence) or len(item) != 2:
                raise PolicyError(f"{where}: must be a [start, end] pair of \"HH:MM\" times")
            start, end = item
            s = _parse_hhmm(start, f"{where} start", is_end=False)
            e = _parse_hhmm(end, f"{where} end", is_end=True)
            if s == e:
                raise PolicyError(f"{where}: start and end are both {start!r}; a range must not be empty")
            canon.append([str(start), str(end)])
        out[day] = canon
    return out


_Compiled = tuple[tuple[tuple[int, int], ...], ...]  # per weekday: (start_us, end_us); end < start = crosses


def _compile(schedule: Schedule) -> _Compiled:
    days: list[tuple[tuple[int, int], ...]] = []
    for day in WEEKDAYS:
        ranges = schedule.get(day, [])
        days.append(tuple(
            (_parse_hhmm(s, day, is_end=False) * _US, _parse_hhmm(e, day, is_end=True) * _US) for s, e in ranges
        ))
    return tuple(days)


def _in_schedule(compiled: _Compiled, local: datetime) -> bool:
    day = local.weekday()
    t = ((local.hour * 60 + local.minute) * 60 + local.second) * _US + local.microsecond
    for start, end in compiled[day]:
        if (start <= t < end) if start < end else t >= start:
            return True
    # Ranges that started yesterday and cross midnight cover today's early hours.
    return any(end < start and t < end for start, end in compiled[(day - 1) % 7])


def _parse_instant(value: object, field: str) -> datetime | None:
    """An aware instant normalised to UTC. Naive values are refused: a validity bound without a zone
    means different instants on differently configured devices."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise PolicyError(f"{field}: {value!r} is not an ISO-8601 date-time") from None
    if not isinstance(value, datetime):
        raise PolicyError(f"{field}: must be a datetime or ISO-8601 string, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise PolicyError(f"{field}: {value.isoformat()!r} has no UTC offset (write e.g. '+01:00' or 'Z')")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise PolicyError(f"{field}: {value.isoformat()!r} is out of range") from None


def parse_groups(groups: object, field: str = "groups") -> tuple[str, ...]:
    if groups is None:
        return ()
    if isinstance(groups, str | bytes) or not isinstance(groups, Sequence | set | frozenset):
        raise PolicyError(f"{field}: must be a list of group names")
    out: list[str] = []
    for g in groups:
        if not isinstance(g, str) or not g.strip():
            raise PolicyError(f"{field}: group names must be non-empty strings, got {g!r}")
        if g not in out:
            out.append(g)
    return tuple(out)


# --- the policy store -------------------------------------------------------------------------------------


class AccessPolicy:
    """Access rules in the gallery DB, evaluated by :meth:`check`.

    It uses its own SQLite connection to the gallery file (WAL allows this next to the Gallery's), so it
    needs nothing private from :class:`Gallery`; foreign keys are enforced on both connections, and the
    cascade on ``Gallery.remove`` is done by the Gallery's. Thread-safe: one lock serialises use of the
    connection (frame loop, MQTT thread). Nothing is cached, so a lockdown set by another process (the
    CLI) takes effect at the next check.
    """

    def __init__(self, gallery: Gallery | str | Path, config: AccessConfig | None = None) -> None:
        self.config = config or AccessConfig()
        self.path = Path(gallery.path if isinstance(gallery, Gallery) else gallery)
        self._tz: tzinfo | None = None
        if self.config.timezone is not None:
            try:
                self._tz = ZoneInfo(self.config.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise PolicyError(f"access.timezone: unknown time zone {self.config.timezone!r}") from None
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        except sqlite3.DatabaseError as exc:
            raise GalleryError(f"cannot open gallery {self.path}: {exc}") from None
        try:
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")  # the Gallery may be writing at the same moment
            if self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='persons'").fetchone() is None:
                raise GalleryError(f"{self.path} is not a gallery (no persons table); open it with Gallery first")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise GalleryError(f"cannot use gallery {self.path} for access policy: {exc}") from None
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> AccessPolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- persons --

    def set_person(
        self,
        person_id: str,
        *,
        valid_from: datetime | str | None = None,
        valid_until: datetime | str | None = None,
        groups: Sequence[str] | None = None,
        schedule: Mapping[str, Sequence[Sequence[str]]] | None = None,
    ) -> PersonPolicy:
        """Replace the person's whole policy (``None`` = unrestricted for that field); bumps the gallery version.

        Replace rather than merge, so the stored row is exactly what the caller states and a sync that
        re-sends a row is idempotent.
        """
        start = _parse_instant(valid_from, "valid_from")
        until = _parse_instant(valid_until, "valid_until")
        if start is not None and until is not None and start >= until:
            raise PolicyError(
                f"valid_from ({start.isoformat()}) must be before valid_until ({until.isoformat()})"
            )
        names = parse_groups(groups)
        canon = parse_schedule(schedule)
        row = (
            person_id,
            None if start is None else start.isoformat(),
            None if until is None else until.isoformat(),
            json.dumps(list(names)),
            None if canon is None else json.dumps(canon, separators=(",", ":")),
            time.time(),
        )
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self._db.execute("SELECT 1 FROM persons WHERE id = ?", (person_id,)).fetchone() is None:
                    raise GalleryError(f"no person '{person_id}' in gallery {self.path}; enrol them first")
                self._db.execute(
                    "INSERT INTO person_policy (person_id, valid_from, valid_until, groups, schedule, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(person_id) DO UPDATE SET "
                    "valid_from = excluded.valid_from, valid_until = excluded.valid_until, "
                    "groups = excluded.groups, schedule = excluded.schedule, updated_at = excluded.updated_at",
                    row,
                )
                self._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'version'")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return PersonPolicy(person_id, start, until, names, canon)

    def clear_person(self, person_id: str) -> bool:
        """Drop the person's policy row (back to the default: always, no groups); True if there was one."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                gone = self._db.execute("DELETE FROM person_policy WHERE person_id = ?", (person_id,)).rowcount
                if gone:
                    self._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'version'")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return bool(gone)

    def get_person(self, person_id: str) -> PersonPolicy | None:
        """The stored policy, or None when the person has no row (the default policy applies)."""
        with self._lock:
            row = self._db.execute(
                "SELECT valid_from, valid_until, groups, schedule FROM person_policy WHERE person_id = ?",
                (person_id,),
            ).fetchone()
        return None if row is None else self._decode(person_id, row)

    def _decode(self, person_id: str, row: tuple[object, ...]) -> PersonPolicy:
        """Re-validate on read: rows may come from a sync import or a hand edit, and a bad one must say
        which person and field it is rather than fail somewhere in the frame loop."""
        prefix = f"person_policy[{person_id}]"
        try:
            groups = json.loads(str(row[2])) if row[2] is not None else []
            schedule = json.loads(str(row[3])) if row[3] is not None else None
        except json.JSONDecodeError as exc:
            raise PolicyError(f"{prefix}: stored JSON is corrupt: {exc}") from None
        return PersonPolicy(
            person_id,
            _parse_instant(row[0], f"{prefix}.valid_from"),
            _parse_instant(row[1], f"{prefix}.valid_until"),
            parse_groups(groups, f"{prefix}.groups"),
            parse_schedule(schedule, f"{prefix}.schedule"),
        )

    # -- lockdown --

    def set_lockdown(self, on: bool) -> None:
        """Persist the device-local lockdown flag (no gallery version bump: it is not synced state)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO device_local (key, value, updated_at) VALUES ('lockdown', ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                ("1" if on else "0", time.time()),
            )

    @property
    def lockdown(self) -> bool:
        with self._lock:
            return self._lockdown_locked()

    def _lockdown_locked(self) -> bool:
        row = self._db.execute("SELECT value FROM device_local WHERE key = 'lockdown'").fetchone()
        return row is not None and row[0] == "1"

    # -- decision --

    def check(self, person_id: str, now: datetime,
              clock_trusted: Callable[[], bool] | None = None) -> AccessDecision:
        """May ``person_id`` enter at ``now`` (timezone-aware)? See the module docstring for the order.

        ``clock_trusted`` is asked only when the person's rights depend on the time (a validity date or a
        schedule); False refuses with ``clock_untrusted``. None: ``now`` is believed.

        Raises ValueError for a naive ``now`` (which instant would it be?) and PolicyError for a corrupt
        stored row; never for a valid row at any aware instant.
        """
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("check(): now must be timezone-aware, e.g. datetime.now(UTC)")
        with self._lock:
            row = self._db.execute(
                "SELECT pp.valid_from, pp.valid_until, pp.groups, pp.schedule, pp.person_id IS NOT NULL "
                "FROM persons p LEFT JOIN person_policy pp ON pp.person_id = p.id WHERE p.id = ?",
                (person_id,),
            ).fetchone()
            lockdown = self._lockdown_locked()
        if row is None:
            return AccessDecision(False, "unknown_person")
        policy = self._decode(person_id, row[:4]) if row[4] else PersonPolicy(person_id, None, None, (), None)
        groups = set(policy.groups)
        if lockdown and not groups.intersection(self.config.lockdown_groups):
            return AccessDecision(False, "lockdown")
        timed = policy.valid_from is not None or policy.valid_until is not None or policy.schedule is not None
        if timed and clock_trusted is not None and not clock_trusted():
            return AccessDecision(False, "clock_untrusted")
        if policy.valid_from is not None and now < policy.valid_from:
            return AccessDecision(False, "not_yet_valid")
        if policy.valid_until is not None and now >= policy.valid_until:
            return AccessDecision(False, "expired")
        if self.config.door_groups and not groups.intersection(self.config.door_groups):
            return AccessDecision(False, "group")
        if policy.schedule is not None and not self._within(policy.schedule, now):
            return AccessDecision(False, "schedule")
        return AccessDecision(True, None)

    def _within(self, schedule: Schedule, now: datetime) -> bool:
        try:
            # astimezone(None) converts with the OS zone rules for that very instant (DST-correct).
            local = now.astimezone(self._tz)
        except (OverflowError, OSError, ValueError):
            # Only for instants near year 1 or 9999, or beyond the OS's time_t: fail closed.
            log.warning("cannot convert %s to local time; treating as outside the schedule", now)
            return False
        return _in_schedule(_compile(schedule), local)
