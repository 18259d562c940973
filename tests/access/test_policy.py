"""Access policy: every refusal reason, schedule boundaries and midnight crossing, time zones, lockdown
persistence, cascade on person removal, input validation, and a property test that check() never raises."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from facegate.access.policy import WEEKDAYS, AccessDecision, AccessPolicy, PolicyError, parse_schedule
from facegate.config import AccessConfig
from facegate.errors import GalleryError
from facegate.gallery.store import Gallery, NewTemplate
from hypothesis import given, settings
from hypothesis import strategies as st

SHA = "b" * 64
UTC_CFG = AccessConfig(timezone="UTC")
# 2025-06-02 is a Monday.
MON = datetime(2025, 6, 2, tzinfo=UTC)


def at(day: datetime, hhmm: str, seconds: float = 0.0) -> datetime:
    h, m = (int(x) for x in hhmm.split(":"))
    return day + timedelta(hours=h, minutes=m, seconds=seconds)


def enrol(gallery: Gallery, *person_ids: str) -> None:
    for pid in person_ids:
        gallery.enroll(pid, [NewTemplate(np.full(8, 8 ** -0.5, dtype=np.float32), {})], SHA)  # unit length


@pytest.fixture
def gallery(tmp_path: Path) -> Iterator[Gallery]:
    with Gallery(tmp_path / "g.db") as g:
        enrol(g, "ann", "bob", "sec")
        yield g


@pytest.fixture
def policy(gallery: Gallery) -> Iterator[AccessPolicy]:
    with AccessPolicy(gallery, UTC_CFG) as p:
        yield p


@pytest.fixture(scope="module")
def shared_policy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AccessPolicy]:
    """For tests that only exercise rejected input (nothing is written): one gallery file for all."""
    with Gallery(tmp_path_factory.mktemp("shared") / "g.db") as g:
        enrol(g, "ann")
        with AccessPolicy(g, UTC_CFG) as p:
            yield p


def test_default_policy_admits_an_enrolled_person(policy: AccessPolicy) -> None:
    assert policy.get_person("ann") is None
    assert policy.check("ann", MON) == AccessDecision(True, None)


def test_unknown_person_is_refused(policy: AccessPolicy) -> None:
    assert policy.check("nobody", MON) == AccessDecision(False, "unknown_person")


def test_validity_window_is_half_open(policy: AccessPolicy) -> None:
    policy.set_person("ann", valid_from="2025-06-01T00:00:00+02:00", valid_until=MON + timedelta(days=1))
    start = datetime(2025, 5, 31, 22, tzinfo=UTC)
    assert policy.check("ann", start - timedelta(microseconds=1)) == AccessDecision(False, "not_yet_valid")
    assert policy.check("ann", start).allowed
    assert policy.check("ann", MON + timedelta(days=1, microseconds=-1)).allowed
    assert policy.check("ann", MON + timedelta(days=1)) == AccessDecision(False, "expired")
    stored = policy.get_person("ann")
    assert stored is not None and stored.valid_from == start and stored.valid_from.tzinfo == UTC


def test_group_must_match_a_door_group(gallery: Gallery) -> None:
    with AccessPolicy(gallery, AccessConfig(timezone="UTC", door_groups=["lab"])) as p:
        p.set_person("ann", groups=["staff", "lab"])
        p.set_person("bob", groups=["staff"])
        assert p.check("ann", MON).allowed
        assert p.check("bob", MON) == AccessDecision(False, "group")
        assert p.check("sec", MON) == AccessDecision(False, "group")  # no row: no groups


def test_schedule_start_inclusive_end_exclusive(policy: AccessPolicy) -> None:
    policy.set_person("ann", schedule={"mon": [["08:00", "12:00"], ["13:00", "18:00"]]})
    assert policy.check("ann", at(MON, "07:59", 59.999999)) == AccessDecision(False, "schedule")
    assert policy.check("ann", at(MON, "08:00")).allowed
    assert policy.check("ann", at(MON, "11:59", 59.999999)).allowed
    assert not policy.check("ann", at(MON, "12:00")).allowed
    assert policy.check("ann", at(MON, "13:00")).allowed
    assert not policy.check("ann", at(MON, "18:00")).allowed
    assert not policy.check("ann", at(MON + timedelta(days=1), "09:00")).allowed  # no "tue" key


def test_schedule_crossing_midnight_belongs_to_its_start_day(policy: AccessPolicy) -> None:
    fri, sat, thu = MON + timedelta(days=4), MON + timedelta(days=5), MON + timedelta(days=3)
    policy.set_person("ann", schedule={"fri": [["22:00", "06:00"]]})
    assert not policy.check("ann", at(fri, "21:59")).allowed
    assert policy.check("ann", at(fri, "22:00")).allowed
    assert policy.check("ann", at(fri, "23:59", 59)).allowed
    assert policy.check("ann", at(sat, "00:00")).allowed
    assert policy.check("ann", at(sat, "05:59", 59.9)).allowed
    assert not policy.check("ann", at(sat, "06:00")).allowed
    assert not policy.check("ann", at(thu, "23:00")).allowed
    assert not policy.check("ann", at(fri, "03:00")).allowed  # Thursday has no night range
    # Sunday night into Monday morning wraps the week.
    policy.set_person("bob", schedule={"sun": [["20:00", "00:00"]], "mon": [["00:00", "24:00"]]})
    assert policy.check("bob", at(MON - timedelta(days=1), "20:00")).allowed
    assert policy.check("bob", at(MON, "23:59", 59)).allowed
    assert not policy.check("bob", at(MON - timedelta(days=1), "19:59")).allowed


def test_schedule_is_read_in_the_configured_zone(gallery: Gallery) -> None:
    with AccessPolicy(gallery, AccessConfig(timezone="America/New_York")) as p:
        p.set_person("ann", schedule={"mon": [["09:00", "17:00"]]})
        # Winter (EST, UTC-5) and summer (EDT, UTC-4): 09:00 local is a different UTC hour.
        assert not p.check("ann", datetime(2025, 1, 6, 13, 59, tzinfo=UTC)).allowed
        assert p.check("ann", datetime(2025, 1, 6, 14, 0, tzinfo=UTC)).allowed
        assert p.check("ann", datetime(2025, 6, 2, 13, 0, tzinfo=UTC)).allowed
        assert not p.check("ann", datetime(2025, 6, 2, 21, 0, tzinfo=UTC)).allowed
        # The same instant expressed in another offset gives the same answer.
        tokyo = timezone(timedelta(hours=9))
        assert p.check("ann", datetime(2025, 6, 2, 22, 0, tzinfo=tokyo)).allowed  # = 09:00 EDT Monday
        # Monday 01:00 UTC is still Sunday evening in New York.
        assert not p.check("ann", datetime(2025, 6, 2, 1, 0, tzinfo=UTC)).allowed


def test_schedule_uses_the_os_zone_when_none_is_configured(gallery: Gallery) -> None:
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Tokyo"
    time.tzset()
    try:
        with AccessPolicy(gallery, AccessConfig()) as p:
            p.set_person("ann", schedule={"mon": [["09:00", "10:00"]]})
            assert p.check("ann", datetime(2025, 6, 2, 0, 30, tzinfo=UTC)).allowed  # 09:30 JST
            assert not p.check("ann", datetime(2025, 6, 2, 9, 30, tzinfo=UTC)).allowed
    finally:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
        time.tzset()


def test_naive_now_is_refused(policy: AccessPolicy) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        policy.check("ann", datetime(2025, 6, 2, 9))


def test_lockdown_admits_only_lockdown_groups_and_persists(gallery: Gallery, tmp_path: Path) -> None:
    config = AccessConfig(timezone="UTC", lockdown_groups=["security"])
    with AccessPolicy(gallery, config) as p:
        assert p.lockdown is False
        p.set_person("sec", groups=["security"])
        p.set_person("bob", groups=["security"], valid_until=MON)
        p.set_lockdown(True)
        assert p.check("ann", MON) == AccessDecision(False, "lockdown")
        assert p.check("sec", MON).allowed
        assert p.check("bob", MON) == AccessDecision(False, "expired")  # lockdown never adds rights
    with AccessPolicy(tmp_path / "g.db", config) as reopened:
        assert reopened.lockdown is True
        assert reopened.check("ann", MON).reason == "lockdown"
        reopened.set_lockdown(False)
    with AccessPolicy(tmp_path / "g.db", config) as again:
        assert again.lockdown is False and again.check("ann", MON).allowed


def test_lockdown_set_by_another_connection_is_seen_at_once(gallery: Gallery, tmp_path: Path) -> None:
    with AccessPolicy(gallery, UTC_CFG) as service, AccessPolicy(tmp_path / "g.db", UTC_CFG) as cli:
        cli.set_lockdown(True)
        assert service.check("ann", MON).reason == "lockdown"


def test_reason_order_lockdown_then_validity_then_group_then_schedule(gallery: Gallery) -> None:
    cfg = AccessConfig(timezone="UTC", door_groups=["lab"], lockdown_groups=["security"])
    with AccessPolicy(gallery, cfg) as p:
        p.set_person("ann", valid_until=MON, groups=["staff"], schedule={"tue": [["08:00", "09:00"]]})
        p.set_lockdown(True)
        assert p.check("ann", MON).reason == "lockdown"
        p.set_lockdown(False)
        assert p.check("ann", MON).reason == "expired"
        p.set_person("ann", groups=["staff"], schedule={"tue": [["08:00", "09:00"]]})
        assert p.check("ann", MON).reason == "group"
        p.set_person("ann", groups=["lab"], schedule={"tue": [["08:00", "09:00"]]})
        assert p.check("ann", MON).reason == "schedule"


def test_removing_a_person_deletes_their_policy(gallery: Gallery, policy: AccessPolicy) -> None:
    policy.set_person("ann", groups=["staff"])
    gallery.remove("ann")
    assert policy.get_person("ann") is None
    assert policy.check("ann", MON).reason == "unknown_person"
    enrol(gallery, "ann")  # re-enrolled: starts from the default policy, not the old row
    assert policy.get_person("ann") is None


def test_set_person_replaces_the_row_and_bumps_the_version(gallery: Gallery, policy: AccessPolicy) -> None:
    v0 = gallery.version
    policy.set_person("ann", groups=["a", "b", "a"], schedule={"tue": [["08:00", "09:00"]], "mon": []})
    assert gallery.version == v0 + 1
    stored = policy.get_person("ann")
    assert stored is not None and stored.groups == ("a", "b")
    assert stored.schedule == {"mon": [], "tue": [["08:00", "09:00"]]}
    assert list(stored.schedule) == ["mon", "tue"]  # canonical weekday order
    policy.set_person("ann", groups=["c"])
    again = policy.get_person("ann")
    assert again is not None and again.groups == ("c",) and again.schedule is None
    policy.set_lockdown(True)
    assert gallery.version == v0 + 2  # lockdown is device-local, not synced
    assert policy.clear_person("ann") and policy.get_person("ann") is None
    assert gallery.version == v0 + 3
    assert not policy.clear_person("ann")


def test_set_person_for_unknown_person_fails_cleanly(policy: AccessPolicy) -> None:
    with pytest.raises(GalleryError, match="no person 'ghost'"):
        policy.set_person("ghost", groups=["x"])


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({"monday": [["08:00", "18:00"]]}, "unknown weekday key"),
        ({"mon": [["8:00", "18:00"]]}, r"schedule\.mon\[0\] start: '8:00' is not a time"),
        ({"mon": [["08:00", "25:00"]]}, r"schedule\.mon\[0\] end: '25:00' is not a time between"),
        ({"mon": [["08:60", "09:00"]]}, r"schedule\.mon\[0\] start"),
        ({"mon": [["24:00", "09:00"]]}, "only as an end"),
        ({"mon": [["08:00:00", "09:00"]]}, "is not a time"),
        ({"tue": [["08:00", "09:00"], ["10:00", "10:00"]]}, r"schedule\.tue\[1\]: start and end are both"),
        ({"mon": [["08:00"]]}, r"schedule\.mon\[0\]: must be a \[start, end\] pair"),
        ({"mon": "08:00-18:00"}, r"schedule\.mon: must be a list"),
        ({"mon": [[8, 18]]}, "is not a time"),
        ({}, "empty schedule"),
        ([["08:00", "18:00"]], "must be an object keyed by weekday"),
    ],
)
def test_bad_schedules_name_the_field(shared_policy: AccessPolicy, schedule: object, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        shared_policy.set_person("ann", schedule=schedule)
    with pytest.raises(ValueError):  # PolicyError is also a ValueError
        parse_schedule(schedule)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"valid_from": "2025-06-01T00:00:00"}, "valid_from: .* has no UTC offset"),
        ({"valid_until": datetime(2025, 6, 1)}, "valid_until: .* has no UTC offset"),
        ({"valid_until": "next tuesday"}, "valid_until: 'next tuesday' is not an ISO-8601"),
        ({"valid_from": 1717200000}, "valid_from: must be a datetime or ISO-8601 string"),
        ({"valid_from": "2025-06-02T00:00:00Z", "valid_until": "2025-06-02T00:00:00Z"}, "must be before"),
        ({"groups": "staff"}, "groups: must be a list"),
        ({"groups": ["staff", ""]}, "groups: group names must be non-empty"),
    ],
)
def test_bad_fields_name_the_field(shared_policy: AccessPolicy, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        shared_policy.set_person("ann", **kwargs)
    assert shared_policy.get_person("ann") is None  # nothing half-written


def test_policy_needs_a_gallery_file(tmp_path: Path) -> None:
    import sqlite3

    sqlite3.connect(tmp_path / "empty.db").close()
    with pytest.raises(GalleryError, match="not a gallery"):
        AccessPolicy(tmp_path / "empty.db")


def test_corrupt_stored_row_is_reported_with_person_and_field(gallery: Gallery, policy: AccessPolicy) -> None:
    policy.set_person("ann", schedule={"mon": [["08:00", "09:00"]]})
    with gallery.transaction() as db:  # e.g. a bad sync import or a hand edit
        db.execute("UPDATE person_policy SET schedule = ? WHERE person_id = 'ann'", ('{"mon": [["08:00"]]}',))
    with pytest.raises(PolicyError, match=r"person_policy\[ann\]\.schedule\.mon\[0\]"):
        policy.check("ann", MON)


_hhmm = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59))
_range = st.tuples(_hhmm, st.one_of(_hhmm, st.just("24:00"))).filter(lambda r: r[0] != r[1]).map(list)
_schedules = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(WEEKDAYS), st.lists(_range, max_size=4), min_size=1),
)
_ZONES = (None, "UTC", "Europe/Berlin", "America/St_Johns", "Pacific/Kiritimati", "Asia/Kolkata")


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str | None, AccessPolicy]]:
    """One gallery and one policy per zone for all examples: opening per example would dominate."""
    path = tmp_path_factory.mktemp("hyp") / "g.db"
    with Gallery(path) as g:
        enrol(g, "ann")
    opened = {z: AccessPolicy(path, AccessConfig(timezone=z, door_groups=["lab"])) for z in _ZONES}
    yield opened
    for p in opened.values():
        p.close()


@settings(max_examples=150, deadline=None)
@given(
    schedule=_schedules,
    now=st.datetimes(timezones=st.timezones()),
    zone=st.sampled_from(_ZONES),
    lockdown=st.booleans(),
)
def test_check_never_raises_on_valid_schedules(
    policies: dict[str | None, AccessPolicy], schedule: dict[str, list[list[str]]] | None,
    now: datetime, zone: str | None, lockdown: bool,
) -> None:
    p = policies[zone]
    p.set_person("ann", groups=["lab"], schedule=schedule)
    if p.lockdown != lockdown:
        p.set_lockdown(lockdown)
    decision = p.check("ann", now)
    assert isinstance(decision, AccessDecision)
    assert decision.allowed == (decision.reason is None)
    always = schedule is None or (
        set(schedule) == set(WEEKDAYS) and all(r == [["00:00", "24:00"]] for r in schedule.values())
    )
    if lockdown:
        assert decision.reason == "lockdown"  # "ann" is not in lockdown_groups
    elif always:
        assert decision.allowed
