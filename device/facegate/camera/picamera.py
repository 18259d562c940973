"""Raspberry Pi camera through picamera2, imported only when used: it exists only on a Pi."""

from __future__ import annotations

import time
from typing import Any

from facegate.camera.source import CameraError, CameraLibraryError, Frame

NOT_INSTALLED_FIX = ("on Raspberry Pi OS: apt install python3-picamera2 and create the venv with "
                     "--system-site-packages (deploy/install-pi.sh does both); use camera.source = \"0\" for a USB "
                     "camera")


OPEN_FIX = ("check that the camera is detected (rpicam-hello --list-cameras), the ribbon cable, and that the "
            "service user is in the 'video' group")


def import_picamera2() -> Any:
    """The Picamera2 class, or CameraLibraryError naming the cause and the fix.

    Any exception counts, not only ImportError: with a venv that shadows the system numpy the import dies in a
    C extension with ValueError ("numpy.dtype size changed"), and the service must report that, not crash-loop.
    """
    try:
        from picamera2 import Picamera2
    except ImportError as exc:
        raise CameraLibraryError(f"picamera2 cannot be imported: {exc}", NOT_INSTALLED_FIX) from None
    except Exception as exc:
        from facegate.pi.checks import numpy_fix
        from facegate.pi.numpy_pin import looks_like_abi_error

        message = f"picamera2 cannot be imported: {type(exc).__name__}: {exc}"
        if looks_like_abi_error(str(exc)):
            raise CameraLibraryError(message + " (a numpy ABI conflict)", numpy_fix()) from None
        raise CameraLibraryError(message, "reinstall python3-picamera2 (apt install --reinstall python3-picamera2)"
                                 " and re-run deploy/install-pi.sh") from None
    return Picamera2


class PiCameraSource:
    def __init__(self, width: int, height: int, fps: float) -> None:
        self.width, self.height, self.fps = width, height, fps
        self._cam: Any = None
        self._index = 0

    def open(self) -> None:
        picamera2 = import_picamera2()
        try:
            cam = picamera2()
            # RGB888 in libcamera's naming is B,G,R byte order in memory, i.e. what OpenCV calls BGR.
            cfg = cam.create_video_configuration(
                main={"size": (self.width, self.height), "format": "RGB888"},
                controls={"FrameRate": self.fps},
            )
            cam.configure(cfg)
            cam.start()
        except Exception as exc:  # picamera2 raises many types; all mean "no camera"
            raise CameraError(f"cannot start the Pi camera: {type(exc).__name__}: {exc}", OPEN_FIX) from None
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
