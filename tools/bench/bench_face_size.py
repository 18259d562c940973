"""The smallest face found at 640x480, 1280x720 and 1920x1080, by detection strategy, and its per-frame cost.

    .venv/bin/python tools/bench/bench_face_size.py

scikit-image's astronaut, scaled so that her face is W px wide, pasted at the centre of the door zone of a brick
frame; W is swept from 24 to 320 px. "Smallest found" is the smallest W from which every larger W in the sweep
is found (a detection overlapping the true face box by IoU > 0.3). Strategies: the short-range detector on the
whole frame (the door before door zones), on the door zone's crop, the full-range detector on the crop, and the
short-range detector over tiles of the crop (facegate/vision/tiles.py, what the door picks for large views).
Door zone: the middle third of the width, the middle two thirds of the height (x 0.33, y 0.17, w 0.34, h 0.66).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]
from facegate.recognition.zone import DoorZone
from facegate.vision.detector import BlazeFaceDetector
from facegate.vision.models import Manifest
from facegate.vision.runtime import TFLiteModel
from facegate.vision.tiles import TiledDetector, plan_tiles

from tools.demo import shipped_photos

ZONE = (0.33, 0.17, 0.34, 0.66)
SIZES = [(640, 480), (1280, 720), (1920, 1080)]
WIDTHS = list(range(24, 96, 4)) + list(range(96, 324, 8))


def composite(astronaut: np.ndarray, face_box: tuple[float, float, float, float], background: np.ndarray,
              size: tuple[int, int], face_px: int, centre: tuple[int, int]) -> tuple[np.ndarray, tuple[float, ...]]:
    w, h = size
    frame = cv2.resize(background, (w, h))
    s = face_px / face_box[2]
    photo = cv2.resize(astronaut, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    fx, fy = (face_box[0] + face_box[2] / 2) * s, (face_box[1] + face_box[3] / 2) * s
    ox, oy = round(centre[0] - fx), round(centre[1] - fy)
    x0, y0 = max(0, ox), max(0, oy)
    x1, y1 = min(w, ox + photo.shape[1]), min(h, oy + photo.shape[0])
    frame[y0:y1, x0:x1] = photo[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
    return frame, (face_box[0] * s + ox, face_box[1] * s + oy, face_box[2] * s, face_box[3] * s)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def main() -> int:
    manifest = Manifest.load(None)
    short = BlazeFaceDetector(TFLiteModel(manifest.get("detector", "blazeface_short_range"), 2))
    full = BlazeFaceDetector(TFLiteModel(manifest.get("detector", "blazeface_full_range"), 2))
    astronaut, _hopper, background = shipped_photos()
    face_box = short.detect(astronaut)[0].box
    strategies = {
        "short range, whole frame": (short, False),
        "short range, door zone": (short, True),
        "full range, door zone": (full, True),
        "short range, tiles of the door zone": (TiledDetector(short), True),
        "short range, tiles of the whole frame": (TiledDetector(short), False),
    }
    print("| frame | strategy | smallest face found (px wide) | detector runs | ms per frame |")
    print("|---|---|---:|---:|---:|")
    for size in SIZES:
        zone = DoorZone(ZONE)
        x0, y0, x1, y1 = zone.pixels(*size)
        centre = ((x0 + x1) // 2, (y0 + y1) // 2)
        for name, (detector, use_zone) in strategies.items():
            found: dict[int, bool] = {}
            times = []
            for px in WIDTHS:
                frame, truth = composite(astronaut, face_box, background, size, px, centre)
                view, (dx, dy) = zone.view(frame) if use_zone else (frame, (0, 0))
                t = time.perf_counter()
                faces = detector.detect(view)
                times.append(time.perf_counter() - t)
                found[px] = any(iou((f.box[0] + dx, f.box[1] + dy, f.box[2], f.box[3]), truth) > 0.3 for f in faces)
            smallest = None
            for px in reversed(WIDTHS):
                if not found[px]:
                    break
                smallest = px
            vw, vh = (x1 - x0, y1 - y0) if use_zone else size
            runs = 1 + (len(plan_tiles(vw, vh, 512))
                        if isinstance(detector, TiledDetector) else 0)
            print(f"| {size[0]}x{size[1]} | {name} | {smallest if smallest is not None else '> 320'} | {runs} "
                  f"| {1000 * float(np.median(times)):.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
