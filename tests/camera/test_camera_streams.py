"""Network cameras against real servers on loopback: RTSP (Debian's GStreamer, H.264) and MJPEG over HTTP.

The door decides from the stream, survives the server being killed and restarted, reopens a stalled stream,
names wrong credentials (never showing the password), drops frames older than camera.max_frame_age_ms, and
leaks no thread or file descriptor over reconnects. Video files and V4L2 (v4l2loopback) are here too.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from facegate.camera.latest import LatestFrameSource
from facegate.camera.mjpeg import MjpegGrabber
from facegate.camera.rtsp import RtspGrabber
from facegate.camera.source import CameraError
from facegate.camera.stream_clock import StreamClock
from facegate.camera.supervisor import CameraSupervisor, make_source
from facegate.camera.urls import redact
from facegate.config import CameraConfig, parse_config
from facegate.gallery.store import Gallery, NewTemplate
from facegate.service import Service
from gpiozero.pins.mock import MockFactory

from tools.demo import augment, in_scene, shipped_photos
from tools.stream_servers import MjpegServer, RtspServer, rtsp_unavailable, write_raw
from tools.wait import wait_for

SECRET = "s3cret-Pw"


# ------------------------------------------------------------------ the scene, the gallery, the door


@pytest.fixture(scope="module")
def scene() -> list[np.ndarray]:
    """The demo's door: brick wall, the astronaut walks up and leaves, then Grace Hopper (a stranger)."""
    astronaut, hopper, background = shipped_photos()
    frames = [background] * 3
    for photo in (astronaut, hopper):
        frames += [in_scene(augment(photo, 2 - 0.4 * i, 0.9, False), background, 500 + 6 * i, 60, 0)
                   for i in range(12)]
        frames += [background] * 8
    return frames


@pytest.fixture(scope="module")
def rtsp_frames(scene: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[int, int]]:
    reason = rtsp_unavailable()
    if reason is not None:
        pytest.skip(reason)
    path = tmp_path_factory.mktemp("rtsp") / "scene.rgb"
    return path, write_raw(scene, path)


@pytest.fixture(scope="module")
def astro_templates(pipeline) -> list[NewTemplate]:  # type: ignore[no-untyped-def]
    astronaut = shipped_photos()[0]
    out = []
    for image in (astronaut, augment(astronaut, 4, 1.1, True, 0.9)):
        best = pipeline.process(image, largest_only=True)[0]
        out.append(NewTemplate(best.embedding, best.quality.as_dict(), "astronaut"))
    return out


def door(tmp: Path, source: str, templates: list[NewTemplate], pipeline: Any) -> tuple[Service, list[dict[str, Any]]]:
    config = parse_config({
        "device_id": "cam1", "state_dir": str(tmp / "state"),
        "camera": {"source": source, "stall_seconds": 2, "reopen_backoff_max_seconds": 1},
        "door": {"relay_pin": 17, "unlock_seconds": 0.2},
        "mqtt": {"enabled": False}, "outbox": {"flush_timeout_seconds": 0},
        "recognition": {"cooldown_seconds": 1},
        "liveness": {"enabled": False},  # registry photos pasted into frames are photographs (test_service.py)
    })
    config.state_dir.mkdir(parents=True, exist_ok=True)
    with Gallery(config.gallery_path) as g:
        g.enroll("astro", templates, pipeline.embedder_sha256, name="Eileen Collins")
    service = Service(config, pin_factory=MockFactory())
    seen: list[dict[str, Any]] = []
    service.emitter.add_listener(seen.append)
    return service, seen


def count(seen: list[dict[str, Any]], kind: str) -> int:
    return sum(1 for e in list(seen) if e["type"] == kind)


def run_door_through_a_restart(service: Service, seen: list[dict[str, Any]], stop_server: Any,
                               start_server: Any) -> None:
    """Grant and stranger from the stream; the server dies → camera_error; back → camera_ok, decisions again."""
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: count(seen, "access_granted") >= 1 and count(seen, "unknown_face") >= 1, 90), \
            [e["type"] for e in seen]
        granted = next(e for e in seen if e["type"] == "access_granted")
        assert granted["person_id"] == "astro"
        assert service.status()["camera"]["ok"] is True
        stop_server()
        assert wait_for(lambda: count(seen, "camera_error") == 1, 30)
        assert service.status()["camera"]["ok"] is False
        assert thread.is_alive()
        grants_before = count(seen, "access_granted")
        start_server()
        assert wait_for(lambda: count(seen, "camera_ok") == 1, 60), [e["type"] for e in seen]
        assert service.status()["camera"]["ok"] is True
        assert wait_for(lambda: count(seen, "access_granted") > grants_before, 90)  # decisions resume
    finally:
        service.stop_event.set()
        thread.join(30)
    assert not thread.is_alive()


