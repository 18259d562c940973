#!/usr/bin/env python3
"""Door-service figures: decision latency (first frame showing the face → relay energised), frames/s, RSS.

Runs the real service in-process on a 30 fps replay (background, then the enrolled visitor), with gpiozero's
MockFactory relay and a gallery of N random persons plus the visitor, MQTT disabled. The visitor is the pasted
astronaut photo, or with --nuaa-subject a real person's webcam frames from ../shared (needed to measure with
the liveness gate on, which refuses photographs).

    python tools/bench/bench_service.py --persons 10000 --runs 5
    python tools/bench/bench_service.py --persons 10000 --runs 5 --nuaa-subject 0003 [--liveness]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]
from facegate.base.imageio import read_image
from facegate.camera.replay import ReplaySource
from facegate.camera.source import Frame
from facegate.config import parse_config
from facegate.gallery.store import Gallery, NewTemplate
from facegate.service import Service
from facegate.vision.pipeline import FacePipeline
from gpiozero.pins.mock import MockFactory

from tools import ROOT
from tools.demo import augment, in_scene, shipped_photos
from tools.galleryfill import add_random_persons

BACKGROUND_FRAMES = 10


class TimedSource(ReplaySource):
    """The replay, remembering when each frame was handed to the service."""

    delivered: dict[str, float]

    def read(self) -> Frame | None:
        frame = super().read()
        if frame is not None:
            self.delivered = getattr(self, "delivered", {})
            self.delivered[frame.name or ""] = time.perf_counter()
        return frame


def nuaa_visitor(subject: str) -> tuple[list[np.ndarray], np.ndarray]:
    """A real person from ../shared (NUAA live webcam frames): enrolled from the first session, a later one replayed."""
    shared = Path(os.environ.get("FACEGATE_SHARED", ROOT.parent / "shared")) / "spoof" / "nuaa_dev" / "live"
    files = sorted((shared / subject).glob("*.jpg"), key=lambda p: (p.stem.split("_")[3], int(p.stem.split("_")[4])))
    if not files:
        sys.exit(f"no NUAA frames for subject {subject} under {shared}")
    first = files[0].stem.split("_")[3]
    enrol = [p for p in files if p.stem.split("_")[3] == first]
    visit = [p for p in files if p.stem.split("_")[3] != first] or enrol[len(enrol) // 2:]
    return [read_image(p) for p in visit[:30]], read_image(enrol[0])


def build(tmp: Path, persons: int, subject: str | None) -> tuple[Path, Path]:
    import cv2

    astronaut, _hopper, background = shipped_photos()
    if subject:
        visit, enrol_image = nuaa_visitor(subject)
    else:
        visit = [in_scene(augment(astronaut, 2 - 0.2 * k, 0.9, False), background, 480 + 3 * k, 80, 0)
                 for k in range(30)]
        enrol_image = astronaut
    frames = tmp / "frames"
    frames.mkdir()
    for i, img in enumerate([background] * BACKGROUND_FRAMES + visit):
        cv2.imwrite(str(frames / f"{i:04d}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    pipeline = FacePipeline.from_models_dir()
    best = pipeline.process(enrol_image, largest_only=True)[0]
    db = tmp / "gallery.db"
    with Gallery(db) as g:
        g.enroll("astronaut", [NewTemplate(best.embedding, {})], pipeline.embedder_sha256)
        add_random_persons(g, persons, pipeline.embedder_sha256, pipeline.embedder.dim)
    return frames, db


def run_once(tmp: Path, frames: Path, db: Path, fps: float, threads: int, liveness: bool,
             encrypt: bool = True) -> dict[str, Any]:
    config = parse_config({
        "device_id": "bench", "state_dir": str(tmp / f"state-{time.monotonic_ns()}"),
        "camera": {"source": f"replay:{frames}", "fps": min(fps, 120)}, "gallery": {"path": str(db)},
        "models": {"threads": threads}, "door": {"relay_pin": 17, "unlock_seconds": 1},
        "mqtt": {"enabled": False}, "outbox": {"flush_timeout_seconds": 0},
        "liveness": {"enabled": liveness}, "privacy": {"encrypt": encrypt, "key_file": str(tmp / "privacy.key")},
    })
    source = TimedSource(frames, fps)
    service = Service(config, pin_factory=MockFactory(), source=source)
    unlocked: list[float] = []
    service.emitter.add_listener(lambda e: unlocked.append(time.perf_counter()) if e["type"] == "door_unlocked"
                                 else None)
    start = time.perf_counter()
    service.run()
    wall = time.perf_counter() - start
    first_face = source.delivered[f"{BACKGROUND_FRAMES:04d}.jpg"]
    return {"latency_ms": (unlocked[0] - first_face) * 1000 if unlocked else None,
            "frames_per_second": service.stats.frames / wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--persons", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--fps", type=float, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nuaa-subject", default=None,
                    help="replay a real person (NUAA live frames from ../shared) instead of the pasted astronaut")
    ap.add_argument("--liveness", action="store_true",
                    help="liveness gate on (use with --nuaa-subject: the astronaut is a photo and is refused)")
    ap.add_argument("--plain", action="store_true", help="[privacy] encrypt = false (default: the gallery sealed)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        frames, db = build(tmp, args.persons, args.nuaa_subject)
        runs = [run_once(tmp, frames, db, args.fps, args.threads, args.liveness, not args.plain)
                for _ in range(args.runs)]
        unpaced = run_once(tmp, frames, db, 1000, args.threads, args.liveness, not args.plain)
    latencies = [r["latency_ms"] for r in runs if r["latency_ms"] is not None]
    print(json.dumps({
        "gallery_persons": args.persons + 1, "replay_fps": args.fps, "threads": args.threads,
        "visitor": f"NUAA live subject {args.nuaa_subject}" if args.nuaa_subject else "pasted astronaut photo",
        "liveness": args.liveness, "encrypted": not args.plain,
        "granted_runs": f"{len(latencies)}/{len(runs)}",
        "decision_latency_ms": {"median": round(statistics.median(latencies), 1), "max": round(max(latencies), 1),
                                "all": [round(v, 1) for v in latencies]} if latencies else None,
        "max_frames_per_second_unpaced": round(unpaced["frames_per_second"], 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
