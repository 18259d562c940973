"""The serial line under LibOSDP: a tty (a USB RS-485 adapter, or the Pi's UART with a transceiver) in raw
mode at the configured baud rate, non-blocking, as LibOSDP's channel interface wants (read/write/flush).

An adapter can be unplugged and come back: every I/O error closes the device, and it is reopened at most
once a second; meanwhile reads return nothing and writes are dropped, so LibOSDP sees a silent line and
reports the link offline on its own. ``error`` holds the last open/I-O error for the status.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import termios
import threading
import time
from typing import Any

import osdp

log = logging.getLogger(__name__)

REOPEN_SECONDS = 1.0
_BAUD = {9600: termios.B9600, 19200: termios.B19200, 38400: termios.B38400, 57600: termios.B57600,
         115200: termios.B115200, 230400: termios.B230400}


def _raw(fd: int, baud: int) -> None:
    """8N1, raw, no flow control, no modem control lines, at ``baud``."""
    attrs: list[Any] = termios.tcgetattr(fd)
    attrs[0] = 0  # iflag: no break/parity/CR/XON handling
    attrs[1] = 0  # oflag: no output processing
    attrs[2] = termios.CS8 | termios.CREAD | termios.CLOCAL  # cflag: 8 data bits, receiver on, ignore modem lines
    attrs[3] = 0  # lflag: no echo, not canonical, no signals
    attrs[4] = attrs[5] = _BAUD[baud]
    attrs[6][termios.VMIN] = 0
    attrs[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


class SerialChannel(osdp.Channel):  # type: ignore[misc]  # LibOSDP ships no type information
    def __init__(self, path: str, baud: int) -> None:
        super().__init__()
        if baud not in _BAUD:
            raise ValueError(f"unsupported baud rate {baud}")
        self.path, self.baud = path, baud
        self._fd: int | None = None
        self._next_open = 0.0
        self._lock = threading.Lock()
        self.error: str | None = None
        self.last_rx: float | None = None  # monotonic time bytes last arrived

    def _ensure_open(self) -> int | None:
        if self._fd is not None:
            return self._fd
        now = time.monotonic()
        if now < self._next_open:
            return None
        self._next_open = now + REOPEN_SECONDS
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as exc:
            self._set_error(f"cannot open {self.path}: {exc.strerror}")
            return None
        try:
            _raw(fd, self.baud)
            termios.tcflush(fd, termios.TCIOFLUSH)
        except (OSError, termios.error) as exc:
            os.close(fd)
            self._set_error(f"{self.path} is not a usable serial port: {exc}")
            return None
        self._fd = fd
        if self.error is not None:
            log.info("OSDP serial port %s is back", self.path)
        self.error = None
        return fd

    def _set_error(self, text: str) -> None:
        if text != self.error:
            log.warning("OSDP: %s", text)
        self.error = text

    def _fail(self, exc: OSError) -> None:
        self._set_error(f"{self.path}: {exc.strerror or exc}")
        self.close()

    def read(self, max_bytes: int) -> bytes:
        with self._lock:
            fd = self._ensure_open()
            if fd is None:
                return b""
            try:
                data = os.read(fd, max_bytes)
            except BlockingIOError:
                return b""
            except OSError as exc:
                if exc.errno == errno.EAGAIN:
                    return b""
                self._fail(exc)
                return b""
            if data:
                self.last_rx = time.monotonic()
            return data

    def write(self, buf: bytes) -> int:
        with self._lock:
            fd = self._ensure_open()
            if fd is None:
                return len(buf)  # dropped, as on a cut line: LibOSDP notices the missing replies
            try:
                return os.write(fd, buf)
            except BlockingIOError:
                return 0
            except OSError as exc:
                self._fail(exc)
                return len(buf)

    def flush(self) -> None:
        with self._lock:
            if self._fd is not None:
                with contextlib.suppress(OSError, termios.error):
                    termios.tcflush(self._fd, termios.TCIFLUSH)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
