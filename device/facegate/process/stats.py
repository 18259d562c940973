"""How the running door is doing: the frame loop's counts and rate, and how long the process has lived.

The status document reports the first (frames, fps), the start-up log the second (how long a start took on
this host, for tools/bench/bench_footprint.py). Plain counters written by the frame loop's thread only.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LoopStats", "process_age_seconds"]

FPS_WINDOW_SECONDS = 5.0


def process_age_seconds() -> float:
    """Seconds since this process started (Linux /proc; 0.0 where that cannot be read)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


@dataclass
class LoopStats:
    """Frames and faces seen since the start; ``fps`` over the last few seconds, not since the start (a camera
    that stalled an hour ago must not drag today's rate down)."""

    started: float = field(default_factory=time.time)
    frames: int = 0
    faces: int = 0
    fps: float = 0.0
    _window_start: float = field(default_factory=time.monotonic)
    _window_frames: int = 0

    def tick(self, faces: int) -> None:
        self.frames += 1
        self.faces += faces
        self._window_frames += 1
        now = time.monotonic()
        if now - self._window_start >= FPS_WINDOW_SECONDS:
            self.fps = self._window_frames / (now - self._window_start)
            self._window_start, self._window_frames = now, 0
