"""The console's long-lived responses: the camera as MJPEG and the event feed as server-sent events.

Each holds a stream slot (facegate.web.streamslots) and ends as soon as the console stops, an admin takes its slot,
or its session ends (checked every ``SESSION_RECHECK_SECONDS``); a client that stops reading is dropped.
"""

from __future__ import annotations

import queue
import ssl
import time
from http.server import BaseHTTPRequestHandler

from facegate.web.console import Console, dumps
from facegate.web.httpjson import HttpError
from facegate.web.pages import SECURITY_HEADERS
from facegate.web.sessions import Session
from facegate.web.streamslots import Ticket

STREAM_WRITE_TIMEOUT_SECONDS = 5.0
SSE_KEEPALIVE_SECONDS = 15.0
MAX_EVENT_STREAMS = 16
MAX_TERMINAL_STREAMS = 2  # the door screen's camera, apart from the viewers' max_stream_clients
SESSION_RECHECK_SECONDS = 0.5  # any stream ends this soon after its session does (logout, passwd, remove)


class StreamRoutes(BaseHTTPRequestHandler):
    """Mixed into the console's request handler, which supplies the console, the session and the extra headers."""

    @property
    def console(self) -> Console:
        raise NotImplementedError

    def _session(self) -> Session | None:
        raise NotImplementedError

    def _extra_headers(self) -> dict[str, str]:
        raise NotImplementedError

    def _start_stream(self, content_type: str) -> None:
        self.send_response(200)
        for key, value in {**SECURITY_HEADERS, **self._extra_headers()}.items():
            self.send_header(key, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        self.connection.settimeout(STREAM_WRITE_TIMEOUT_SECONDS)  # a client that stops reading is dropped

    def _mjpeg(self, view: str, session: Session | None) -> None:
        """The camera as MJPEG; ``session`` None is the door screen's stream (loopback only, no login)."""
        if self.command == "HEAD":
            self._start_stream("multipart/x-mixed-replace; boundary=frame")
            return
        console = self.console
        kind, limit = ("camera", console.config.max_stream_clients) if session is not None else \
            ("terminal", MAX_TERMINAL_STREAMS)
        ticket = self._stream_ticket(kind, limit, session)
        encoder = console.encoders[view]
        encoder.attach()
        dropped = False
        try:
            self._start_stream("multipart/x-mixed-replace; boundary=frame")
            seq = 0
            last_check = time.monotonic()
            while True:
                recheck = session is not None and self._recheck_due(last_check)
                if recheck:
                    last_check = time.monotonic()
                if not self._stream_goes_on(ticket, recheck):
                    break
                got = encoder.wait_jpeg(seq, timeout=SESSION_RECHECK_SECONDS)
                if got is None:
                    continue
                seq, jpeg = got
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                 + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                self.wfile.flush()
        except (TimeoutError, BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            dropped = True
        finally:
            encoder.detach()
            console.release_stream(ticket, dropped)

    def _events(self, session: Session) -> None:
        if self.command == "HEAD":
            self._start_stream("text/event-stream")
            return
        console = self.console
        ticket = self._stream_ticket("events", MAX_EVENT_STREAMS, session)
        sub = console.hub.subscribe()
        dropped = False
        try:
            self._start_stream("text/event-stream")
            self.wfile.write(b"retry: 2000\n\n")
            self.wfile.flush()
            last_check = last_write = time.monotonic()
            while not sub.dropped:
                recheck = self._recheck_due(last_check)
                if recheck:
                    last_check = time.monotonic()
                if not self._stream_goes_on(ticket, recheck):
                    break
                try:
                    event = sub.queue.get(timeout=SESSION_RECHECK_SECONDS)
                    self.wfile.write(b"data: " + dumps(event) + b"\n\n")
                except queue.Empty:  # a keep-alive now and then
                    if time.monotonic() - last_write < SSE_KEEPALIVE_SECONDS:
                        continue
                    self.wfile.write(b": keep-alive\n\n")
                last_write = time.monotonic()
                self.wfile.flush()
            dropped = sub.dropped
        except (TimeoutError, BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            dropped = True
        finally:
            console.hub.unsubscribe(sub)
            console.release_stream(ticket, dropped)

    def _stream_ticket(self, kind: str, limit: int, session: Session | None) -> Ticket:
        ticket = self.console.acquire_stream(limit, kind, session.user if session else None,
                                             session is not None and session.role == "admin")
        if ticket is None:
            raise HttpError(503, f"too many {kind} streams" + (" for this account" if session else ""),
                            {"Retry-After": "5"})
        return ticket

    @staticmethod
    def _recheck_due(last_check: float) -> bool:
        return time.monotonic() - last_check >= SESSION_RECHECK_SECONDS

    def _stream_goes_on(self, ticket: Ticket, recheck_session: bool) -> bool:
        """False once the console stops, an admin took this stream's slot, or (checked every
        ``SESSION_RECHECK_SECONDS``) its session ended: logout, expiry, password changed, user removed."""
        if self.console.stopping.is_set() or ticket.stop.is_set():
            return False
        return not recheck_session or self._session() is not None