# ------------------------------------------------------------------ RTSP


def test_rtsp_door_grants_reports_stranger_and_survives_a_server_restart(  # type: ignore[no-untyped-def]
        tmp_path, rtsp_frames, astro_templates, pipeline) -> None:
    path, size = rtsp_frames
    server = RtspServer(path, size, fps=10).start()
    try:
        service, seen = door(tmp_path, server.url(), astro_templates, pipeline)
        run_door_through_a_restart(service, seen, server.stop, server.start)
    finally:
        server.stop()
    assert "rtsp://" in next(e for e in seen if e["type"] == "camera_error")["error"]


def test_rtsp_stalled_stream_is_reopened(rtsp_frames) -> None:  # type: ignore[no-untyped-def]
    path, size = rtsp_frames
    with RtspServer(path, size, fps=10, stall_after=2.0) as server:
        source = make_source(CameraConfig(source=server.url(), stall_seconds=1.0))
        events: list[tuple[str, dict[str, Any]]] = []
        stop = threading.Event()
        sup = CameraSupervisor(source, lambda t, **f: events.append((t, f)), stop, 0.2, 0.1)
        for frames, _ in enumerate(sup.frames(), 1):
            if sum(1 for t, _ in events if t == "camera_ok") >= 1 and frames > 5:
                stop.set()
    kinds = [t for t, _ in events]
    assert kinds[:2] == ["camera_error", "camera_ok"], kinds
    assert re.search(r"no frame for 1 s|sent nothing for 2 s", events[0][1]["error"]), events[0]
    assert isinstance(source, LatestFrameSource) and source.stats.opens >= 2


def test_rtsp_wrong_or_missing_credentials_are_named_never_the_password(  # type: ignore[no-untyped-def]
        rtsp_frames, capfd, caplog) -> None:
    path, size = rtsp_frames
    with RtspServer(path, size, user="door", password=SECRET) as server:
        source = make_source(CameraConfig(source=server.url("door", SECRET + "x")))
        with pytest.raises(CameraError) as wrong:
            source.open()
        assert "rejected the credentials of user 'door'" in str(wrong.value)
        assert "rtsp://door:***@127.0.0.1" in str(wrong.value)
        with pytest.raises(CameraError, match="asks for credentials"):
            make_source(CameraConfig(source=server.url())).open()
        good = make_source(CameraConfig(source=server.url("door", SECRET)))
        good.open()
        try:
            frame = good.read()
            assert frame is not None and frame.image.shape == (size[1], size[0], 3)
        finally:
            good.close()
    out, err = capfd.readouterr()
    assert SECRET not in out + err + caplog.text + str(wrong.value) + wrong.value.fix


def test_rtsp_frames_too_old_are_dropped_and_counted(rtsp_frames) -> None:  # type: ignore[no-untyped-def]
    """Frames that arrive 2 s after the stream's fastest ones (a backlog) are never handed to the door."""
    import time

    path, size = rtsp_frames
    late = [0.0]
    with RtspServer(path, size, fps=10) as server:
        source = LatestFrameSource(lambda: RtspGrabber(server.url()), "cam", max_frame_age_ms=300, stall_seconds=3,
                                   clock=lambda: time.monotonic() + late[0])
        source.open()
        try:
            for _ in range(5):
                frame = source.read()
                assert frame is not None and frame.mono_ts is not None
            assert source.stats.frames_stale == 0
            late[0] = 2.0  # from now on every frame arrives 2 s later than the stream's time stamps say
            with pytest.raises(CameraError, match="younger than 300 ms"):
                source.read()
            assert source.stats.frames_stale >= 1
            assert source.stats.frames_delivered == 5
        finally:
            source.close()


# ------------------------------------------------------------------ MJPEG over HTTP


def test_mjpeg_door_grants_reports_stranger_and_survives_a_server_restart(  # type: ignore[no-untyped-def]
        tmp_path, scene, astro_templates, pipeline) -> None:
    server = MjpegServer(scene, fps=10).start()
    try:
        service, seen = door(tmp_path, server.url(), astro_templates, pipeline)
        run_door_through_a_restart(service, seen, server.stop, server.start)
    finally:
        server.stop()


