"""``replay:DIR`` — image files in name order, every frame delivered, paced at most at ``fps``.

Delivering every frame (never dropping to keep up) is what makes a replay deterministic: the same folder
gives the same decisions on a fast PC and on a Pi, which is what tests and demos rely on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from facegate.camera.source import CameraError, Frame, FrameError
from facegate.errors import ImageError
from facegate.imageio import read_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".pgm", ".ppm"}


class ReplaySource:
    def __init__(
        self,
        directory: Path,
        fps: float,
        loop: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.directory = Path(directory)
        self.period = 1.0 / fps
        self.loop = loop
        self._clock, self._sleep = clock, sleep
        self._files: list[Path] = []
        self._pos = 0
        self._index = 0
        self._next_due = 0.0

    def open(self) -> None:
        if not self.directory.is_dir():
            raise CameraError(f"replay folder not found: {self.directory}")
        self._files = sorted(p for p in self.directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._files:
            raise CameraError(f"replay folder has no images: {self.directory}")
        self._pos = 0
        self._next_due = self._clock()

    def read(self) -> Frame | None:
        if self._pos >= len(self._files):
            if not self.loop:
                return None
            self._pos = 0
        delay = self._next_due - self._clock()
        if delay > 0:
            self._sleep(delay)
        self._next_due = max(self._next_due + self.period, self._clock())
        path = self._files[self._pos]
        self._pos += 1
        self._index += 1
        try:
            image = read_image(path)
        except ImageError as exc:
            raise FrameError(str(exc)) from None
        return Frame(image=image, ts=time.time(), index=self._index, name=path.name)

    def close(self) -> None:
        self._files = []
