"""OpenCV VideoCapture: a V4L2 index or device, a video file, or an RTSP/HTTP stream.

Frame times (see ``camera.source.Frame``): a live camera or stream is stamped when the frame is read
(``time.time()`` and ``time.monotonic()``); a video file with the frame's own position in the file, so a
recorded clip gives the same decisions however fast it is read: ``mono_ts`` = the position (from the
container's timestamps, else index / the file's frame rate), ``ts`` = the file's modification time + that.
"""

from __future__ import annotations

import os
import time

import cv2

from facegate.camera.source import CameraError, Frame


class OpenCVSource:
    def __init__(self, spec: str, width: int, height: int, fps: float) -> None:
        self.spec = spec
        self.width, self.height, self.fps = width, height, fps
        self._cap: cv2.VideoCapture | None = None
        self._index = 0
        self._is_file = not spec.isdigit() and "://" not in spec and not spec.startswith("/dev/")
        self._epoch = 0.0  # a video file's modification time
        self._file_fps = 0.0

    def open(self) -> None:
        target: int | str = int(self.spec) if self.spec.isdigit() else self.spec
        cap = cv2.VideoCapture(target)
        if not cap.isOpened():
            raise CameraError(f"cannot open camera source '{self.spec}'")
        if self._is_file:
            try:
                self._epoch = os.stat(self.spec).st_mtime
            except OSError:
                self._epoch = time.time()
            self._file_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        else:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        self._cap = cap

    def read(self) -> Frame | None:
        if self._cap is None:
            raise CameraError("camera not open")
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            if self._is_file:
                return None  # a video file has ended
            raise CameraError(f"camera source '{self.spec}' stopped delivering frames")
        self._index += 1
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if not self._is_file:
            return Frame(image=rgb, ts=time.time(), index=self._index, mono_ts=time.monotonic())
        offset = self._file_position(self._cap)
        return Frame(image=rgb, ts=self._epoch + offset, index=self._index, name=f"{self._index:06d}", mono_ts=offset)

    def _file_position(self, cap: cv2.VideoCapture) -> float:
        """Seconds into the file of the frame just read: the container's time stamp, else index / file fps."""
        msec = float(cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0)
        if msec > 0 or self._index == 1:
            return msec / 1000.0
        fps = self._file_fps if self._file_fps > 0 else self.fps
        return (self._index - 1) / fps

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
