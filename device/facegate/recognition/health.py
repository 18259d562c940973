"""Whether recognition works, said out loud: a door that cannot match anyone must not look green.

The frame loop survives any exception in one frame (a dead loop is a door no one can open). That must not
turn into silence: a gallery template of the wrong length makes every search fail, and the door then denies
everybody while every other sign stays green. :class:`RecognitionHealth` turns per-frame failures into
state changes, so the outbox sees two events per episode, not one per frame:

- ``recognition_error`` when recognition starts failing (the first failed frame after working, or at start),
  with the error, the frame and the time;
- ``recognition_ok`` once ``RECOVER_FRAMES`` frames in a row that had faces to match were recognised
  without error, with how many frames failed and for how long. Frames without a face do not count either
  way (nothing was matched), and a failure in between starts the count again, so a door that fails on every
  other face stays in the error state instead of flapping.

The status's ``recognition`` object (``{"ok", "error", "since"}``, facegate.events.status) follows these
events, and with it Home Assistant's "Recognition" problem sensor.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["RECOVER_FRAMES", "RecognitionHealth"]

#: Frames with faces, recognised without error in a row, that end a failure episode.
RECOVER_FRAMES = 3


class RecognitionHealth:
    def __init__(self, emit: Callable[..., object], recover_frames: int = RECOVER_FRAMES) -> None:
        self._emit = emit
        self._recover_frames = recover_frames
        self._lock = threading.Lock()
        self._failing_since: float | None = None
        self._failed_frames = 0
        self._good_in_row = 0

    @property
    def ok(self) -> bool:
        with self._lock:
            return self._failing_since is None

    def failed(self, error: BaseException, frame: str | None = None) -> None:
        """A frame's recognition raised ``error``: report it if recognition was working until now."""
        with self._lock:
            self._failed_frames += 1
            self._good_in_row = 0
            if self._failing_since is not None:
                return
            self._failing_since = time.time()
        self._emit("recognition_error", error=f"{type(error).__name__}: {error}"[:300], frame=frame)

    def succeeded(self, faces: int) -> None:
        """A frame was recognised without error; ``faces`` is how many faces it matched."""
        if faces <= 0:
            return
        with self._lock:
            if self._failing_since is None:
                return
            self._good_in_row += 1
            if self._good_in_row < self._recover_frames:
                return
            seconds = round(time.time() - self._failing_since, 3)
            failed, self._failing_since, self._failed_frames, self._good_in_row = self._failed_frames, None, 0, 0
        self._emit("recognition_ok", failed_frames=failed, failing_seconds=seconds)
