"""Keeps a frame source running: reopens a failing camera with backoff and reports it once per outage.

The frame loop must never spin a core on a dead camera nor die because a cable was pulled; it waits
(interruptibly, so shutdown stays prompt) and tells the dashboards camera_error / camera_ok.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from facegate.camera.latest import Grabber, LatestFrameSource
from facegate.camera.mjpeg import MjpegGrabber
from facegate.camera.opencv_source import OpenCVSource
from facegate.camera.picamera import PiCameraSource
from facegate.camera.replay import ReplaySource
from facegate.camera.rtsp import RtspGrabber
from facegate.camera.source import CameraError, Frame, FrameError, FrameSource
from facegate.camera.urls import is_stream, redact
from facegate.config import CameraConfig

log = logging.getLogger(__name__)


class _OpenFailed(CameraError):
    """An unexpected exception from a source's open(): reported and retried like any camera outage."""


def make_source(config: CameraConfig) -> FrameSource:
    source = config.source
    if source.startswith("replay:"):
        return ReplaySource(Path(source.removeprefix("replay:")), config.fps, loop=config.loop)
    if source == "picamera2":
        return PiCameraSource(config.width, config.height, config.fps)
    if is_stream(source):
        return LatestFrameSource(lambda: _grabber(config), redact(source), config.max_frame_age_ms,
                                 config.stall_seconds)
    return OpenCVSource(source, config.width, config.height, config.fps)


def _grabber(config: CameraConfig) -> Grabber:
    """A new connection to the configured network camera (one per open: nothing carries over a reconnect)."""
    # The read timeout is a backstop behind the stall check of LatestFrameSource.read(), which names the stall.
    read_timeout = config.stall_seconds + 1.0
    if config.source.lower().startswith(("rtsp://", "rtsps://")):
        return RtspGrabber(config.source, config.rtsp_transport, config.open_timeout_seconds, read_timeout)
    return MjpegGrabber(config.source, config.open_timeout_seconds, read_timeout)


class CameraSupervisor:
    def __init__(
        self,
        source: FrameSource,
        emit: Callable[..., object],
        stop: threading.Event,
        backoff_max_seconds: float = 30.0,
        backoff_start_seconds: float = 0.5,
        heartbeat: Callable[[], None] = lambda: None,
    ) -> None:
        self.source = source
        self.emit = emit
        self.stop = stop
        self.backoff_max = backoff_max_seconds
        self.backoff_start = backoff_start_seconds
        self.frame_errors = 0
        self.heartbeat = heartbeat  # the systemd watchdog: a waiting loop is a live loop
        if isinstance(source, LatestFrameSource):  # it waits for frames (and for its reader) in slices
            source.heartbeat = heartbeat

    def frames(self) -> Iterator[Frame]:
        """Frames until the source ends or ``stop`` is set; camera failures are retried, never raised."""
        delay = self.backoff_start
        failing = False
        opened = False
        while not self.stop.is_set():
            try:
                if not opened:
                    try:
                        self.source.open()
                    except CameraError:
                        raise
                    except Exception as exc:  # a library that fails to load or open in any way is a camera outage
                        raise _OpenFailed(f"{type(exc).__name__}: {exc}") from exc
                    opened = True
                frame = self.source.read()
            except FrameError as exc:
                self.frame_errors += 1
                log.warning("frame rejected: %s", exc)
                self.emit("frame_rejected", error=str(exc))
                continue
            except CameraError as exc:
                if not failing:
                    error, fix = str(exc), exc.fix
                    log.error("camera error: %s%s", error, f" (fix: {fix})" if fix else "")
                    self.emit("camera_error", error=error, **({"fix": fix} if fix else {}))
                    failing = True
                self._close_quietly()
                opened = False
                self._wait(delay)
                delay = min(delay * 2, self.backoff_max)
                continue
            if failing:
                log.info("camera ok again")
                self.emit("camera_ok")
                failing = False
            delay = self.backoff_start
            if frame is None:
                break
            yield frame
        self._close_quietly()

    def _wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stop.is_set() and (left := deadline - time.monotonic()) > 0:
            self.heartbeat()
            self.stop.wait(min(left, 1.0))

    def _close_quietly(self) -> None:
        try:
            self.source.close()
        except Exception as exc:  # closing a broken camera may fail in any way; it is already gone
            log.debug("camera close failed: %s", exc)
