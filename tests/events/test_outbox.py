"""The durable outbox, the event envelope and UUIDv7: no event is lost, trimmed or reordered silently."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from facegate.events import EventEmitter, NullCommunicator, Outbox, OutboxFull, uuid7
from facegate.events.emitter import format_ts
from facegate.events.ids import uuid7_time_ms

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    return Outbox(tmp_path / "state" / "outbox.db", max_events=100)


# ---------------------------------------------------------------- uuid7


def test_uuid7_is_rfc9562_v7_and_strictly_increasing() -> None:
    ids = [uuid7() for _ in range(5000)]  # many share a millisecond: the counter must keep them ordered
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    for value in ids[:50]:
        parsed = uuid.UUID(value)
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == value
    assert abs(uuid7_time_ms(ids[-1]) - time.time() * 1000) < 5000


def test_uuid7_unique_across_threads() -> None:
    out: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        mine = [uuid7() for _ in range(2000)]
        with lock:
            out.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(out)) == 8000


# ---------------------------------------------------------------- outbox


def test_append_peek_ack_fifo(outbox: Outbox) -> None:
    for i in range(5):
        outbox.append({"i": i})
    assert len(outbox) == 5
    rows = outbox.peek(limit=3)
    assert [e["i"] for _, e in rows] == [0, 1, 2]
    assert [e["i"] for _, e in outbox.peek(limit=10, after=rows[-1][0])] == [3, 4]
    outbox.ack(rows[1][0])
    assert len(outbox) == 4
    assert [e["i"] for _, e in outbox.peek()] == [0, 2, 3, 4]
    outbox.ack(rows[1][0])  # a duplicate PUBACK is harmless
    outbox.ack(999_999)
    assert len(outbox) == 4
    assert outbox.ack_many([r for r, _ in outbox.peek()]) == 4
    assert len(outbox) == 0 and outbox.peek() == []


def test_wal_mode_and_full_sync(outbox: Outbox) -> None:
    db = sqlite3.connect(outbox.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_persists_across_restart_with_seq(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    first = Outbox(path, max_events=10)
    seqs = [first.next_seq() for _ in range(3)]
    for s in seqs:
        first.append({"seq": s})
    first.ack(first.peek(limit=1)[0][0])
    first.close()  # simulated restart: a new instance on the same file

    second = Outbox(path, max_events=10)
    assert len(second) == 2
    assert [e["seq"] for _, e in second.peek()] == seqs[1:]
    assert second.next_seq() == seqs[-1] + 1
    second.close()


def test_rowids_never_reused_after_emptying(outbox: Outbox) -> None:
    outbox.append({"a": 1})
    outbox.append({"a": 2})
    last = outbox.peek()[-1][0]
    outbox.ack_many(r for r, _ in outbox.peek())
    outbox.append({"a": 3})
    # The publisher's cursor is "everything <= last was sent": the new event must sort after it.
    assert outbox.peek(after=last)[0][1] == {"a": 3}


def test_full_raises_and_never_trims(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_events=3)
    for i in range(3):
        box.append({"i": i})
    with pytest.raises(OutboxFull):
        box.append({"i": 3})
    assert [e["i"] for _, e in box.peek()] == [0, 1, 2]
    box.ack(box.peek(limit=1)[0][0])
    box.append({"i": 3})
    assert [e["i"] for _, e in box.peek()] == [1, 2, 3]


def test_rejects_non_json_and_nan(outbox: Outbox) -> None:
    with pytest.raises(ValueError):
        outbox.append({"x": float("nan")})
    with pytest.raises(TypeError):
        outbox.append({"x": object()})
    assert len(outbox) == 0


def test_concurrent_append_and_ack(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "c.db", max_events=10_000)
    done = threading.Event()
    acked = 0

    def producer(tag: int) -> None:
        for i in range(150):
            box.append({"tag": tag, "i": i})

    def consumer() -> None:
        nonlocal acked
        while not done.is_set() or len(box):
            rows = box.peek(limit=20)
            acked += box.ack_many(r for r, _ in rows)

    producers = [threading.Thread(target=producer, args=(t,)) for t in range(3)]
    reader = threading.Thread(target=consumer)
    reader.start()
    for t in producers:
        t.start()
    for t in producers:
        t.join()
    done.set()
    reader.join(timeout=30)
    assert acked == 450
    assert len(box) == 0


# ---------------------------------------------------------------- emitter


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_emit_builds_envelope_and_notifies(outbox: Outbox) -> None:
    clock = FakeClock(1714564800.1234)
    emitter = EventEmitter("door-1", outbox, clock=clock)
    seen: list[dict[str, Any]] = []
    emitter.add_listener(seen.append)
    e1 = emitter.emit("access_granted", person_id="p1", name="Ada", similarity=np.float32(0.75))
    clock.t += 1
    e2 = emitter.emit("door_opened")
    assert e1 is not None and e2 is not None
    assert set(e1) == {"event_id", "seq", "ts", "device_id", "type", "person_id", "name", "similarity"}
    assert e1["ts"] == "2024-05-01T12:00:00.123Z" and TS_RE.match(e2["ts"])
    assert e1["device_id"] == "door-1" and e1["type"] == "access_granted"
    assert isinstance(e1["similarity"], float) and e1["similarity"] == pytest.approx(0.75)
    assert e2["seq"] == e1["seq"] + 1
    assert uuid.UUID(e1["event_id"]).version == 7
    assert seen == [e1, e2]
    assert [e for _, e in outbox.peek()] == [e1, e2]  # what is stored is exactly what listeners saw
    assert emitter.pending == 2 and emitter.dropped == 0


def test_emit_survives_full_outbox(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    emitter = EventEmitter("door", Outbox(tmp_path / "o.db", max_events=2))
    assert emitter.emit("a") is not None
    assert emitter.emit("b") is not None
    assert emitter.emit("c") is None  # no exception reaches the frame loop
    assert emitter.emit("d") is None
    assert emitter.dropped == 2
    assert emitter.pending == 2
    assert "dropped" in caplog.text
    # Once there is room again, the loss itself is recorded before the next event.
    emitter.outbox.ack_many(r for r, _ in emitter.outbox.peek())
    after = emitter.emit("e")
    assert after is not None
    stored = [e for _, e in emitter.outbox.peek()]
    assert [e["type"] for e in stored] == ["outbox_full", "e"]
    assert stored[0]["dropped"] == 2 and stored[0]["first_ts"] <= stored[0]["last_ts"]
    assert stored[0]["seq"] < after["seq"]
    assert emitter.emit("f") is None and emitter.dropped == 3  # full again


def test_emit_normalises_values(outbox: Outbox) -> None:
    emitter = EventEmitter("door", outbox)
    event = emitter.emit("x", nan=float("nan"), arr=np.array([1, 2]), path=Path("/a/b"), nested={"k": (np.int64(3),)})
    assert event is not None
    assert event["nan"] is None and event["arr"] == [1, 2] and event["path"] == "/a/b"
    assert event["nested"] == {"k": [3]}
    with pytest.raises(ValueError, match="reserved"):
        emitter.emit("x", seq=1)


def test_listener_errors_do_not_stop_events(outbox: Outbox) -> None:
    emitter = EventEmitter("door", outbox)

    def bad(event: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    emitter.add_listener(bad)
    assert emitter.emit("x") is not None
    emitter.remove_listener(bad)
    assert len(outbox) == 1


def test_seq_order_matches_outbox_order_under_threads(tmp_path: Path) -> None:
    emitter = EventEmitter("door", Outbox(tmp_path / "t.db", max_events=10_000))
    threads = [threading.Thread(target=lambda: [emitter.emit("t") for _ in range(50)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seqs = [e["seq"] for _, e in emitter.outbox.peek(limit=1000)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 200


def test_format_ts() -> None:
    assert format_ts(0) == "1970-01-01T00:00:00.000Z"
    assert format_ts(1714564800.9999) == "2024-05-01T12:00:00.999Z"


def test_null_communicator_keeps_events_and_states(outbox: Outbox) -> None:
    emitter = EventEmitter("door", outbox)
    comm = NullCommunicator(emitter)
    comm.start()
    emitter.emit("x")
    comm.publish_state("lock/state", "LOCKED")
    assert comm.states == {"lock/state": "LOCKED"}
    assert comm.connected is False
    assert comm.stop(0.0) == 1


def test_the_backlog_counts_only_events_waiting_longer_than_asked(tmp_path: Path) -> None:
    """'Undelivered events' is a backlog: an event acknowledged within milliseconds never shows in it."""
    now = [100.0]
    box = Outbox(tmp_path / "o.db", max_events=100, clock=lambda: now[0])
    for i in range(3):
        box.append({"i": i})
    assert box.waiting_longer_than(5.0) == 0  # just appended: in flight, not a backlog
    now[0] = 104.0
    box.append({"i": 3})
    box.append({"i": 4})
    now[0] = 105.5
    assert box.waiting_longer_than(5.0) == 3  # the first three have waited 5.5 s
    box.ack_many([1])
    assert box.waiting_longer_than(5.0) == 2
    now[0] = 109.5
    assert box.waiting_longer_than(5.0) == 4
    box.ack_many([2, 3, 4, 5])
    assert box.waiting_longer_than(5.0) == 0
    box.append({"i": 5})
    box.close()
    now[0] = 200.0
    reopened = Outbox(tmp_path / "o.db", max_events=100, clock=lambda: now[0])  # rows left by an earlier run
    assert reopened.waiting_longer_than(5.0) == 0
    now[0] = 205.5
    assert reopened.waiting_longer_than(5.0) == 1
    reopened.close()
