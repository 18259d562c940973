#!/usr/bin/env python3
"""SIGKILL the real door service at random moments of a busy run, again and again (issue 13).

``facegate run`` (a separate process, as systemd runs it) replays a looped scene at 60 fps with cooldown 0,
so it grants, pulses the relay, reports strangers and publishes all the time to a real Mosquitto while a
collector counts every event. Each round it is killed with SIGKILL at a random moment (mostly while busy,
every fifth round during start-up) and started again on the same state directory. After every kill each
database (outbox, command nonces, gallery) must pass ``PRAGMA integrity_check``; at the end a last run
delivers what is left and stops with SIGTERM. Then:

- every event the service logged as stored (its journal line is written after the outbox commit) reached the
  collector: the outbox never lost an event acknowledged to nobody;
- no ``seq`` was given to two different events.

    python tools/checks/sigkill_soak.py --rounds 120          # the figure in docs/reliability.md
tests/service/test_sigkill_service.py runs a smaller version (10 rounds) in the suite.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]
from tools import ROOT

DEVICE = "kill"
PLAN = [("bg", 3), ("astro", 6), ("bg", 20), ("hopper", 8), ("bg", 20)]  # ~1 s a loop at 60 fps: ~4 events a second


def build(work: Path) -> Path:
    """Frames, a gallery with the astronaut, and the door's TOML; returns the config path."""
    import cv2
    from facegate.gallery.store import Gallery, NewTemplate
    from facegate.vision.pipeline import FacePipeline

    from tools.demo import augment, in_scene, shipped_photos

    astronaut, hopper, background = shipped_photos()
    frames = work / "frames"
    frames.mkdir(parents=True)
    n = 0
    for what, count in PLAN:
        for i in range(count):
            frame = background if what == "bg" else in_scene(
                augment(astronaut if what == "astro" else hopper, 2 - 0.3 * i, 0.9, False), background,
                500 + 6 * i, 60, 0)
            cv2.imwrite(str(frames / f"{n:04d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            n += 1
    pipeline = FacePipeline.from_models_dir()
    state = work / "state"
    state.mkdir()
    with Gallery(state / "gallery.db") as g:
        best = pipeline.process(astronaut, largest_only=True)[0]
        g.enroll("astro", [NewTemplate(best.embedding, {})], pipeline.embedder_sha256, name="Eileen Collins")
    return state


def write_config(work: Path, state: Path, port: int) -> Path:
    path = work / "door.toml"
    path.write_text(f'device_id = "{DEVICE}"\nstate_dir = "{state}"\n'
                    f'[camera]\nsource = "replay:{work / "frames"}"\nfps = 60\nloop = true\n'
                    '[recognition]\ncooldown_seconds = 0\n'
                    '[door]\npin_factory = "mock"\nunlock_seconds = 0.2\n'
                    f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\n'
                    f'[commands]\nhmac_key = "{os.urandom(32).hex()}"\n'
                    '[outbox]\nflush_timeout_seconds = 5\n[liveness]\nenabled = false\n')
    return path


class ServiceProcess:
    """``facegate run`` with its journal (stdout) read line by line: what it logged as stored."""

    def __init__(self, config: Path, stored: dict[str, int]) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "device"), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "facegate.cli", "run", "--config", str(config)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        self.started = threading.Event()
        self.stored = stored
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line).get("event")
            except ValueError:
                continue
            if isinstance(event, dict) and "event_id" in event:
                self.stored[event["event_id"]] = int(event["seq"])
                if event["type"] == "service_started":
                    self.started.set()

    def kill(self, sig: int = signal.SIGKILL) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(60)
        self.reader.join(10)
        return code


def integrity(state: Path) -> dict[str, str]:
    out = {}
    for name in ("outbox.db", "command_nonces.db", "gallery.db"):
        path = state / name
        if not path.exists():
            out[name] = "absent"
            continue
        db = sqlite3.connect(str(path), timeout=10)
        try:
            out[name] = "; ".join(str(r[0]) for r in db.execute("PRAGMA integrity_check").fetchall())
        finally:
            db.close()
    return out


def run_rounds(rounds: int, port: int, work: Path, seed: int = 0, busy_seconds: float = 2.5,
               progress: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """The whole experiment against a broker on ``port``; returns the figures (see the module docstring)."""
    import paho.mqtt.client as paho

    rng = random.Random(seed)
    state = build(work)
    config = write_config(work, state, port)
    delivered: dict[str, set[int]] = {}
    lock = threading.Lock()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        event = json.loads(msg.payload)
        with lock:
            delivered.setdefault(event["event_id"], set()).add(int(event["seq"]))

    collector = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="kill-collector")
    collector.on_connect = lambda c, *_a: c.subscribe(f"facegate/{DEVICE}/events", qos=1)
    collector.on_message = on_message
    collector.connect("127.0.0.1", port)
    collector.loop_start()
    stored: dict[str, int] = {}
    bad: list[dict[str, Any]] = []
    kills = {"busy": 0, "starting": 0}
    started = time.monotonic()
    try:
        for k in range(rounds):
            service = ServiceProcess(config, stored)
            if k % 5 == 4:
                time.sleep(rng.uniform(0.0, 1.5))
                kills["starting"] += 1
            else:
                service.started.wait(60)
                time.sleep(rng.uniform(0.0, busy_seconds))
                kills["busy"] += 1
            service.kill()
            checks = integrity(state)
            if any(v not in ("ok", "absent") for v in checks.values()):
                bad.append({"round": k, **checks})
            progress(f"round {k + 1}/{rounds}: {len(stored)} stored, {len(delivered)} delivered, integrity {checks}")
        final = ServiceProcess(config, stored)
        final.started.wait(60)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with lock:
                if set(stored) <= set(delivered):
                    break
            time.sleep(0.2)
        exit_code = final.kill(signal.SIGTERM)
        time.sleep(0.5)
    finally:
        collector.loop_stop()
        collector.disconnect()
    with lock:
        missing = sorted(set(stored) - set(delivered))
        by_seq: dict[int, set[str]] = {}
        for event_id, seqs in delivered.items():
            for seq in seqs:
                by_seq.setdefault(seq, set()).add(event_id)
        reused = {seq: sorted(ids) for seq, ids in by_seq.items() if len(ids) > 1}
        relabelled = [e for e, seqs in delivered.items() if len(seqs) > 1]
    return {"rounds": rounds, "kills": kills, "stored_logged": len(stored), "delivered": len(delivered),
            "missing": missing, "seq_reused": reused, "event_with_two_seqs": relabelled,
            "integrity_failures": bad, "final_exit_code": exit_code, "final_integrity": integrity(state),
            "seconds": round(time.monotonic() - started, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the JSON figures here too")
    args = ap.parse_args()
    from tools.mosquitto import Mosquitto

    with tempfile.TemporaryDirectory() as d, Mosquitto() as server:
        result = run_rounds(args.rounds, server.port, Path(d), args.seed,
                            progress=lambda m: print(m, file=sys.stderr, flush=True))
    result["passed"] = not (result["missing"] or result["seq_reused"] or result["event_with_two_seqs"]
                            or result["integrity_failures"])
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
