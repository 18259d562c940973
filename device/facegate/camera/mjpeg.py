"""An MJPEG-over-HTTP camera (``multipart/x-mixed-replace``), read with the standard library, for
``LatestFrameSource``.

A plain client rather than OpenCV's FFmpeg: it answers a 401 with the URL's credentials (Basic or Digest), tells
an HTML login page or a snapshot URL from a stream, bounds each part's size, and decodes each part through the
project's one image decoder (a decompression bomb or a truncated JPEG is refused, not half-decoded). MJPEG has
no frame time stamps: a frame's capture time is its arrival (``StreamClock``).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
from urllib.parse import urlsplit

import numpy as np

from facegate.base.imageio import DEFAULT_MAX_PIXELS, decode_image
from facegate.camera.auth import authorization
from facegate.camera.source import CameraError
from facegate.camera.urls import credentials, redact
from facegate.errors import ImageError

MAX_PART_BYTES = 16 * 1024 * 1024
MAX_HEADER_LINES = 64
GARBAGE_PARTS = 5  # this many undecodable parts in a row: the stream is garbage and is reopened


class MjpegGrabber:
    def __init__(self, url: str, open_timeout_seconds: float = 10.0, read_timeout_seconds: float = 5.0,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.url = url
        self.name = redact(url)
        self.open_timeout = open_timeout_seconds
        self.read_timeout = read_timeout_seconds
        self.max_pixels = max_pixels
        self._conn: http.client.HTTPConnection | None = None
        self._resp: http.client.HTTPResponse | None = None
        self._boundary = b""
        self._bad = 0
        self._after_boundary = False
        self._sock: socket.socket | None = None

    def open(self) -> None:
        user, password, bare = credentials(self.url)
        parts = urlsplit(bare)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn, resp = self._get(parts.scheme, parts.netloc, target, None)
            if resp.status == 401 and user is not None:
                header = authorization(resp.headers.get_all("WWW-Authenticate") or [], "GET", target, user,
                                       password or "")
                conn.close()
                if header is not None:
                    conn, resp = self._get(parts.scheme, parts.netloc, target, header)
        except TimeoutError:
            raise CameraError(f"cannot open {self.name}: no answer within {self.open_timeout:g} s",
                              "check the camera's address and that it is on") from None
        except (OSError, http.client.HTTPException) as exc:
            raise CameraError(f"cannot open {self.name}: {exc}",
                              "check the camera's address, port and path") from None
        self._conn = conn
        try:
            self._check(resp, user)
        except CameraError:
            self.close()
            raise
        if self._sock is not None:
            self._sock.settimeout(self.read_timeout)
        self._resp = resp

    def _get(self, scheme: str, netloc: str, target: str, auth: str | None,
             ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        cls = http.client.HTTPSConnection if scheme.lower() == "https" else http.client.HTTPConnection
        conn = cls(netloc, timeout=self.open_timeout)
        conn.request("GET", target, headers={"Authorization": auth} if auth else {})
        # Kept before getresponse(): a response that lasts until the connection closes (a stream) takes the
        # socket over and the connection forgets it, but its read timeout and interrupt() need it.
        self._sock = conn.sock
        return conn, conn.getresponse()

    def _check(self, resp: http.client.HTTPResponse, user: str | None) -> None:
        if resp.status == 401:
            if user is None:
                raise CameraError(f"cannot open {self.name}: the camera asks for credentials (401 Unauthorized)",
                                  "put them into camera.source: http://USER:PASSWORD@host/path")
            raise CameraError(f"cannot open {self.name}: the camera rejected the credentials of user '{user}' "
                              "(401 Unauthorized)", "check the user name and password in camera.source")
        if resp.status != 200:
            raise CameraError(f"cannot open {self.name}: HTTP {resp.status} {resp.reason}", "check the URL's path")
        ctype = resp.headers.get_content_type()
        boundary = resp.headers.get_param("boundary")
        if ctype != "multipart/x-mixed-replace" or not isinstance(boundary, str) or not boundary:
            raise CameraError(f"cannot open {self.name}: not an MJPEG stream (Content-Type {ctype})",
                              "use the camera's MJPEG stream URL (not a snapshot or web page), or its rtsp:// URL")
        self._boundary = b"--" + boundary.strip('"').removeprefix("--").encode("latin-1")

    def grab(self) -> tuple[np.ndarray, float | None] | None:
        data = self._part()
        try:
            image = decode_image(data, self.name, self.max_pixels)
        except ImageError as exc:
            self._bad += 1
            if self._bad >= GARBAGE_PARTS:
                raise CameraError(f"{self.name}: {self._bad} parts in a row are not images ({exc})") from None
            return None
        self._bad = 0
        return image, None

    def _part(self) -> bytes:
        """The body of the next part: by its Content-Length, else up to the next boundary line."""
        resp = self._resp
        if resp is None:
            raise CameraError(f"{self.name}: not open")
        try:
            if not self._after_boundary:
                line = self._line(resp)
                while line.strip() != self._boundary:  # the preamble, or the CRLF that ends the previous part
                    if line.strip() == self._boundary + b"--" or line == b"":
                        raise CameraError(f"{self.name}: the stream ended")
                    line = self._line(resp)
            self._after_boundary = False
            length = None
            for _ in range(MAX_HEADER_LINES):
                line = self._line(resp)
                if not line.strip():
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length" and value.strip().isdigit():
                    length = int(value.strip())
            else:
                raise CameraError(f"{self.name}: a part with more than {MAX_HEADER_LINES} header lines")
            if length is not None:
                if length > MAX_PART_BYTES:
                    raise CameraError(f"{self.name}: a part of {length} bytes (more than {MAX_PART_BYTES})")
                data = resp.read(length)
                if len(data) < length:
                    raise CameraError(f"{self.name}: the stream ended inside a frame")
                return data
            body = bytearray()
            while True:  # no length: the part ends at the next boundary line (then already read)
                line = self._line(resp)
                if line == b"":
                    raise CameraError(f"{self.name}: the stream ended inside a frame")
                if line.strip() == self._boundary:
                    self._after_boundary = True
                    return bytes(body).removesuffix(b"\r\n")
                body += line
                if len(body) > MAX_PART_BYTES:
                    raise CameraError(f"{self.name}: a part of more than {MAX_PART_BYTES} bytes")
        except TimeoutError:
            raise CameraError(f"{self.name}: no data for {self.read_timeout:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise CameraError(f"{self.name}: {exc}") from None

    def _line(self, resp: http.client.HTTPResponse) -> bytes:
        return resp.readline(MAX_PART_BYTES)

    def interrupt(self) -> None:
        """Wake a blocked read now: shutting the socket down makes it return at once."""
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
