"""LibOSDP's own control panel for one reader, over the master end of a pty pair: the panel a door's OSDP reader
(facegate/panel/osdp_pd.py) answers in the tests and in tools/bench/bench_osdp.py.

The door opens the pty's other end by its device path, exactly as it opens an RS-485 adapter; ``CutChannel.cut``
drops everything both ways, like a cut pair.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import osdp

KEY = bytes.fromhex("8c1f5a2e9b7d4c3a0f6e1d2c3b4a5968")  # the secure channel base key both sides are given
ADDRESS = 1


class CutChannel(osdp.Channel):  # type: ignore[misc]
    """The panel's end of the pty; ``cut`` drops everything both ways, like a cut RS-485 pair."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        self.cut = False
        os.set_blocking(fd, False)

    def read(self, max_bytes: int) -> bytes:
        try:
            data = os.read(self.fd, max_bytes)
        except OSError:  # EAGAIN, or EIO while the door has the port closed
            return b""
        return b"" if self.cut else data

    def write(self, buf: bytes) -> int:
        if self.cut:
            return len(buf)
        try:
            return os.write(self.fd, buf)
        except BlockingIOError:
            return 0

    def flush(self) -> None:
        pass


class Panel:
    """LibOSDP's control panel for one reader at ADDRESS."""

    def __init__(self, master_fd: int, key: bytes | None, install: bool = False) -> None:
        self.channel = CutChannel(master_fd)
        # A panel (re)starts with an empty UART: drop what an earlier session left in the pty.
        time.sleep(0.3)
        while self.channel.read(4096):
            pass
        flags = [osdp.LibFlag.InstallMode] if install else [osdp.LibFlag.EnforceSecure]
        self.cp = osdp.ControlPanel([osdp.PDInfo(ADDRESS, self.channel, scbk=key, flags=flags)],
                                    log_level=osdp.LogLevel.Error)
        self.cp.start()
        self.received: list[dict[str, Any]] = []

    def events(self, timeout: float = 0.2) -> list[dict[str, Any]]:
        while (event := self.cp.get_event(ADDRESS, timeout=timeout)) is not None:
            self.received.append(event)
        return self.received

    def card_reads(self) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["event"] == osdp.Event.CardRead]

    def close(self) -> None:
        self.cp.teardown()


def h10301(data: bytes, length: int) -> tuple[int, int]:
    """Facility code and card number of a 26-bit H10301 frame, parity checked, straight from the format."""
    assert length == 26
    bits = [(data[i // 8] >> (7 - i % 8)) & 1 for i in range(26)]
    assert (bits[0] + sum(bits[1:13])) % 2 == 0, "even parity over bits 1-12"
    assert (bits[25] + sum(bits[13:25])) % 2 == 1, "odd parity over bits 13-24"
    return int("".join(map(str, bits[1:9])), 2), int("".join(map(str, bits[9:25])), 2)


def write_key(path: Path, key: bytes) -> Path:
    path.write_text(key.hex() + "\n")
    return path
