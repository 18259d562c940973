#!/usr/bin/env python3
"""facegate vs face_recognition (dlib HOG detector + ResNet embedder) on the same 640x480 webcam frames.

Both run in one invocation on this machine, steady state (models loaded, first frames discarded), one
embedding of the largest face per frame, as `facegate embed` does. dlib is not a facegate dependency: give
the Python of an environment where `pip install face_recognition` was done (it builds dlib, ~10 min).

    python tools/bench/bench_vs_dlib.py --dlib-python /tmp/dlibvenv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]
from tools import ROOT

DLIB_WORKER = r"""
import sys, time, json
import face_recognition
paths = sys.argv[1:]
imgs = [face_recognition.load_image_file(p) for p in paths]
for img in imgs[:3]:
    face_recognition.face_encodings(img, face_recognition.face_locations(img, model="hog"))
start = time.perf_counter(); found = 0
for img in imgs:
    locs = face_recognition.face_locations(img, model="hog")
    if locs:
        largest = max(locs, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))
        face_recognition.face_encodings(img, [largest])
        found += 1
print(json.dumps({"seconds": time.perf_counter() - start, "frames": len(imgs), "faces": found}))
"""


def frames(limit: int) -> list[Path]:
    shared = Path(os.environ.get("FACEGATE_SHARED", ROOT.parent / "shared")) / "spoof" / "nuaa_dev" / "live"
    files = sorted(shared.glob("*/*.jpg"))[::5][:limit]
    if not files:
        sys.exit(f"no webcam frames found under {shared} (set FACEGATE_SHARED)")
    return files


def facegate_run(paths: list[Path], threads: int) -> dict[str, float]:
    from facegate.base.imageio import read_image
    from facegate.vision.pipeline import FacePipeline, PipelineOptions

    pipeline = FacePipeline.from_models_dir(None, PipelineOptions(threads=threads))
    images = [read_image(p) for p in paths]
    for img in images[:3]:
        pipeline.process(img, largest_only=True)
    start = time.perf_counter()
    found = sum(1 for img in images if pipeline.process(img, largest_only=True))
    return {"seconds": time.perf_counter() - start, "frames": len(images), "faces": found}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dlib-python", required=True, help="python of an environment with face_recognition")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    paths = frames(args.frames)
    ours = facegate_run(paths, args.threads)
    out = subprocess.run([args.dlib_python, "-c", DLIB_WORKER, *map(str, paths)], capture_output=True, text=True,
                         check=True)
    theirs = json.loads(out.stdout.strip().splitlines()[-1])
    fps_ours = ours["frames"] / ours["seconds"]
    fps_theirs = theirs["frames"] / theirs["seconds"]
    print(json.dumps({
        "frames": len(paths), "size": "640x480 (NUAA live webcam frames)",
        "facegate": {**ours, "fps": round(fps_ours, 1), "threads": args.threads},
        "face_recognition_dlib_hog": {**theirs, "fps": round(fps_theirs, 2)},
        "speedup": round(fps_ours / fps_theirs, 1),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
