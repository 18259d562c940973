"""``replay:DIR`` — image files in name order, every frame delivered, paced at most at ``fps``.

Delivering every frame (never dropping to keep up) is what makes a replay deterministic: the same folder
gives the same decisions on a fast PC and on a Pi, which is what tests and demos rely on. For that the frames
also carry *file* time, never the time they happened to be read: frame k (0-based, counting every file
delivered, corrupt ones and loops included) is stamped ``mono_ts = k / fps`` and ``ts = epoch + k / fps``,
where ``epoch`` is the modification time of the first file (in name order) when the folder was first opened.
So a grant's ``frame_ts`` is the same in every run of the same files, and cooldowns and track timeouts see
the recorded spacing of the frames however slowly a loaded machine gets through them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from facegate.base.imageio import DEFAULT_MAX_PIXELS, read_image
from facegate.camera.source import CameraError, Frame, FrameError
from facegate.errors import ImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".pgm", ".ppm"}


class ReplaySource:
    def __init__(
        self,
        directory: Path,
        fps: float,
        loop: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        """``max_pixels``: a file whose header declares more pixels is rejected before it is decoded."""
        self.directory = Path(directory)
        self.period = 1.0 / fps
        self.loop = loop
        self.max_pixels = max_pixels
        self._clock, self._sleep = clock, sleep
        self._files: list[Path] = []
        self._pos = 0
        self._index = 0
        self._next_due = 0.0
        self._epoch: float | None = None  # file time of frame 0; fixed at the first open (see the module doc)

    def open(self) -> None:
        if not self.directory.is_dir():
            raise CameraError(f"replay folder not found: {self.directory}")
        self._files = sorted(p for p in self.directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._files:
            raise CameraError(f"replay folder has no images: {self.directory}")
        if self._epoch is None:
            try:
                self._epoch = self._files[0].stat().st_mtime
            except OSError as exc:
                raise CameraError(f"replay folder {self.directory}: cannot stat {self._files[0].name}: {exc}") from None
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
        offset = self._index * self.period  # file time of this frame since frame 0
        self._index += 1
        try:
            image = read_image(path, max_pixels=self.max_pixels)
        except ImageError as exc:
            raise FrameError(str(exc)) from None
        assert self._epoch is not None  # set by open()
        return Frame(image=image, ts=self._epoch + offset, index=self._index, name=path.name, mono_ts=offset)

    def close(self) -> None:
        self._files = []
