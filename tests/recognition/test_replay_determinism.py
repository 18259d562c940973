"""Same frames, same decisions: a replay decides from the files' time, never from how fast it is read.

Issue 13 measured the same replay granting 1 print in one run and 3 in another: frames carried the time they
were read, so a loaded machine stretched track timeouts and cooldowns. Here one replay is run twice, once
with every core kept busy by other processes, and every event must match field for field except ``ts`` (the
wall-clock time the event was stored) and ``event_id`` (a UUIDv7: its first 48 bits are that same wall-clock
time and the rest is random by design, so two devices never collide).

The timings are tight on purpose: frames 10 ms apart (100 fps), tracks that time out after 25 ms without a
face and a 0.3 s cooldown. Read at wall-clock pace, any frame that takes a loaded machine longer than 25 ms
would break a track (a new track id, a second decision); with file time nothing moves. The relay pulse is
set long (600 s) so the relock, which runs on real monotonic time as it must, happens only at shutdown and
the event sequence (``seq`` included) is fully determined by the frames.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from facegate.camera.replay import ReplaySource
from facegate.service import Service
from gpiozero.pins.mock import MockFactory
from support.scenes import enrol, make_config, write_frames

PLAN = [("bg", 2), ("astro", 9), ("bg", 2), ("hopper", 9), ("bg", 3), ("astro", 9), ("bg", 40), ("astro", 9),
        ("bg", 2)]
IGNORED = {"ts", "event_id"}



@pytest.fixture
def cpu_load() -> Iterator[None]:
    """Every core busy with another process (at normal priority) for the duration of the run."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def run_once(tmp: Path, frames: Path, run: str, templates: Any, pipeline: Any, liveness: bool) -> list[dict[str, Any]]:
    config = make_config(tmp / run, frames, None,
                         recognition={"track_timeout_seconds": 0.025, "cooldown_seconds": 0.3},
                         door={"unlock_seconds": 600}, liveness={"enabled": liveness})
    enrol(config, templates, pipeline)
    factory = MockFactory()
    try:
        service = Service(config, source=ReplaySource(frames, fps=100), pin_factory=factory)
        seen: list[dict[str, Any]] = []
        service.emitter.add_listener(seen.append)
        assert service.run() == 0
    finally:
        factory.reset()
    return [{k: v for k, v in e.items() if k not in IGNORED} for e in seen]


@pytest.fixture(scope="module")
def frames(tmp_path_factory, photos) -> Path:  # type: ignore[no-untyped-def]
    folder = write_frames(tmp_path_factory.mktemp("determinism") / "frames", photos, PLAN)
    (folder / "0012b.jpg").write_bytes(b"\xff\xd8\xff\xe0 a corrupt frame between two visits")
    return folder


@pytest.mark.parametrize("liveness", [False, True], ids=["recognition", "with_liveness"])
def test_one_replay_twice_idle_and_loaded_gives_identical_events(tmp_path, frames, astro_templates, pipeline,  # type: ignore[no-untyped-def]
                                                                 liveness, request) -> None:
    idle = run_once(tmp_path, frames, "idle", astro_templates, pipeline, liveness)
    request.getfixturevalue("cpu_load")
    loaded = run_once(tmp_path, frames, "loaded", astro_templates, pipeline, liveness)
    assert loaded == idle
    kinds = [e["type"] for e in idle]
    if liveness:  # photos pasted into frames: an enrolled face that is not live
        assert "spoof_detected" in kinds and "access_granted" not in kinds
    else:
        # The astronaut's 2nd visit is within the 0.3 s cooldown (file time), the 3rd after it: two grants.
        assert kinds.count("access_granted") == 2, kinds
        assert "unknown_face" in kinds and "frame_rejected" in kinds
        grants = [e for e in idle if e["type"] == "access_granted"]
        assert int(grants[1]["frame"][:4]) >= 2 + 9 + 2 + 9 + 3 + 9 + 40
    assert all(e["frame_ts"].endswith("Z") for e in idle if "frame_ts" in e)


def test_replay_frames_carry_file_time_not_read_time(tmp_path, photos) -> None:  # type: ignore[no-untyped-def]
    folder = write_frames(tmp_path / "f", photos, [("bg", 4)])
    os.utime(folder / "0000.jpg", (1_700_000_000, 1_700_000_000))
    waited: list[float] = []
    source = ReplaySource(folder, fps=20, loop=True, clock=lambda: 0.0, sleep=waited.append)
    source.open()
    got = [source.read() for _ in range(6)]  # a loop: frames 4 and 5 are the first two files again
    assert [f.mono_ts for f in got if f] == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2, 0.25])
    assert [f.ts for f in got if f] == pytest.approx([1_700_000_000 + k * 0.05 for k in range(6)])
    source.close()
    source.open()  # a reopen (camera supervisor) keeps the timeline going
    frame = source.read()
    assert frame is not None and frame.mono_ts == pytest.approx(0.3) and frame.ts == pytest.approx(1_700_000_000.3)
