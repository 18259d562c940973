#!/usr/bin/env python3
"""What the fair score calibration costs per face: the query's cluster, and a 1:N search with and without it.

    python tools/bench/bench_calibration.py [--repeat 2000]

Prints JSON: median microseconds per query's offset (one k x 192 product), per search at 1k/10k/100k templates
raw and calibrated, and the one-off index build cost (each template's offset).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]

from facegate.gallery.index import EmbeddingIndex
from facegate.recognition.calibration import FairCalibration
from facegate.vision.models import Manifest


def median_us(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e6)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeat", type=int, default=2000)
    args = p.parse_args()
    manifest = Manifest.load()
    cal = FairCalibration.load(manifest, manifest.get("embedder").sha256)
    rng = np.random.default_rng(0)
    q = rng.normal(size=192).astype(np.float32)
    q /= np.linalg.norm(q)
    query_us = median_us(lambda: cal.half_offsets(q), args.repeat)
    out: dict[str, object] = {"k": cal.k, "query_offset_us": round(query_us, 2)}
    for size in (1_000, 10_000, 100_000):
        m = rng.normal(size=(size, 192)).astype(np.float32)
        m /= np.linalg.norm(m, axis=1, keepdims=True)
        ids = [f"p{i // 2}" for i in range(size)]
        raw = EmbeddingIndex(ids, m)
        start = time.perf_counter()
        calibrated = raw.calibrated(cal)
        build_ms = (time.perf_counter() - start) * 1e3
        repeat = max(20, args.repeat // (size // 1000))
        out[str(size)] = {"search_raw_us": round(median_us(lambda: raw.search(q), repeat), 1),  # noqa: B023
                          "search_calibrated_us": round(median_us(lambda: calibrated.search(q), repeat), 1),  # noqa: B023
                          "index_build_extra_ms": round(build_ms, 1)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
