#!/usr/bin/env python3
"""Measure the master-face rule of ``facegate gallery import-templates`` on real faces, person-disjoint.

A "master face" is a template that sits close to everybody: the normalised centroid of many people's
embeddings is a unit vector like any other (the template gate passes it) but, at a door, it out-scores real
enrolled people for faces it has never seen. import-templates refuses a template whose *crowding* -- the mean
of its top-k similarities to the other persons of a reference set (facegate.gallery.masterface) -- is above a
threshold. This tool measures that statistic

- for genuine single-person templates: every image of persons who are in neither the reference set nor the
  attacker's pool (one template per image, as a door enrolment makes them);
- for constructed master faces: normalised k-means centroids (K = 1..32) of the embeddings of an attacker's
  pool of persons disjoint from both;

over several random person-disjoint splits and reference sizes, and how many unseen people (the genuine
persons) each set of master faces would admit at the door's match threshold (FAR 1e-4 of models/thresholds.json).

    python tools/eval/eval_master_faces.py --faces ../shared/faces/lfw_dev

Embeddings are cached in build/eval-cache/ (as tools/eval/evaluate.py does; never commit them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]
from facegate.gallery.masterface import CROWDING_THRESHOLD, TOP_K, crowding
from facegate.recognition.thresholds import ThresholdTable

from tools.eval.evaluate import default_faces_dir, embeddings_by_person


def kmeans_centroids(x: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 25) -> np.ndarray:
    """Spherical k-means: unit-length centroids of ``x`` (the attacker's construction)."""
    centres = x[rng.choice(len(x), size=k, replace=False)]
    for _ in range(iterations):
        assign = np.argmax(x @ centres.T, axis=1)
        for j in range(k):
            members = x[assign == j]
            if len(members):
                centres[j] = members.sum(axis=0)
        centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
    return centres.astype(np.float32)


def ascent_master_faces(pool: np.ndarray, n: int, rng: np.random.Generator, iterations: int = 60) -> np.ndarray:
    """A stronger construction than centroids: from ``n`` starting faces, unit vectors moved to maximise a soft
    count of the pool's faces above a similarity of 0.35 (the densest spherical caps of face space)."""
    out = []
    for start in rng.choice(len(pool), size=min(n, len(pool)), replace=False):
        v = pool[start].astype(np.float64)
        for _ in range(iterations):
            w = 1.0 / (1.0 + np.exp(-(pool @ v - 0.35) / 0.05))
            v = (w[:, None] * pool).sum(axis=0)
            v /= np.linalg.norm(v)
        out.append(v)
    return np.asarray(out, dtype=np.float32)


def split(names: list[str], rng: np.random.Generator, reference: int, attackers: int) -> tuple[list[str], ...]:
    order = [names[i] for i in rng.permutation(len(names))]
    return order[:reference], order[reference: reference + attackers], order[reference + attackers:]


def run(args: argparse.Namespace) -> dict[str, Any]:
    manifest, by_person = embeddings_by_person(args.faces, args.models, args.threads, args.max_per_person)
    names = sorted(by_person)
    table = ThresholdTable.load(manifest.directory / "thresholds.json")
    door_threshold = table.for_far(1e-4)

    genuine: dict[int, list[float]] = {n: [] for n in args.reference}
    master: dict[str, list[float]] = {}
    admitted: dict[str, list[float]] = {}
    genuine_reach: list[float] = []
    for fold in range(args.folds):
        rng = np.random.default_rng(fold)
        for n_ref in args.reference:
            ref_names, attack_names, probe_names = split(names, rng, n_ref, args.attackers)
            # the admin gallery: each reference person with up to 3 templates (a real enrolment's count)
            ref_rows = np.concatenate([by_person[n][:3] for n in ref_names])
            ref_ids = [n for n in ref_names for _ in by_person[n][:3]]
            probes = np.concatenate([by_person[n] for n in probe_names])
            genuine[n_ref].extend(crowding(probes, ref_rows, ref_ids).tolist())
            pool = np.concatenate([by_person[n] for n in attack_names])
            firsts = np.stack([by_person[n][0] for n in probe_names])  # unseen people, one image each
            sets = {f"K{k}": kmeans_centroids(pool, k, rng) for k in args.clusters}
            sets["ascent32"] = ascent_master_faces(pool, 32, rng)
            for label, centres in sets.items():
                master.setdefault(f"ref{n_ref}_{label}", []).extend(crowding(centres, ref_rows, ref_ids).tolist())
                hit = (firsts @ centres.T).max(axis=1) >= door_threshold
                admitted.setdefault(label, []).append(float(hit.mean()))
            # the attack as found: the same centroids scaled to norm 100 (the template gate refuses them)
            scaled = 100.0 * sets["K8"]
            admitted.setdefault("K8_scaled_norm100", []).append(
                float(((firsts @ scaled.T).max(axis=1) >= door_threshold).mean()))
            # a genuine template's reach, for comparison: unseen people matched by one real face
            genuine_reach.append(float(((firsts @ ref_rows[:200].T) >= door_threshold).mean()))

    def summary(values: list[float]) -> dict[str, float]:
        a = np.asarray(values)
        return {"n": int(a.size), "min": round(float(a.min()), 4), "p50": round(float(np.median(a)), 4),
                "p99": round(float(np.quantile(a, 0.99)), 4), "p999": round(float(np.quantile(a, 0.999)), 4),
                "max": round(float(a.max()), 4),
                "above_threshold": int((a > CROWDING_THRESHOLD).sum())}

    return {
        "faces": str(args.faces), "persons": len(names), "folds": args.folds, "top_k": TOP_K,
        "threshold": CROWDING_THRESHOLD, "door_threshold_far_1e-4": round(door_threshold, 4),
        "genuine": {f"ref{n}": summary(v) for n, v in genuine.items()},
        "master": {label: summary(v) for label, v in master.items()},
        "unseen_admitted_fraction": {label: round(float(np.mean(v)), 4) for label, v in admitted.items()},
        "unseen_admitted_per_genuine_template": round(float(np.mean(genuine_reach)), 6),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--faces", type=Path, default=default_faces_dir())
    p.add_argument("--models", type=Path, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-per-person", type=int, default=20)
    p.add_argument("--folds", type=int, default=5, help="random person-disjoint splits")
    p.add_argument("--reference", type=int, nargs="+", default=[10, 30, 100, 1000, 3000],
                   help="reference (admin gallery) sizes in persons")
    p.add_argument("--attackers", type=int, default=300, help="persons in the attacker's pool")
    p.add_argument("--clusters", type=int, nargs="+", default=[1, 2, 8, 32], help="K master faces per set")
    args = p.parse_args(argv)
    print(json.dumps(run(args), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
