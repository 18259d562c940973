"""Raspberry Pi camera through picamera2, imported only when used: it exists only on a Pi."""

from __future__ import annotations

import time
from typing import Any

from facegate.camera.source import CameraError, Frame


class PiCameraSource:
    def __init__(self, width: int, height: int, fps: float) -> None:
        self.width, self.height, self.fps = width, height, fps
        self._cam: Any = None
        self._index = 0

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise CameraError(
                "picamera2 is not installed (on Raspberry Pi OS: apt install python3-picamera2 and create the "
                "venv with --system-site-packages); use camera.source = \"0\" for a USB camera"
            ) from None
        try:
            cam = Picamera2()
            # RGB888 in libcamera's naming is B,G,R byte order in memory, i.e. what OpenCV calls BGR.
            cfg = cam.create_video_configuration(
                main={"size": (self.width, self.height), "format": "RGB888"},
                controls={"FrameRate": self.fps},
            )
            cam.configure(cfg)
            cam.start()
        except Exception as exc:  # picamera2 raises many types; all mean "no camera"
            raise CameraError(f"cannot start the Pi camera: {exc}") from None
        self._cam = cam

    def read(self) -> Frame | None:
        if self._cam is None:
            raise CameraError("camera not open")
        try:
            bgr = self._cam.capture_array("main")
        except Exception as exc:
            raise CameraError(f"Pi camera capture failed: {exc}") from None
        self._index += 1
        return Frame(image=bgr[:, :, ::-1].copy(), ts=time.time(), index=self._index, mono_ts=time.monotonic())

    def close(self) -> None:
        if self._cam is not None:
            try:
                self._cam.stop()
                self._cam.close()
            finally:
                self._cam = None
