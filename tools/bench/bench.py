#!/usr/bin/env python3
"""Per-stage latency and throughput of the recognition pipeline, as figures (JSON), never as a test.

Stages: JPEG decode, detect, landmarks (five-point refinement), align, embed, gallery search at several
sizes; then whole-frame throughput with one face, and peak RSS. Frames are 640x480 webcam-like: real
NUAA webcam frames from ../shared when present, else scikit-image's astronaut placed in a 640x480 frame.

    python tools/bench/bench.py --repeat 200 > reports/bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]
from facegate.base.imageio import decode_image
from facegate.gallery.index import EmbeddingIndex
from facegate.vision.align import align_face
from facegate.vision.embedder import l2_normalise
from facegate.vision.landmarks import FaceMesh
from facegate.vision.pipeline import FacePipeline, PipelineOptions
from facegate.vision.runtime import TFLiteModel, runtime_name

from tools import ROOT


def webcam_frames(limit: int) -> tuple[list[bytes], str]:
    """JPEG-encoded 640x480 frames with one face each."""
    shared = Path(os.environ.get("FACEGATE_SHARED", ROOT.parent / "shared")) / "spoof" / "nuaa_dev" / "live"
    files = sorted(shared.glob("*/*.jpg"))[::7][:limit] if shared.is_dir() else []
    if files:
        return [f.read_bytes() for f in files], f"NUAA live webcam frames ({len(files)})"
    from skimage import data

    frame = np.full((480, 640, 3), 100, dtype=np.uint8)
    frame[40:440, 120:520] = cv2.resize(data.astronaut(), (400, 400))
    _ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return [buf.tobytes()], "astronaut in a 640x480 frame"


def timed(fn: Callable[[], Any], repeat: int, warmup: int = 5) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"median_ms": round(statistics.median(times), 3), "p90_ms": round(times[int(0.9 * len(times)) - 1], 3),
            "mean_ms": round(statistics.fmean(times), 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--embedder", default=None)
    ap.add_argument("--repeat", type=int, default=100)
    ap.add_argument("--no-five-point", action="store_true")
    ap.add_argument("--gallery-sizes", default="1000,10000,100000")
    args = ap.parse_args()

    options = PipelineOptions(threads=args.threads, embedder=args.embedder, five_point=not args.no_five_point)
    pipeline = FacePipeline.from_models_dir(args.models, options)
    jpegs, frames_desc = webcam_frames(50)
    images = [decode_image(j, "frame") for j in jpegs]
    image = images[0]
    face = pipeline.detect(image)[0]
    stages: dict[str, Any] = {
        "decode_jpeg_640x480": timed(lambda: decode_image(jpegs[0], "frame"), args.repeat),
        "detect": timed(lambda: pipeline.detect(image), args.repeat),
    }
    mesh = pipeline.mesh or FaceMesh(TFLiteModel(pipeline.manifest.get("landmarks"), args.threads))
    stages["landmarks"] = timed(lambda: mesh.landmarks(image, face), args.repeat)
    crop = align_face(image, face)
    stages["align"] = timed(lambda: align_face(image, face), args.repeat)
    stages["embed"] = timed(lambda: pipeline.embedder.embed(crop), args.repeat)
    query = pipeline.embedder.embed(crop)[0]
    rng = np.random.default_rng(0)
    for size in (int(s) for s in args.gallery_sizes.split(",")):
        matrix = l2_normalise(rng.normal(size=(size, query.size)).astype(np.float32))
        index = EmbeddingIndex([f"p{i // 2}" for i in range(size)], matrix)
        stages[f"search_{size}_templates"] = timed(lambda index=index: index.search(query, k=2), args.repeat)
        del matrix, index

    def whole_frame(i: list[int] = [0]) -> None:  # noqa: B006 - a counter across calls
        jpeg = jpegs[i[0] % len(jpegs)]
        i[0] += 1
        pipeline.process(decode_image(jpeg, "frame"), largest_only=True)

    per_frame = timed(whole_frame, max(args.repeat, len(jpegs)))
    report = {
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
                    "runtime": runtime_name(), "threads": args.threads},
        "frames": frames_desc,
        "config": {"detector": pipeline.manifest.get("detector").name,
                   "embedder": pipeline.manifest.get("embedder", args.embedder).name,
                   "five_point": not args.no_five_point},
        "stages": stages,
        "frame_total": per_frame,
        "frames_per_second": round(1000 / per_frame["median_ms"], 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
