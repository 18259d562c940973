"""An RTSP camera (H.264/H.265) through OpenCV's FFmpeg backend, for ``LatestFrameSource``.

Why OpenCV's FFmpeg in a thread, not an ``ffmpeg`` subprocess: the FFmpeg libraries already ship inside the
opencv-python wheel the door depends on (no extra binary to install on a Pi), decoding runs in native code that
releases the GIL, and a decoded frame is handed over without being copied through a pipe (a 1080p stream at
30 fps would push 190 MB/s through one). What a subprocess would add, killing a hung decoder, is covered by
FFmpeg's own open and read timeouts (interrupt callbacks in OpenCV), which are set here.

FFmpeg's RTSP options travel in the ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` environment variable, which OpenCV reads
while opening: it is set under a lock for that moment only. Low-delay options keep FFmpeg from probing three
seconds of stream (and handing those frames out late) before the first frame.

A failed open gives no reason through OpenCV, so the URL is probed with a plain RTSP DESCRIBE (stdlib socket)
to say what is wrong: nothing listening, no answer, wrong path (404), missing or rejected credentials (401).
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlsplit

import cv2
import numpy as np

from facegate.camera.auth import authorization
from facegate.camera.source import CameraError
from facegate.camera.urls import credentials, redact

_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_options_lock = threading.Lock()
LOW_DELAY = "fflags;nobuffer|flags;low_delay|analyzeduration;500000|probesize;500000"
RTSP_DEFAULT_PORT = 554


class RtspGrabber:
    def __init__(self, url: str, transport: str = "tcp", open_timeout_seconds: float = 10.0,
                 read_timeout_seconds: float = 5.0) -> None:
        self.url = url
        self.name = redact(url)
        self.transport = transport
        self.open_timeout = open_timeout_seconds
        self.read_timeout = read_timeout_seconds
        self._cap: cv2.VideoCapture | None = None

    def open(self) -> None:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, round(self.open_timeout * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, round(self.read_timeout * 1000)]
        with _options_lock:
            previous = os.environ.get(_OPTIONS_ENV)
            os.environ[_OPTIONS_ENV] = f"rtsp_transport;{self.transport}|{LOW_DELAY}"
            try:
                cap = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)
            finally:
                if previous is None:
                    os.environ.pop(_OPTIONS_ENV, None)
                else:
                    os.environ[_OPTIONS_ENV] = previous
        if not cap.isOpened():
            cap.release()
            reason, fix = probe(self.url, min(self.open_timeout, 5.0))
            raise CameraError(f"cannot open {self.name}: {reason}", fix)
        self._cap = cap

    def grab(self) -> tuple[np.ndarray, float | None] | None:
        cap = self._cap
        if cap is None:
            raise CameraError(f"{self.name}: not open")
        if not cap.grab():
            raise CameraError(f"{self.name}: the stream ended or sent nothing for {self.read_timeout:g} s")
        ok, bgr = cap.retrieve()
        if not ok or bgr is None:
            raise CameraError(f"{self.name}: a frame could not be decoded")
        msec = float(cap.get(cv2.CAP_PROP_POS_MSEC))
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (msec / 1000.0 if msec >= 0 else None)

    def interrupt(self) -> None:
        """Nothing to do: a blocked grab returns within the read timeout (FFmpeg's interrupt callback)."""

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def probe(url: str, timeout: float) -> tuple[str, str]:
    """Why an RTSP URL does not open, from one DESCRIBE (with the URL's credentials when asked): (reason, fix)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "rtsp":
        return "the stream could not be opened", "check the URL with another player (e.g. ffplay, VLC)"
    user, password, bare = credentials(url)
    host, port = parts.hostname or "", parts.port or RTSP_DEFAULT_PORT
    try:
        status, challenges = _describe(host, port, bare, timeout, None)
        if status == 401 and user is not None:
            header = authorization(challenges, "DESCRIBE", bare, user, password or "")
            if header is None:
                return ("the camera asks for an authentication scheme this client does not speak: "
                        f"{'; '.join(challenges) or 'none named'}", "use Basic or Digest (MD5) on the camera")
            status, _ = _describe(host, port, bare, timeout, header)
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout:g} s", "check the camera's address and that it is on"
    except OSError as exc:
        return (f"cannot connect to {host}:{port}: {exc.strerror or exc}",
                "check the camera's address and port and that its RTSP server is on")
    if status == 401:
        if user is None:
            return ("the camera asks for credentials (401 Unauthorized)",
                    "put them into camera.source: rtsp://USER:PASSWORD@host/path")
        return (f"the camera rejected the credentials of user '{user}' (401 Unauthorized)",
                "check the user name and password in camera.source (characters like @ : / must be %-encoded)")
    if status == 404:
        return (f"no stream at path '{parts.path or '/'}' (404 Not Found)",
                "check the stream path in the camera's manual")
    if status == 200:
        return ("the camera answers, but no video stream could be decoded from it (a codec OpenCV's FFmpeg lacks, "
                "or UDP blocked)", 'try camera.rtsp_transport = "tcp", or H.264 in the camera\'s settings')
    return f"the camera answered DESCRIBE with status {status}", "check the URL"


def _describe(host: str, port: int, uri: str, timeout: float, auth: str | None) -> tuple[int, list[str]]:
    """One RTSP DESCRIBE: the status code and the WWW-Authenticate challenges."""
    lines = [f"DESCRIBE {uri} RTSP/1.0", "CSeq: 1", "Accept: application/sdp", "User-Agent: facegate"]
    if auth is not None:
        lines.append(f"Authorization: {auth}")
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    fields = head[0].split(" ", 2)
    if len(fields) < 2 or not fields[0].startswith("RTSP/") or not fields[1].isdigit():
        raise OSError(f"not an RTSP server (answered {head[0][:60]!r})")
    challenges = [line.split(":", 1)[1].strip() for line in head[1:]
                  if line.lower().startswith("www-authenticate:")]
    return int(fields[1]), challenges
