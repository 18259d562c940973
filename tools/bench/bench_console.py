#!/usr/bin/env python3
"""Console isolation figures: decision latency with N clients streaming the live view vs none, in one run.

Same scene and gallery as tools/bench/bench_service.py (30 fps replay, background then the enrolled visitor, a gallery
of N random persons plus the visitor, MockFactory relay, MQTT off), with ``[web] enabled``. Runs alternate
between 0 and ``--clients`` MJPEG viewers (each logged in, reading ``/api/live.mjpg`` as fast as it comes), so
both conditions see the same machine load. Each run is a fresh process, so the RSS figures (sampled VmRSS
while it runs, and the peak) are the service's own with the console on; also the JPEGs the viewers received.

    python tools/bench/bench_console.py --persons 10000 --runs 5 --clients 2
"""

from __future__ import annotations

import argparse
import http.client
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]

from facegate.config import parse_config
from facegate.service import Service
from facegate.web.accounts import UserStore
from gpiozero.pins.mock import MockFactory

from tools.bench.bench_service import BACKGROUND_FRAMES, TimedSource, build
from tools.net import free_port

PASSWORD = "bench password"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Viewer(threading.Thread):
    """A logged-in browser-like client reading the MJPEG live view until stopped."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.frames, self.bytes = port, 0, 0
        self.stop = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("POST", "/api/login", json.dumps({"user": "bench", "password": PASSWORD}),
                             {"Content-Type": "application/json"})
                res = conn.getresponse()
                res.read()
                cookie = (res.getheader("Set-Cookie") or "").split(";")[0]
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/api/live.mjpg", headers={"Cookie": cookie})
                stream = conn.getresponse()
                self.ready.set()
                while not self.stop.is_set():
                    chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
                    if not chunk:
                        break
                    self.bytes += len(chunk)
                    self.frames += chunk.count(b"--frame\r\n")
                conn.close()
            except OSError:
                time.sleep(0.1)  # the service is starting or stopping


def run_once(tmp: Path, frames: Path, db: Path, clients: int, threads: int, port: int, state: Path) -> dict[str, Any]:
    """One service run (in its own process); the viewers are in the parent process, like browsers would be."""
    config = parse_config({
        "device_id": "bench", "state_dir": str(state),
        "camera": {"source": f"replay:{frames}", "fps": 30}, "gallery": {"path": str(db)},
        "models": {"threads": threads}, "door": {"relay_pin": 17, "unlock_seconds": 1},
        "mqtt": {"enabled": False}, "outbox": {"flush_timeout_seconds": 0}, "liveness": {"enabled": False},
        "journal": {"enabled": False}, "web": {"enabled": True, "port": port},
    })
    source = TimedSource(frames, 30)
    service = Service(config, pin_factory=MockFactory(), source=source)
    unlocked: list[float] = []
    service.emitter.add_listener(lambda e: unlocked.append(time.perf_counter()) if e["type"] == "door_unlocked"
                                 else None)
    assert service.web is not None and service.console is not None
    service.web.start()  # before run() (which starts it again: a no-op), so viewers are streaming from frame one
    console = service.console
    deadline = time.monotonic() + 20
    while console.streams < clients and time.monotonic() < deadline:
        time.sleep(0.05)
    connected = console.streams
    rss = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss[0] = max(rss[0], rss_mb())
            time.sleep(0.1)

    threading.Thread(target=sample, daemon=True).start()
    service.run()
    done.set()
    first_face = source.delivered[f"{BACKGROUND_FRAMES:04d}.jpg"]
    return {"latency_ms": (unlocked[0] - first_face) * 1000 if unlocked else None, "rss_mb": rss[0],
            "viewers_connected": connected,
            "jpegs_encoded": console.encoders["live"].encoded}


def one_run_in_a_process(tmp: Path, frames: Path, db: Path, clients: int, threads: int) -> dict[str, Any]:
    """A fresh process per run, so its RSS is the service's alone (not the gallery builder's, not earlier runs')."""
    port = free_port()
    state = tmp / f"state-{time.monotonic_ns()}"
    UserStore(state).add("bench", "viewer", PASSWORD)
    viewers = [Viewer(port) for _ in range(clients)]
    for v in viewers:
        v.start()
    try:
        out = subprocess.run([sys.executable, __file__, "--one", str(tmp), str(frames), str(db), str(clients),
                              str(threads), str(port), str(state)], capture_output=True, text=True, check=True).stdout
    finally:
        for v in viewers:
            v.stop.set()
    result = dict(json.loads(out.strip().splitlines()[-1]))
    result["jpegs"] = sum(v.frames for v in viewers)
    return result


def main() -> int:
    if len(sys.argv) == 9 and sys.argv[1] == "--one":
        tmp, frames, db = (Path(p) for p in sys.argv[2:5])
        result = run_once(tmp, frames, db, int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), Path(sys.argv[8]))
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--persons", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5, help="runs per condition (alternating)")
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    results: dict[int, list[dict[str, Any]]] = {0: [], args.clients: []}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        frames, db = build(tmp, args.persons, None)
        for _ in range(args.runs):
            for clients in (0, args.clients):
                results[clients].append(one_run_in_a_process(tmp, frames, db, clients, args.threads))

    def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
        lat = [r["latency_ms"] for r in runs if r["latency_ms"] is not None]
        return {"granted_runs": f"{len(lat)}/{len(runs)}",
                "latency_ms_median": round(statistics.median(lat), 1) if lat else None,
                "latency_ms_all": [round(v, 1) for v in lat],
                "service_rss_mb_max": round(max(r["rss_mb"] for r in runs), 1),
                "service_peak_rss_mb_max": round(max(r["peak_rss_mb"] for r in runs), 1),
                "jpegs_received": sum(r["jpegs"] for r in runs),
                "viewers_connected_at_start": [r["viewers_connected"] for r in runs]}

    base, loaded = summary(results[0]), summary(results[args.clients])
    change = None
    if base["latency_ms_median"] and loaded["latency_ms_median"]:
        change = round(100 * (loaded["latency_ms_median"] / base["latency_ms_median"] - 1), 1)
    print(json.dumps({"gallery_persons": args.persons + 1, "replay_fps": 30, "threads": args.threads,
                      "no_viewers": base, f"{args.clients}_viewers": loaded, "latency_change_percent": change},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
