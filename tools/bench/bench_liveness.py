"""What one scored frame costs the liveness gate: the colour-texture features alone, each re-capture cue group
alone, and what the shipped model computes (texture + its listed cues), in ms per frame.

    .venv/bin/python tools/bench/bench_liveness.py [--repeat 5] [--number 50]

The frame is scikit-image's astronaut at 640x480 (the door's usual camera size) with the face box the shipped
detector finds, so the figure needs no private data. Best of ``--repeat`` runs of ``--number`` calls each: the
least disturbed by other load; on a shared machine say so beside the figures.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]
from facegate.liveness import texture
from facegate.liveness.gate import ROLE
from facegate.liveness.model import TextureClassifier
from facegate.vision.models import Manifest
from facegate.vision.pipeline import FacePipeline


def frame_and_box() -> tuple[np.ndarray, tuple[float, float, float, float]]:
    from skimage import data

    frame = np.ascontiguousarray(cv2.resize(data.astronaut(), (640, 480), interpolation=cv2.INTER_AREA))
    faces = FacePipeline.from_models_dir().detect(frame)
    if not faces:
        raise SystemExit("no face found in the benchmark frame")
    return frame, tuple(float(v) for v in faces[0].box)  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--number", type=int, default=50)
    args = parser.parse_args(argv)
    frame, box = frame_and_box()
    model = TextureClassifier.load(Manifest.load().get(ROLE))
    cases = {"texture (LBP + stats)": lambda: texture.frame_features(frame, box)}
    cases |= {f"cue group {name}": (lambda n=name: texture.cue_features(frame, box, (n,))) for name in texture.CUE_DIMS}
    cases[f"shipped model: texture + {', '.join(model.cues) or 'no cues'}"] = \
        lambda: texture.frame_features(frame, box, cues=model.cues)
    for name, call in cases.items():
        best = min(timeit.repeat(call, number=args.number, repeat=args.repeat)) / args.number
        print(f"{name:70s} {best * 1000:7.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