def test_mjpeg_stall_and_garbage_are_reopened(scene) -> None:  # type: ignore[no-untyped-def]
    for server, expected in ((MjpegServer(scene[:3], stall_after=1.0), "no frame for 1 s|no data for 2 s"),
                             (MjpegServer(scene[:3], garbage=True), "parts in a row are not images")):
        with server:
            source = make_source(CameraConfig(source=server.url(), stall_seconds=1.0))
            events: list[tuple[str, dict[str, Any]]] = []
            stop = threading.Event()
            sup = CameraSupervisor(source, lambda t, _e=events, **f: _e.append((t, f)), stop, 0.2, 0.1)
            watcher = threading.Thread(target=lambda s=server, e=events, halt=stop: (  # type: ignore[misc]
                wait_for(lambda: s.connections >= 3 and bool(e), 60, fail=False), halt.set()))
            watcher.start()
            for _ in sup.frames():
                pass
            watcher.join()
            assert events and events[0][0] == "camera_error" and re.search(expected, events[0][1]["error"]), events
            assert server.connections >= 2  # reopened


def test_mjpeg_credentials_and_not_a_stream(scene, caplog) -> None:  # type: ignore[no-untyped-def]
    with MjpegServer(scene[:2], user="door", password=SECRET) as server:
        with pytest.raises(CameraError, match="rejected the credentials of user 'door'") as wrong:
            make_source(CameraConfig(source=server.url("door", "nope"))).open()
        with pytest.raises(CameraError, match="asks for credentials"):
            make_source(CameraConfig(source=server.url())).open()
        with pytest.raises(CameraError, match="404"):
            make_source(CameraConfig(source=server.url("door", SECRET, path="/snapshot.jpg"))).open()
        good = make_source(CameraConfig(source=server.url("door", SECRET)))
        good.open()
        try:
            assert good.read() is not None
        finally:
            good.close()
    assert SECRET not in caplog.text + str(wrong.value)


def test_slow_door_gets_the_newest_frame_never_a_backlog(scene) -> None:  # type: ignore[no-untyped-def]
    """A door three times slower than the stream: every frame it gets is young; the ones in between are skipped."""
    import time

    with MjpegServer(scene, fps=30) as server:
        source = make_source(CameraConfig(source=server.url()))
        assert isinstance(source, LatestFrameSource)
        source.open()
        try:
            ages = []
            for _ in range(10):
                frame = source.read()
                assert frame is not None and frame.mono_ts is not None
                ages.append(time.monotonic() - frame.mono_ts)
                time.sleep(0.1)  # the door's work on the frame
        finally:
            source.close()
    assert max(ages) <= 0.3  # by construction: older frames are dropped, never handed out
    assert source.stats.frames_skipped >= 10  # about two in three frames were never decided on


def test_reconnects_leak_no_thread_and_no_descriptor(scene, rtsp_frames) -> None:  # type: ignore[no-untyped-def]
    """Many reconnects (tools/bench/bench_camera.py does 500): threads and open files stay flat."""
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    def readers() -> int:
        return sum(1 for t in threading.enumerate() if t.name == "camera-reader")

    path, size = rtsp_frames
    with MjpegServer(scene[:3], fps=30) as mjpeg, RtspServer(path, size, fps=30) as rtsp:
        for url, rounds in ((mjpeg.url(), 40), (rtsp.url(), 4)):
            source = make_source(CameraConfig(source=url))
            source.open()
            source.read()
            source.close()  # warmed up: the decoder libraries and their threads are loaded
            threads, files = threading.active_count(), fds()
            for _ in range(rounds):
                source.open()
                assert source.read() is not None
                source.close()
            assert readers() == 0
            assert wait_for(lambda t=threads: threading.active_count() <= t, 10, fail=False), (
                threading.active_count(), threads)
            assert wait_for(lambda f=files: fds() <= f, 10, fail=False), (fds(), files)


# ------------------------------------------------------------------ units: clock, URLs, files, V4L2


def test_stream_clock_shows_a_backlog_as_age_and_restarts_on_a_jump() -> None:
    clock = StreamClock(window_seconds=30)
    # Frames 0.1 s apart on the camera; the first arrives 50 ms after capture, then the reader falls behind by
    # 20 ms per frame (a buffered backlog).
    ages = []
    for k in range(20):
        arrival = 100.0 + 0.05 + k * 0.12
        ages.append(arrival - clock.capture_time(k * 0.1, arrival))
    assert ages[0] == 0 and ages[-1] == pytest.approx(19 * 0.02)
    assert ages == sorted(ages)
    # A reconnect: the stream time starts over, so the old offset no longer applies.
    assert clock.capture_time(0.0, 200.0) == 200.0
    assert clock.capture_time(None, 201.0) == 201.0  # no stream time: arrival


def test_urls_are_redacted_everywhere() -> None:
    assert redact("rtsp://admin:p%40ss@cam:554/s1") == "rtsp://admin:***@cam:554/s1"
    assert redact("http://cam/video") == "http://cam/video"
    assert type(make_source(CameraConfig(source="rtsp://a:b@cam/x"))).__name__ == "LatestFrameSource"
    assert type(make_source(CameraConfig(source="http://cam/x.mjpg"))).__name__ == "LatestFrameSource"
    assert isinstance(MjpegGrabber("http://u:p@cam/x").name, str) and "p@" not in MjpegGrabber("http://u:p@cam/x").name


