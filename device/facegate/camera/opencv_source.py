"""OpenCV VideoCapture: a V4L2 index or device, a video file, or an RTSP/HTTP stream."""

from __future__ import annotations

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

    def open(self) -> None:
        target: int | str = int(self.spec) if self.spec.isdigit() else self.spec
        cap = cv2.VideoCapture(target)
        if not cap.isOpened():
            raise CameraError(f"cannot open camera source '{self.spec}'")
        if not self._is_file:
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
        name = f"{self._index:06d}" if self._is_file else None
        return Frame(image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), ts=time.time(), index=self._index, name=name)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
