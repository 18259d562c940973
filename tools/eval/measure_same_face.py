#!/usr/bin/env python3
"""What "the same face" means between two frames of a track: the figures behind ``same_face_min_similarity``.

The decision engine (facegate/recognition/segment.py) starts a new identity segment when a frame's embedding is far
from the track's recent ones. The threshold must sit above what two different people give (an attacker's live face
followed by a print of someone else in the same spot) and below what consecutive frames of one person give (live
or a print of them, moving, blinking, blurred). Measured here on real data:

- NUAA (nuaa_dev): consecutive frames of one capture session, stored ~1.5 s apart (harder than 15 fps), live and
  print; a subject's live frame against their own print; frames of two different subjects (live-live, live-print);
- LFW (lfw_dev): two photos of one person (different days, cameras: far harder than consecutive video frames) and
  of two different people.

It also prints the per-frame texture log-odds of live and print frames (shipped antispoof model: fitted on these
subjects, so only a rough view of single-frame spread).

    python tools/eval/measure_same_face.py [--lfw-people 300] [--out reports/same_face.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]
from facegate.base.imageio import read_image
from facegate.liveness.gate import LivenessGate
from facegate.vision.models import Manifest
from facegate.vision.pipeline import FacePipeline

from tools import ROOT
from tools.eval import evaluate_pad as pad

PERCENTILES = (0, 0.1, 0.5, 1, 5, 50, 95, 99, 99.9, 100)


def describe(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    arr = np.asarray(values)
    return {"n": len(values), **{f"p{p:g}": round(float(np.percentile(arr, p)), 4) for p in PERCENTILES}}


def unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def embed(pipeline: FacePipeline, path: Path) -> tuple[np.ndarray | None, Any]:
    found = pipeline.process(read_image(path), largest_only=True)
    if not found or found[0].failures or found[0].embedding is None:
        return None, None
    return unit(np.asarray(found[0].embedding, dtype=np.float64)), found[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=pad.default_data_dir())
    parser.add_argument("--lfw", type=Path, default=ROOT.parent / "shared" / "faces" / "lfw_dev")
    parser.add_argument("--lfw-people", type=int, default=300, help="LFW people with 2+ photos to use")
    parser.add_argument("--threshold", type=float, action="append", default=[],
                        help="also print the share of each group below this similarity (repeatable)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    pipeline = FacePipeline.from_models_dir()
    gate = LivenessGate.from_manifest(Manifest.load(), active=False)

    samples = pad.list_samples(args.data)
    vectors: dict[int, np.ndarray] = {}
    texture: dict[str, list[float]] = {"live": [], "spoof_print": []}
    for i, s in enumerate(samples):
        image = read_image(s.path)
        found = pipeline.process(image, largest_only=True)
        if not found or found[0].failures or found[0].embedding is None:
            continue
        vectors[i] = unit(np.asarray(found[0].embedding, dtype=np.float64))
        texture.setdefault(s.kind, []).append(gate.score(image, found[0]))
    groups: dict[tuple[str, str, str], list[int]] = {}
    for i, s in enumerate(samples):
        if i in vectors:
            groups.setdefault((s.kind, s.subject, s.group), []).append(i)
    consecutive: dict[str, list[float]] = {"live": [], "spoof_print": []}
    for (kind, _, _), idx in groups.items():
        idx.sort(key=lambda i: samples[i].order)
        consecutive[kind].extend(float(vectors[a] @ vectors[b]) for a, b in itertools.pairwise(idx))
    by_subject: dict[tuple[str, str], list[int]] = {}
    for i in vectors:
        by_subject.setdefault((samples[i].kind, samples[i].subject), []).append(i)
    rng = np.random.default_rng(0)

    def pairs(a: list[int], b: list[int], n: int = 400) -> list[float]:
        ia, ib = rng.choice(a, size=n), rng.choice(b, size=n)
        return [float(vectors[x] @ vectors[y]) for x, y in zip(ia, ib, strict=True)]

    subjects = sorted({s for _, s in by_subject})
    own_print, other_live, other_print = [], [], []
    for s in subjects:
        live = by_subject.get(("live", s), [])
        if live and by_subject.get(("spoof_print", s)):
            own_print += pairs(live, by_subject[("spoof_print", s)])
        for t in subjects:
            if t == s or not live:
                continue
            if by_subject.get(("live", t)):
                other_live += pairs(live, by_subject[("live", t)], 100)
            if by_subject.get(("spoof_print", t)):
                other_print += pairs(live, by_subject[("spoof_print", t)], 100)

    lfw_same, lfw_other = [], []
    if args.lfw.is_dir():
        people = sorted(p for p in args.lfw.iterdir() if p.is_dir() and len(list(p.iterdir())) >= 2)
        chosen = people[: args.lfw_people]
        firsts: list[np.ndarray] = []
        for person in chosen:
            photos = sorted(person.iterdir())[:2]
            a, _ = embed(pipeline, photos[0])
            b, _ = embed(pipeline, photos[1])
            if a is not None and b is not None:
                lfw_same.append(float(a @ b))
                firsts.append(a)
        mat = np.array(firsts)
        sims = mat @ mat.T
        lfw_other = [float(v) for v in sims[np.triu_indices(len(firsts), 1)]]

    groups_out = {
        "nuaa_consecutive_live": consecutive["live"], "nuaa_consecutive_print": consecutive["spoof_print"],
        "nuaa_live_vs_own_print": own_print, "nuaa_live_vs_other_live": other_live,
        "nuaa_live_vs_other_print": other_print, "lfw_same_person_two_photos": lfw_same,
        "lfw_different_people": lfw_other,
    }
    report: dict[str, Any] = {name: describe(v) for name, v in groups_out.items()}
    for t in args.threshold:
        report[f"share_below_{t:g}"] = {name: round(float(np.mean(np.asarray(v) < t)), 5) if v else None
                                        for name, v in groups_out.items()}
    report["texture_log_odds_per_frame"] = {k: describe(v) for k, v in texture.items()}
    report["liveness_thresholds"] = {k: round(v, 4) for k, v in gate.classifier.thresholds.items()}
    # The per-frame floor of liveness/track.py: share of single frames below (threshold - frame_margin).
    margin = gate.params.frame_margin
    report[f"texture_frames_below_threshold_minus_{margin:g}"] = {
        point: {kind: round(float(np.mean(np.asarray(v) < t - margin)), 4) for kind, v in texture.items() if v}
        for point, t in gate.classifier.thresholds.items()}
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
