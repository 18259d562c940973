"""Damaged state for the fault tests: an outbox left by an earlier run, and the ways a database file breaks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from facegate.events.outbox import Outbox

from support.scenes import DEVICE


def old_outbox(path: Path, n: int) -> list[dict[str, Any]]:
    """An outbox left by an earlier run with ``n`` undelivered events (padded so they span many pages)."""
    events = [{"event_id": f"old-{i:04d}", "seq": i + 1, "ts": "2026-01-01T00:00:00.000Z", "device_id": DEVICE,
               "type": "access_granted", "pad": "x" * 300} for i in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with Outbox(path, 100_000) as box:
        for e in events:
            box.next_seq()
            box.append(e)
    return events


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage_header":
        data[:100] = os.urandom(100)
        path.write_bytes(data)
    else:  # pages overwritten in the middle, the header intact
        mid = len(data) // 2
        data[mid: mid + 8192] = b"\xa5" * 8192
        path.write_bytes(data)
