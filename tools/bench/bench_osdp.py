"""OSDP timings against LibOSDP's own control panel over a pty pair (tools/osdp_panel.py, as the OSDP tests use
it): secure-channel set-up after the panel starts, and card-read latency from ``send_credential`` to the event at
the panel.

    python tools/bench/bench_osdp.py [--reads 20] [--baud 9600]

The pty has no baud rate of its own (bytes move at memory speed); on RS-485 add the wire time: a 26-bit card
read in Secure Channel is ~30 bytes, ~31 ms at 9600 baud.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import tty
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]
import osdp
from facegate.access.door import Door
from facegate.config import DoorConfig, OsdpConfig
from facegate.panel.osdp_pd import OsdpReader
from gpiozero.pins.mock import MockFactory

from tools.osdp_panel import ADDRESS, KEY, Panel, write_key


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reads", type=int, default=20)
    ap.add_argument("--baud", type=int, default=9600)
    args = ap.parse_args()
    master, slave = os.openpty()
    tty.setraw(master)
    factory = MockFactory()
    events: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        door = Door(DoorConfig(relay_pin=17), lambda t, **f: events.append((t, f)), pin_factory=factory)
        reader = OsdpReader(OsdpConfig(port=os.ttyname(slave), baud=args.baud,
                                       scbk_file=write_key(Path(tmp) / "scbk", KEY)),
                            lambda t, **f: events.append((t, f)), door)
        reader.start()
        t0 = time.monotonic()
        panel = Panel(master, KEY)
        while not panel.cp.is_sc_active(ADDRESS):
            if time.monotonic() - t0 > 20:
                raise SystemExit("no secure channel in 20 s")
            time.sleep(0.005)
        sc_seconds = time.monotonic() - t0 - 0.3  # Panel() spends 0.3 s draining the pty first
        latencies = []
        for i in range(args.reads):
            start = time.monotonic()
            reader.send_credential("bench", i)
            while (event := panel.cp.get_event(ADDRESS, timeout=5)) is not None:
                if event["event"] == osdp.Event.CardRead:
                    latencies.append((time.monotonic() - start) * 1000)
                    break
            time.sleep(0.1)
        panel.close()
        reader.close()
        door.close()
    os.close(slave)
    os.close(master)
    print(json.dumps({"secure_channel_seconds": round(sc_seconds, 2), "reads": len(latencies),
                      "card_read_ms": {"median": round(statistics.median(latencies), 1),
                                       "max": round(max(latencies), 1)}}))


if __name__ == "__main__":
    main()