def test_video_file_gives_frames_with_file_time(tmp_path: Path, scene: list[np.ndarray]) -> None:
    path = tmp_path / "door.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    for frame in scene[:10]:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    source = make_source(CameraConfig(source=str(path)))
    source.open()
    times = []
    while (frame := source.read()) is not None:
        assert frame.image.shape == (480, 640, 3)
        times.append(frame.mono_ts)
    source.close()
    assert times == pytest.approx([k / 10 for k in range(10)])


def test_v4l2_loopback_device(scene: list[np.ndarray]) -> None:
    """A V4L2 camera through v4l2loopback, where the kernel has the module (a container's kernel usually not)."""
    devices = sorted(p for p in Path("/sys/devices/virtual/video4linux").glob("video*")) \
        if Path("/sys/devices/virtual/video4linux").is_dir() else []
    if not devices:
        pytest.skip("no v4l2loopback device (modprobe v4l2loopback; the module is not in this kernel)"
                    if shutil.which("modprobe") else "no v4l2loopback device and no modprobe here")
    device = f"/dev/{devices[0].name}"
    fd = os.open(device, os.O_RDWR)
    try:
        source = make_source(CameraConfig(source=device))
        source.open()
        try:
            frame = source.read()
        finally:
            source.close()
    except CameraError as exc:
        pytest.skip(f"{device}: no producer feeding the loopback device ({exc})")
    finally:
        os.close(fd)
    assert frame is not None and frame.image.ndim == 3


# ------------------------------------------------------------------ faces at the camera's resolution


def _face_in_1080p(px: int, detector: Any) -> tuple[np.ndarray, tuple[float, ...]]:
    from tools.bench.bench_face_size import ZONE, composite

    astronaut, _hopper, background = shipped_photos()
    from facegate.recognition.zone import DoorZone

    x0, y0, x1, y1 = DoorZone(ZONE).pixels(1920, 1080)
    box = detector.detect(astronaut)[0].box  # the face in her photo: scaled to px wide
    return composite(astronaut, box, background, (1920, 1080), px, ((x0 + x1) // 2, (y0 + y1) // 2))


def test_tiles_find_a_60px_face_in_a_1080p_door_zone(pipeline) -> None:  # type: ignore[no-untyped-def]
    from facegate.recognition.zone import DoorZone
    from facegate.vision.tiles import TiledDetector

    from tools.bench.bench_face_size import ZONE

    frame, _ = _face_in_1080p(60, pipeline.detector)
    view, _offset = DoorZone(ZONE).view(frame)
    assert TiledDetector(pipeline.detector, 512).detect(view)  # tiles: found
    assert not pipeline.detector.detect(view)  # the zone letterboxed whole into 128x128: missed


def test_a_150px_face_in_a_1080p_frame_is_granted(tmp_path, astro_templates, pipeline) -> None:  # type: ignore[no-untyped-def]
    from tools.bench.bench_face_size import ZONE

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(8):
        frame, _ = _face_in_1080p(150 + 2 * i, pipeline.detector)
        cv2.imwrite(str(folder / f"{i:04d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    door(tmp_path, f"replay:{folder}", astro_templates, pipeline)  # enrols the astronaut
    config = parse_config({
        "device_id": "cam1", "state_dir": str(tmp_path / "state"),
        "camera": {"source": f"replay:{folder}", "fps": 30, "roi": list(ZONE)},
        "door": {"relay_pin": 17, "unlock_seconds": 0.2}, "mqtt": {"enabled": False},
        "outbox": {"flush_timeout_seconds": 0}, "liveness": {"enabled": False},
    })
    service = Service(config, pin_factory=MockFactory())
    seen: list[dict[str, Any]] = []
    service.emitter.add_listener(seen.append)
    service.run()
    assert [e["person_id"] for e in seen if e["type"] == "access_granted"] == ["astro"], [e["type"] for e in seen]


def test_doctor_shows_the_streams_resolution_rate_and_age_never_the_password(scene) -> None:  # type: ignore[no-untyped-def]
    from facegate.doctor import check_camera

    with MjpegServer(scene[:3], fps=10, user="door", password=SECRET) as server:
        check = check_camera(parse_config({"camera": {"source": server.url("door", SECRET)}}))
    assert check.ok, check
    assert "640x480 frame read" in check.detail and " fps, frame age " in check.detail
    assert SECRET not in check.detail and "door:***@" in check.detail
