"""Frame age at the door from a real RTSP camera (GStreamer on loopback), newest-frame reader vs a buffered one.

    .venv/bin/python tools/bench/bench_camera.py [--seconds 20] [--size 1280x720] [--fps 30] [--reconnects 500]

An H.264 stream of the demo's scene (scaled to --size, --fps) goes into a door that runs the face pipeline on
each frame it gets, once at its natural speed and once slowed to 10 frames/s (a third of 30 fps). For each
frame the door decided on: its age when the door took it (now - capture time; capture time from the RTP time
stamps, the same StreamClock for the buffered reader), frames dropped, and the process's CPU (the row "no door"
is decoding alone).
"buffered" is a plain ``cv2.VideoCapture.read()`` in the door's loop, as the door read streams before. Then
``--reconnects`` open/read/close cycles against MJPEG and RTSP servers: threads and open files before and after.
Prints a Markdown table (docs/cameras.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import cv2
import numpy as np

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]
from facegate.camera.latest import LatestFrameSource
from facegate.camera.rtsp import LOW_DELAY
from facegate.camera.stream_clock import StreamClock
from facegate.camera.supervisor import make_source
from facegate.config import CameraConfig
from facegate.vision.pipeline import FacePipeline

from tools.demo import augment, in_scene, shipped_photos
from tools.stream_servers import MjpegServer, RtspServer, rtsp_unavailable, write_raw


def scene(size: tuple[int, int]) -> list[np.ndarray]:
    astronaut, _hopper, background = shipped_photos()
    frames = [background] * 5 + [in_scene(augment(astronaut, 2 - 0.4 * i, 0.9, False), background, 500 + 6 * i,
                                          60, 0) for i in range(20)]
    return [cv2.resize(f, size) for f in frames]


def door(pipeline: FacePipeline | None, image: np.ndarray, period: float | None) -> None:
    start = time.monotonic()
    if pipeline is not None:
        pipeline.process(image)
    if period is not None:
        time.sleep(max(0.0, start + period - time.monotonic()))


def run_latest(url: str, pipeline: FacePipeline | None, seconds: float, period: float | None) -> dict[str, float]:
    source = make_source(CameraConfig(source=url))
    assert isinstance(source, LatestFrameSource)
    source.open()
    cpu0, t0 = time.process_time(), time.monotonic()
    ages = []
    try:
        while time.monotonic() - t0 < seconds:
            frame = source.read()
            assert frame is not None and frame.mono_ts is not None
            ages.append(time.monotonic() - frame.mono_ts)
            door(pipeline, frame.image, period)
        cpu = time.process_time() - cpu0
    finally:
        source.close()
    s = source.stats
    return {"decided": len(ages), "p50": 1000 * float(np.median(ages)), "p99": 1000 * float(np.percentile(ages, 99)),
            "max": 1000 * max(ages), "dropped": s.frames_skipped + s.frames_stale, "stale": s.frames_stale,
            "decode_cpu": 100 * cpu / (time.monotonic() - t0)}


def run_buffered(url: str, pipeline: FacePipeline | None, seconds: float, period: float | None) -> dict[str, float]:
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;tcp|{LOW_DELAY}"
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
    clock, ages, t0 = StreamClock(), [], time.monotonic()
    cpu0 = time.process_time()
    try:
        while time.monotonic() - t0 < seconds:
            ok, bgr = cap.read()
            if not ok:
                break
            now = time.monotonic()
            ages.append(now - clock.capture_time(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0, now))
            door(pipeline, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), period)
    finally:
        cap.release()
    cpu = time.process_time() - cpu0
    return {"decided": len(ages), "p50": 1000 * float(np.median(ages)), "p99": 1000 * float(np.percentile(ages, 99)),
            "max": 1000 * max(ages), "dropped": 0, "stale": 0, "decode_cpu": 100 * cpu / (time.monotonic() - t0)}


def reconnects(url: str, rounds: int) -> tuple[int, int, int, int, float]:
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    source = make_source(CameraConfig(source=url))
    source.open()
    source.read()
    source.close()
    threads, files, t0 = threading.active_count(), fds(), time.monotonic()
    for _ in range(rounds):
        source.open()
        source.read()
        source.close()
    time.sleep(1.0)  # the server's side of the last connection notices it is gone
    return threads, threading.active_count(), files, fds(), time.monotonic() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--reconnects", type=int, default=500)
    args = parser.parse_args()
    reason = rtsp_unavailable()
    if reason:
        print(reason)
        return 1
    w, h = (int(v) for v in args.size.split("x"))
    frames = scene((w, h))
    pipeline = FacePipeline.from_models_dir()
    with TemporaryDirectory() as tmp:
        raw = Path(tmp) / "scene.rgb"
        write_raw(frames, raw)
        print(f"RTSP H.264 {w}x{h} at {args.fps} fps, {args.seconds:g} s per row, camera.max_frame_age_ms = 300\n")
        print("| reader | door speed | frames decided | age p50 ms | age p99 ms | age max ms | dropped (stale) "
              "| process CPU % |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for name, run in (("newest frame (this door)", run_latest), ("buffered read()", run_buffered)):
            for label, work, period in (("no door: decoding only", None, None), ("natural", pipeline, None),
                                        ("slowed to 10 fps", pipeline, 0.1)):
                with RtspServer(raw, (w, h), fps=args.fps) as server:
                    r = run(server.url(), work, args.seconds, period)
                print(f"| {name} | {label} | {r['decided']:.0f} | {r['p50']:.0f} | {r['p99']:.0f} | {r['max']:.0f} "
                      f"| {r['dropped']:.0f} ({r['stale']:.0f}) | {r['decode_cpu']:.0f} |", flush=True)
        if args.reconnects:
            print("\n| stream | reconnects | threads before → after | open files before → after | seconds |")
            print("|---|---:|---|---|---:|")
            small = [cv2.resize(f, (640, 480)) for f in frames[:3]]
            write_raw(small, raw)
            with MjpegServer(small, fps=30) as mjpeg, RtspServer(raw, (640, 480), fps=30) as rtsp:
                for name, url in (("MJPEG", mjpeg.url()), ("RTSP", rtsp.url())):
                    t0, t1, f0, f1, secs = reconnects(url, args.reconnects)
                    print(f"| {name} | {args.reconnects} | {t0} → {t1} | {f0} → {f1} | {secs:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
