"""Wiegand transmitter timing in Linux user space: pulse widths and leading-edge intervals as gpiozero's
MockPin records them (time.monotonic at each state change), over many frames.

    python tools/bench/bench_wiegand.py [--frames 50] [--format 26] [--busy-thread] [--realtime]

``--busy-thread`` runs a competing pure-Python thread (as the service's frame loop, MQTT and door threads
are), which is what makes the interpreter lock, not the kernel, the main source of jitter.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import threading
import time
from typing import Any

from facegate.config import WiegandConfig
from facegate.panel.wiegand import FORMATS, encode
from facegate.panel.wiegand_tx import WiegandOutput, try_realtime_priority
from gpiozero.pins.mock import MockFactory


def spans(pin: Any) -> list[tuple[float, float]]:
    t, out, start = 0.0, [], None
    for st in pin.states:
        t += st.timestamp
        if st.state and start is None:
            start = t
        elif not st.state and start is not None:
            out.append((start, t - start))
            start = None
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--format", choices=["26", "34"], default="26")
    ap.add_argument("--pulse-width-us", type=int, default=100)
    ap.add_argument("--pulse-interval-us", type=int, default=2000)
    ap.add_argument("--busy-thread", action="store_true")
    ap.add_argument("--realtime", action="store_true",
                    help="SCHED_FIFO for the sending thread (needs root or CAP_SYS_NICE)")
    args = ap.parse_args()
    factory = MockFactory()
    config = WiegandConfig(data0_pin=23, data1_pin=24, format=args.format, pulse_width_us=args.pulse_width_us,
                           pulse_interval_us=args.pulse_interval_us)
    out = WiegandOutput(config, lambda *a, **k: None, pin_factory=factory)
    stop = threading.Event()
    if args.busy_thread:
        def spin() -> None:
            n = 0
            while not stop.is_set():
                n += 1
        threading.Thread(target=spin, daemon=True).start()
    if args.realtime and not try_realtime_priority():
        raise SystemExit("could not get SCHED_FIFO")
    widths: list[float] = []
    intervals: list[float] = []
    bad_frames = 0
    for i in range(args.frames):
        for p in (factory.pin(23), factory.pin(24)):
            p.clear_states()
        out.transmit(encode(FORMATS[args.format], 1, i))
        merged = sorted(spans(factory.pin(23)) + spans(factory.pin(24)))
        w = [s[1] * 1e6 for s in merged]
        gaps = [(b[0] - a[0]) * 1e6 for a, b in itertools.pairwise(merged)]
        widths += w
        intervals += gaps
        if max(gaps) > 10_000 or min(w) < 20:  # a gap a panel would take as end of frame, a pulse it may miss
            bad_frames += 1
        time.sleep(0.05)
    stop.set()
    out.close()
    report = {"frames": args.frames, "format": args.format, "busy_thread": args.busy_thread, "realtime": args.realtime,
              "pulse_width_us": {"set": args.pulse_width_us, "median": round(statistics.median(widths), 1),
                                 "p99": round(pct(widths, 0.99), 1), "min": round(min(widths), 1),
                                 "max": round(max(widths), 1)},
              "interval_us": {"set": args.pulse_interval_us, "median": round(statistics.median(intervals), 1),
                              "p99": round(pct(intervals, 0.99), 1), "min": round(min(intervals), 1),
                              "max": round(max(intervals), 1)},
              "frames_out_of_panel_tolerance": bad_frames}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
