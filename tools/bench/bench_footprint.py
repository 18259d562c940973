#!/usr/bin/env python3
"""What `facegate run` costs a small Pi: peak RSS with a big gallery, start-up to the first frame, and where the
memory goes.

    python tools/bench/bench_footprint.py --persons 10000            # /usr/bin/time -v on the real CLI
    python tools/bench/bench_footprint.py --persons 10000 --breakdown # RSS after each import and each part

The service runs as a user would start it (`facegate run --config FILE`, a new process) on a replay of the
enrolled visitor, with a gallery of N random persons plus the visitor, mock pins, liveness on (the default),
and MQTT to a private Mosquitto on a free loopback port (--no-mqtt: off). Peak RSS is `/usr/bin/time -v`'s
"Maximum resident set size"; start-up is the service's own
"first frame ... after the process started" log line.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]
from tools.mosquitto import Mosquitto

BREAKDOWN = r"""
import sys, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
last = rss()
print(f"start            {last:7.1f} MB")
def mark(name):
    global last
    now = rss()
    print(f"{name:<16} {now:7.1f} MB  (+{now - last:.1f})")
    last = now
import numpy; mark("numpy")
import cv2; mark("cv2")
import ai_edge_litert.interpreter; mark("ai_edge_litert")
import pydantic, gpiozero; mark("pydantic+gpiozero")
import paho.mqtt.client; mark("paho (MQTT on)")
import facegate.service; mark("facegate.service")
from facegate.config import load_config
from facegate.wiring.recognition import build_pipeline
config = load_config(sys.argv[1])
pipeline = build_pipeline(config); mark("interpreters")
from facegate.gallery.store import Gallery
g = Gallery(config.gallery_path); mark("gallery open")
index = g.build_index(); mark("gallery index")
names = g.names(); mark("gallery names")
print(f"index matrix     {index._matrix.nbytes / 2**20:7.1f} MB ({index._matrix.dtype}, {index.templates} rows)")
"""


def run_cli(config: Path) -> dict[str, object]:
    facegate = Path(sys.executable).with_name("facegate")
    proc = subprocess.run(["/usr/bin/time", "-v", str(facegate), "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=600)
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", proc.stderr)
    first = cpu = None
    granted = False
    for line in proc.stdout.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        m = re.match(r"first frame ([0-9.]+) s after .*\(([0-9.]+) s of CPU\)", str(row.get("msg", "")))
        if m and first is None:
            first, cpu = float(m.group(1)), float(m.group(2))
        granted = granted or (row.get("event") or {}).get("type") == "access_granted"
    return {"exit": proc.returncode, "peak_rss_mb": round(int(peak.group(1)) / 1024, 1) if peak else None,
            "first_frame_seconds": first,
            "first_frame_cpu_seconds": cpu, "access_granted": granted, "wall": wall.group(1) if wall else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--persons", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--breakdown", action="store_true", help="RSS after each import and part (one process)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-mqtt", action="store_true", help="MQTT off (default: a private loopback Mosquitto)")
    ap.add_argument("--plain", action="store_true", help="[privacy] encrypt = false (default: the gallery sealed)")
    args = ap.parse_args()
    from tools.bench.bench_service import build

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        frames, db = build(tmp, args.persons, None)
        config = tmp / "facegate.toml"
        broker = None if args.no_mqtt else Mosquitto().start()
        mqtt = "enabled = false" if broker is None else f'host = "127.0.0.1"\nport = {broker.port}'
        config.write_text(f'device_id = "bench"\nstate_dir = "{tmp / "state"}"\n[camera]\nsource = "replay:{frames}"\n'
                          f'fps = 30\n[gallery]\npath = "{db}"\n[models]\nthreads = {args.threads}\n'
                          '[door]\npin_factory = "mock"\nunlock_seconds = 1\n'
                          f'[mqtt]\n{mqtt}\n'
                          '[outbox]\nflush_timeout_seconds = 0\n'
                          f'[privacy]\nencrypt = {str(not args.plain).lower()}\nkey_file = "{tmp / "privacy.key"}"\n')
        try:
            if args.breakdown:
                subprocess.run([sys.executable, "-c", BREAKDOWN, str(config)], check=True)
                return 0
            runs = [run_cli(config) for _ in range(args.runs)]
        finally:
            if broker is not None:
                broker.close()
    for r in runs:
        print(json.dumps({"persons": args.persons + 1, "mqtt": not args.no_mqtt, "encrypted": not args.plain, **r}))
    return 0 if all(r["exit"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
