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
    image: np.ndarray  # RGB uint8
    ts: float  # wall-clock capture time, seconds since the epoch
    index: int
    name: str | None = None  # file name for replayed frames, so a decision can be traced to its frame


class FrameSource(Protocol):
    def open(self) -> None: ...

    def read(self) -> Frame | None:
        """The next frame; None when a finite source (a replay or video file) has ended."""
        ...

    def close(self) -> None: ...
