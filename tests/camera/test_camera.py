"""Frame sources: deterministic replay, bad frames skipped, failing cameras reopened with backoff."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from facegate.camera.replay import ReplaySource
from facegate.camera.source import CameraError, Frame, FrameError
from facegate.camera.supervisor import CameraSupervisor, make_source
from facegate.config import CameraConfig
from support import write_image


def _folder(tmp_path: Path, count: int) -> Path:
    for i in range(count):
        write_image(tmp_path / f"f{i:03d}.png", np.full((48, 64, 3), i * 10, dtype=np.uint8))
    return tmp_path


def test_replay_delivers_every_frame_in_name_order_paced(tmp_path: Path) -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    src = ReplaySource(_folder(tmp_path, 5), fps=10, clock=lambda: now[0], sleep=sleep)
    src.open()
    names = []
    while (frame := src.read()) is not None:
        names.append(frame.name)
        assert frame.image.shape == (48, 64, 3)
    assert names == [f"f{i:03d}.png" for i in range(5)]
    assert sum(slept) == pytest.approx(0.4)  # 5 frames at 10 fps: 4 waits of 0.1 s


def test_replay_loops_when_configured(tmp_path: Path) -> None:
    src = ReplaySource(_folder(tmp_path, 2), fps=1000, loop=True)
    src.open()
    names = [src.read().name for _ in range(5)]  # type: ignore[union-attr]
    assert names == ["f000.png", "f001.png", "f000.png", "f001.png", "f000.png"]


def test_replay_missing_folder_is_a_camera_error(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match="not found"):
        ReplaySource(tmp_path / "nope", fps=10).open()


def test_make_source_parses_specs(tmp_path: Path) -> None:
    assert isinstance(make_source(CameraConfig(source=f"replay:{tmp_path}")), ReplaySource)
    assert type(make_source(CameraConfig(source="picamera2"))).__name__ == "PiCameraSource"
    assert type(make_source(CameraConfig(source="0"))).__name__ == "OpenCVSource"


def test_supervisor_skips_bad_frames_and_reports_them(tmp_path: Path) -> None:
    folder = _folder(tmp_path, 3)
    (folder / "f001b.jpg").write_text("garbage")
    events: list[tuple[str, dict]] = []  # type: ignore[type-arg]
    sup = CameraSupervisor(ReplaySource(folder, fps=1000), lambda t, **f: events.append((t, f)), threading.Event())
    names = [f.name for f in sup.frames()]
    assert names == ["f000.png", "f001.png", "f002.png"]
    assert [t for t, _ in events] == ["frame_rejected"]
    assert "f001b.jpg" in events[0][1]["error"]


class FlakyCamera:
    """A real source wrapped so that it fails to open a given number of times, like an unplugged USB camera."""

    def __init__(self, inner: ReplaySource, failures: int) -> None:
        self.inner, self.failures, self.opens = inner, failures, 0

    def open(self) -> None:
        self.opens += 1
        if self.opens <= self.failures:
            raise CameraError("no camera on /dev/video0")
        self.inner.open()

    def read(self) -> Frame | None:
        return self.inner.read()

    def close(self) -> None:
        self.inner.close()


def test_supervisor_reopens_with_backoff_and_reports_once(tmp_path: Path) -> None:
    events: list[str] = []
    beats: list[int] = []
    cam = FlakyCamera(ReplaySource(_folder(tmp_path, 2), fps=1000), failures=3)
    sup = CameraSupervisor(cam, lambda t, **f: events.append(t), threading.Event(),
                           backoff_max_seconds=0.04, backoff_start_seconds=0.01, heartbeat=lambda: beats.append(1))
    frames = list(sup.frames())
    assert len(frames) == 2 and cam.opens == 4
    assert events == ["camera_error", "camera_ok"]
    assert beats, "the watchdog heartbeat must keep beating while the camera is down"


def test_supervisor_stops_promptly_while_waiting(tmp_path: Path) -> None:
    stop = threading.Event()
    cam = FlakyCamera(ReplaySource(_folder(tmp_path, 1), fps=1000), failures=10**6)
    sup = CameraSupervisor(cam, lambda t, **f: None, stop, backoff_max_seconds=60, backoff_start_seconds=60)
    threading.Timer(0.2, stop.set).start()
    assert list(sup.frames()) == []


def test_frame_error_type_is_distinct() -> None:
    assert not issubclass(FrameError, CameraError)


def test_opencv_source_reads_a_video_file_to_its_end(tmp_path: Path) -> None:
    import cv2
    from facegate.camera.opencv_source import OpenCVSource

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(6):
        writer.write(np.full((48, 64, 3), 40 * i, dtype=np.uint8))
    writer.release()
    src = OpenCVSource(str(path), 640, 480, 10)
    src.open()
    frames = []
    while (frame := src.read()) is not None:
        frames.append(frame)
    src.close()
    assert len(frames) == 6
    assert frames[0].image.shape == (48, 64, 3) and frames[-1].name == "000006"
    assert frames[3].image.mean() == pytest.approx(120, abs=6)


def test_opencv_source_missing_device_is_a_camera_error() -> None:
    from facegate.camera.opencv_source import OpenCVSource

    with pytest.raises(CameraError, match="cannot open"):
        OpenCVSource("/nonexistent/video.mp4", 640, 480, 10).open()
