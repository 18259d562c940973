#!/usr/bin/env python3
"""The console under a login burst and a connection flood: the service's memory, and whether the door screen
is still answered.

Starts a real service with the console (its own process: 30 fps replay of tools/bench/bench_service.py's scene,
MockFactory relay, MQTT off, plain HTTP on loopback), then:

1. idle: the service's VmRSS, sampled for a few seconds (median);
2. ``--bursts`` times: 64 parallel wrong logins, 8 from each of 8 loopback addresses (client sockets bound to
   127.0.0.2 .. 127.0.0.9); the service's peak RSS (VmHWM, reset before each burst, and VmRSS sampled every
   10 ms) against idle, the RSS a few seconds after, and the answers (401 / 429 / other);
3. a connection flood: ``--flood-per-address`` idle TCP connections from each of the 8 addresses, re-opened as
   soon as the server closes them, for ``--flood-seconds``; meanwhile ``/terminal/state`` is polled from
   127.0.0.1 every 0.25 s (what the door screen does): how many polls were answered 200.

    python tools/bench/bench_login_burst.py --bursts 3

Goals: peak RSS within 30 MB of idle; every poll answered.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]

from tools.net import free_port

SOURCES = [f"127.0.0.{i}" for i in range(2, 10)]
PASSWORD = "bench password 1"


def serve(frames: Path, db: Path, port: int, state: Path) -> int:
    """The child: the service, until SIGTERM."""
    from facegate.config import parse_config
    from facegate.service import Service
    from gpiozero.pins.mock import MockFactory

    config = parse_config({
        "device_id": "bench", "state_dir": str(state),
        "camera": {"source": f"replay:{frames}", "fps": 30, "loop": True}, "gallery": {"path": str(db)},
        "door": {"relay_pin": 17, "unlock_seconds": 1}, "mqtt": {"enabled": False},
        "outbox": {"flush_timeout_seconds": 0}, "liveness": {"enabled": False}, "journal": {"enabled": False},
        "web": {"enabled": True, "port": port},
    })
    service = Service(config, pin_factory=MockFactory())
    signal.signal(signal.SIGTERM, lambda *_: service.stop_event.set())
    return service.run()


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def request(port: int, method: str, path: str, body: Any = None, source: str | None = None,
            timeout: float = 10) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, data, {"Content-Type": "application/json"} if data else {})
        res = conn.getresponse()
        res.read()
        return res.status
    except (OSError, http.client.HTTPException):
        return 0  # refused or closed: no answer
    finally:
        conn.close()


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_kb, self.stop = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak_kb = max(self.peak_kb, status_kb(self.pid, "VmRSS"))
            time.sleep(0.01)


def burst(port: int, pid: int, idle_kb: int, per_address: int) -> dict[str, Any]:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    sampler = Sampler(pid)
    sampler.start()
    jobs = [s for s in SOURCES for _ in range(per_address)]
    started = time.monotonic()
    with ThreadPoolExecutor(len(jobs)) as pool:
        statuses = list(pool.map(lambda s: request(port, "POST", "/api/login",
                                                   {"user": "bench", "password": "wrong"}, s), jobs))
    seconds = time.monotonic() - started
    time.sleep(0.5)
    sampler.stop.set()
    sampler.join()
    peak = max(status_kb(pid, "VmHWM"), sampler.peak_kb)
    time.sleep(3)
    after = status_kb(pid, "VmRSS")
    return {"logins": len(jobs), "seconds": round(seconds, 2),
            "answers": {str(code): statuses.count(code) for code in sorted(set(statuses))},
            "peak_rss_delta_mb": round((peak - idle_kb) / 1024, 1),
            "rss_delta_3s_after_mb": round((after - idle_kb) / 1024, 1)}


def flood(port: int, per_address: int, seconds: float) -> dict[str, Any]:
    stop = threading.Event()
    opened = [0]

    def hold(source: str) -> None:
        held: list[socket.socket] = []
        while not stop.is_set():
            alive = []
            for s in held:  # the server closed it (idle too long, or refused): open another
                try:
                    if s.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b"":
                        s.close()
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    s.close()
                    continue
                alive.append(s)
            held = alive
            while len(held) < per_address and not stop.is_set():
                s = socket.socket()
                try:
                    s.bind((source, 0))
                    s.connect(("127.0.0.1", port))
                except OSError:
                    s.close()
                    break
                held.append(s)
                opened[0] += 1
            time.sleep(0.05)
        for s in held:
            s.close()

    threads = [threading.Thread(target=hold, args=(s,), daemon=True) for s in SOURCES]
    for t in threads:
        t.start()
    time.sleep(1.0)  # the flood is up
    polls: list[int] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        polls.append(request(port, "GET", "/terminal/state", timeout=5))
        time.sleep(0.25)
    other = request(port, "GET", "/login", source="127.0.0.20", timeout=5)
    stop.set()
    for t in threads:
        t.join()
    return {"connections_per_address": per_address, "addresses": len(SOURCES), "seconds": seconds,
            "connections_opened": opened[0], "terminal_polls": len(polls), "terminal_polls_answered": polls.count(200),
            "another_address_login_page": other}


def main() -> int:
    if len(sys.argv) == 6 and sys.argv[1] == "--serve":
        return serve(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5]))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--persons", type=int, default=1000, help="random persons in the gallery")
    ap.add_argument("--bursts", type=int, default=3)
    ap.add_argument("--per-address", type=int, default=8, help="parallel logins per address in a burst")
    ap.add_argument("--flood-per-address", type=int, default=32)
    ap.add_argument("--flood-seconds", type=float, default=10.0)
    args = ap.parse_args()

    from facegate.web.accounts import UserStore

    from tools.bench.bench_service import build

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        frames, db = build(tmp, args.persons, None)
        state = tmp / "state"
        UserStore(state).add("bench", "admin", PASSWORD)
        port = free_port()
        child = subprocess.Popen([sys.executable, __file__, "--serve", str(frames), str(db), str(port), str(state)])
        try:
            deadline = time.monotonic() + 60
            while request(port, "GET", "/login", timeout=2) != 200:
                if time.monotonic() > deadline or child.poll() is not None:
                    raise SystemExit("the service did not come up")
                time.sleep(0.2)
            time.sleep(3)  # settle: encoders, first frames
            samples = []
            for _ in range(20):
                samples.append(status_kb(child.pid, "VmRSS"))
                time.sleep(0.1)
            idle_kb = int(statistics.median(samples))
            bursts = [burst(port, child.pid, idle_kb, args.per_address) for _ in range(args.bursts)]
            flooded = flood(port, args.flood_per_address, args.flood_seconds)
            good = request(port, "POST", "/api/login", {"user": "bench", "password": PASSWORD}, "127.0.0.30")
        finally:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(child.pid, signal.SIGKILL)
                child.wait()
    goals = {"peak_rss_within_30mb": all(b["peak_rss_delta_mb"] <= 30 for b in bursts),
             "every_poll_answered": flooded["terminal_polls_answered"] == flooded["terminal_polls"]}
    print(json.dumps({"idle_rss_mb": round(idle_kb / 1024, 1), "bursts": bursts, "flood": flooded,
                      "right_password_afterwards_from_a_fresh_address": good, "goals": goals}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
