"""The frame-source interface and the frame record every stage passes along."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from facegate.errors import FacegateError


class CameraError(FacegateError):
    """The camera cannot be opened or stopped delivering; the supervisor reopens it.

    ``fix`` tells the installer what to do (it goes into the ``camera_error`` event and doctor's output).
    """

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.fix = fix


class CameraLibraryError(CameraError):
    """The camera library itself cannot be loaded: an install problem, not a cable; doctor fails the install."""


class FrameError(FacegateError):
    """One frame is unusable (e.g. a corrupt replay file); it is reported and skipped."""


@dataclass(frozen=True)
class Frame:
    """One captured frame and its two times.

    ``ts`` is when the frame was taken on the wall clock (seconds since the epoch): it goes into the event's
    ``frame_ts`` and is the time the access policy checks schedules and validity dates against.
    ``mono_ts`` is the same instant on a timeline that never jumps: every timed rule of the decision path
    (tracker timeout, cooldown, liveness evidence) measures differences of it, never ``time.time()`` read in
    the loop. Cameras stamp it with ``time.monotonic()`` at capture, so a wall-clock step (NTP, a dead RTC)
    cannot shorten a cooldown; a replay stamps both from the files' pacing (``index / fps``), so the same
    files give the same decisions however loaded the machine is. ``None`` (a hand-made frame) means ``ts``.
    """

    image: np.ndarray  # RGB uint8
    ts: float  # wall-clock capture time, seconds since the epoch
    index: int
    name: str | None = None  # file name for replayed frames, so a decision can be traced to its frame
    mono_ts: float | None = None  # capture time on the decision timeline (see above)

    @property
    def decision_ts(self) -> float:
        """The time the decision path uses for this frame: ``mono_ts``, else ``ts``."""
        return self.ts if self.mono_ts is None else self.mono_ts


class FrameSource(Protocol):
    def open(self) -> None: ...

    def read(self) -> Frame | None:
        """The next frame; None when a finite source (a replay or video file) has ended."""
        ...

    def close(self) -> None: ...
