"""The console's parts that the frame loop and the emitter touch: they must never block or grow without bound."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
from facegate.web.hub import SUBSCRIBER_QUEUE, EventHub
from facegate.web.live import LiveSlot
from facegate.web.render import render_jpeg
from facegate.web.sessions import LoginLimiter, SessionStore


def result(box: tuple[float, float, float, float], failures: list[str]) -> SimpleNamespace:
    quality = SimpleNamespace(as_dict=lambda: {"face_px": box[2]})
    return SimpleNamespace(detection=SimpleNamespace(box=box), failures=failures, quality=quality, embedding=None)


def obs(person: str | None, similarity: float) -> SimpleNamespace:
    return SimpleNamespace(person_id=person, similarity=similarity, extra={})


def test_a_stalled_event_subscriber_is_dropped_without_blocking_the_emitter() -> None:
    hub = EventHub()
    stalled, live = hub.subscribe(), hub.subscribe()
    started = time.monotonic()
    for i in range(SUBSCRIBER_QUEUE + 50):
        hub.on_event({"type": "x", "seq": i})
        live.queue.get_nowait()  # this one keeps up
    assert time.monotonic() - started < 1.0
    assert stalled.dropped and not live.dropped and hub.dropped_subscribers == 1
    assert len(hub.recent()) == 50  # the ring is bounded


def test_slot_keeps_only_the_latest_frame_and_wakes_waiters() -> None:
    slot = LiveSlot()
    image = np.zeros((48, 64, 3), np.uint8)
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(getattr(slot.wait_newer(0, 5.0), "seq", -1)))
    waiter.start()
    slot.put(image, time.time(), [result((1, 1, 20, 20), [])], [obs("astro", 0.9)], threshold=0.5)
    waiter.join(2)
    assert got == [1]
    for _ in range(100):
        slot.put(image, time.time(), [result((1, 1, 20, 20), ["too_dark"])], [obs("astro", 0.2)], threshold=0.5)
    latest = slot.latest()
    assert latest is not None and latest.seq == 101
    face = latest.faces[0]
    assert face.person_id is None and face.candidate == "astro" and face.failures == ("too_dark",)
    assert slot.wait_newer(101, 0.05) is None


def test_strangers_are_pixelated_and_the_known_are_not() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    slot = LiveSlot()
    slot.put(image, time.time(), [result((10, 10, 40, 40), []), result((100, 60, 40, 40), [])],
             [obs("astro", 0.9), obs(None, 0.1)], threshold=0.5)
    frame = slot.latest()
    assert frame is not None
    import cv2

    out = cv2.cvtColor(cv2.imdecode(np.frombuffer(render_jpeg(frame, lambda p: "A", True, labels=False),
                                                  np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(float)
    inner_known = out[20:45, 20:45].std()
    inner_stranger = out[70:95, 110:135].std()
    assert inner_known > 40 and inner_stranger < 15, (inner_known, inner_stranger)
    assert (image == slot.latest().image).all()  # type: ignore[union-attr]  # the frame loop's array untouched


def test_sessions_expire_when_idle_and_the_limiter_forgets_after_its_window() -> None:
    store = SessionStore(idle_seconds=0.2)
    s = store.create("ann", "admin", "fp")
    assert store.get(s.token) is s
    time.sleep(0.3)
    assert store.get(s.token) is None
    limiter = LoginLimiter(window_seconds=0.3, max_failures=2)
    limiter.failed("a")
    assert limiter.retry_after("a") == 0
    limiter.failed("a")
    assert limiter.retry_after("a") > 0 and limiter.retry_after("b") == 0
    assert limiter.note_throttled("a") and not limiter.note_throttled("a")
    time.sleep(0.35)
    assert limiter.retry_after("a") == 0


def test_a_password_change_is_seen_even_with_the_same_size_and_mtime(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The service re-reads the account file when it changes. A new hash has the same length, and two writes
    in one timestamp tick keep the mtime, so (mtime, size) alone missed 'user passwd': the old password went
    on working and the user's sessions were not ended. The rename gives the file a new inode: that is seen."""
    import os

    from facegate.web.accounts import UserStore

    cli, service = UserStore(tmp_path), UserStore(tmp_path)
    cli.add("ann", "admin", "first password")
    stamp = os.stat(cli.path).st_mtime_ns
    old = service.get("ann")
    assert old is not None
    cli.passwd("ann", "second password")
    os.utime(cli.path, ns=(stamp, stamp))  # the same tick
    assert service.authenticate("ann", "first password") is None
    assert service.authenticate("ann", "second password") is not None


def test_concurrent_account_changes_from_separate_processes_are_all_kept(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two `facegate user ...` commands at once (each its own process, so its own in-memory lock) both read,
    change and rename the one file: without a lock on the file, one change was lost, e.g. a 'user remove' of a
    leaked account undone by a concurrent 'user add'."""
    import subprocess
    import sys

    code = ("import sys; from facegate.web.accounts import UserStore; "
            "UserStore(sys.argv[1]).add(sys.argv[2], 'viewer', 'password 123')")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), f"u{i}"]) for i in range(6)]
    assert [p.wait(timeout=60) for p in procs] == [0] * 6
    from facegate.web.accounts import UserStore

    assert sorted(u.name for u in UserStore(tmp_path).users()) == [f"u{i}" for i in range(6)]
