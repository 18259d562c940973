"""Real camera servers on loopback for the tests and tools/bench/bench_camera.py: RTSP (GStreamer) and MJPEG over HTTP.

``RtspServer`` runs tools/rtsp_server.py under the system Python (Debian's GStreamer through python3-gi);
``rtsp_unavailable()`` says why it cannot run here (then the tests skip with that reason). ``MjpegServer`` is a
standard-library HTTP server sending ``multipart/x-mixed-replace`` JPEG parts at a fixed rate, with Basic
authentication and a stall switch. Both can be stopped and started again on the same port, like a camera that
reboots. Neither binds anything but 127.0.0.1.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "device")]
from tools import ROOT
from tools.net import free_port

SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_PACKAGES = "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-base gstreamer1.0-plugins-good " \
                "gstreamer1.0-plugins-ugly python3-gi"
_CHECK = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
          "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
          "missing = [e for e in ('appsrc', 'x264enc', 'rtph264pay', 'videoconvert') "
          "if Gst.ElementFactory.find(e) is None]; print(' '.join(missing))")


def rtsp_unavailable() -> str | None:
    """None when a GStreamer RTSP server can run here, else the reason (naming the Debian packages)."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found (the RTSP test server runs under Debian's Python with python3-gi)"
    try:
        out = subprocess.run([SYSTEM_PYTHON, "-c", _CHECK], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {SYSTEM_PYTHON}: {exc}"
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        return f"GStreamer RTSP server not importable ({last}): apt install {RTSP_PACKAGES} (make test does as root)"
    if out.stdout.strip():
        return f"GStreamer elements missing: {out.stdout.strip()} (apt install {RTSP_PACKAGES})"
    return None


def write_raw(frames: list[np.ndarray], path: Path) -> tuple[int, int]:
    """RGB frames (all one size) into the raw file tools/rtsp_server.py streams; returns (width, height)."""
    h, w = frames[0].shape[:2]
    with path.open("wb") as f:
        for frame in frames:
            if frame.shape[:2] != (h, w):
                frame = cv2.resize(frame, (w, h))
            f.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
    return w, h


class RtspServer:
    """tools/rtsp_server.py as a child process: ``url``, ``start()``, ``stop()`` (SIGKILL: a camera losing power)."""

    def __init__(self, frames_file: Path, size: tuple[int, int], fps: int = 10, port: int | None = None,
                 user: str | None = None, password: str | None = None, stall_after: float | None = None,
                 mount: str = "/door") -> None:
        self.frames_file, self.size, self.fps = frames_file, size, fps
        self.port = port or free_port()
        self.user, self.password, self.stall_after, self.mount = user, password, stall_after, mount
        self.proc: subprocess.Popen[str] | None = None

    def url(self, user: str | None = None, password: str | None = None) -> str:
        auth = f"{user}:{password}@" if user is not None else ""
        return f"rtsp://{auth}127.0.0.1:{self.port}{self.mount}"

    def start(self, timeout: float = 30.0) -> RtspServer:
        cmd = [SYSTEM_PYTHON, str(ROOT / "tools" / "rtsp_server.py"), "--port", str(self.port),
               "--frames", str(self.frames_file), "--size", f"{self.size[0]}x{self.size[1]}", "--fps", str(self.fps),
               "--mount", self.mount]
        if self.user is not None:
            cmd += ["--user", self.user, "--password", self.password or ""]
        if self.stall_after is not None:
            cmd += ["--stall-after", str(self.stall_after)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline and self.proc.poll() is None:
            line = self.proc.stdout.readline()
            if line.startswith("READY"):
                return self
        err = self.proc.stderr.read() if self.proc.stderr and self.proc.poll() is not None else ""
        self.stop()
        raise RuntimeError(f"RTSP server did not start: {line!r} {err[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()
            self.proc = None

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class MjpegServer:
    """MJPEG over HTTP from a list of RGB frames, looped at ``fps``; ``stall_after`` seconds into each connection
    it stops sending (the connection stays open); ``garbage`` sends parts that are not JPEG."""

    def __init__(self, frames: list[np.ndarray], fps: int = 10, port: int | None = None, user: str | None = None,
                 password: str | None = None, stall_after: float | None = None, garbage: bool = False) -> None:
        self.jpegs = [cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])[1]
                      .tobytes() for f in frames]
        self.fps, self.port = fps, port or free_port()
        self.user, self.password, self.stall_after, self.garbage = user, password, stall_after, garbage
        self.connections = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def url(self, user: str | None = None, password: str | None = None, path: str = "/video.mjpg") -> str:
        auth = f"{user}:{password}@" if user is not None else ""
        return f"http://{auth}127.0.0.1:{self.port}{path}"

    def start(self) -> MjpegServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_GET(self) -> None:
                if server.user is not None:
                    expected = "Basic " + base64.b64encode(f"{server.user}:{server.password}".encode()).decode()
                    if self.headers.get("Authorization") != expected:
                        self.send_response(401)
                        self.send_header("WWW-Authenticate", 'Basic realm="camera"')
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                if self.path != "/video.mjpg":
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                server.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                start, i = time.monotonic(), 0
                try:
                    while not server._stopping.is_set():
                        if server.stall_after is not None and time.monotonic() - start > server.stall_after:
                            time.sleep(0.05)
                            continue
                        data = b"not a jpeg" * 50 if server.garbage else server.jpegs[i % len(server.jpegs)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(data)).encode() + b"\r\n\r\n" + data + b"\r\n")
                        self.wfile.flush()
                        i += 1
                        time.sleep(max(0.0, start + i / server.fps - time.monotonic()))
                except OSError:
                    pass  # the client went away

        self._stopping.clear()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._stopping.set()
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> MjpegServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    print(rtsp_unavailable() or "RTSP test server available")
    sys.exit(0)
