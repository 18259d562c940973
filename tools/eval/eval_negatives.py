#!/usr/bin/env python3
"""Measure "This was not them" (negative templates, docs/decision.md) on real faces, person-disjoint.

Protocol, on lfw_dev (no identity of it was used to train the embedder):

- persons with at least two images are split at random into two halves, fold A and fold B (person-disjoint);
  within each fold, half the persons are enrolled (their first image is the template; the rest are their
  genuine probes) and the other half are impostors, strangers to the gallery;
- every image of an impostor is matched against the fold's gallery with the door's own
  :class:`facegate.gallery.index.EmbeddingIndex`; an impostor with an image that matches an enrolled person at
  the threshold (a wrong grant) has that image marked "This was not them": it becomes a negative template of
  the person it matched;
- with every fold's mark in place, we count how many of the impostor's *other* images still match that person
  (before: how many did), and how many genuine probes of enrolled persons are still matched correctly.

Genuine losses are counted over every enrolled person and, separately, over the persons who have a negative
(the only ones the rule can touch). The margin of the rule (``recognition.negative_margin``) is chosen on fold A
(of the swept values at which the marked persons' own matches lose at most ``--max-genuine-loss`` points, the one
that stops the most impostor images, the smallest on a tie) and reported on fold B, and the other way round;
several random splits.

    python tools/eval/eval_negatives.py --faces ../shared/faces/lfw_dev --far 1e-4
    python tools/eval/eval_negatives.py --faces ../shared/faces/lfw_dev --far 1e-3

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
from facegate.gallery.index import EmbeddingIndex
from facegate.recognition.thresholds import ThresholdTable

from tools.eval.evaluate import default_faces_dir, embeddings_by_person

MARGINS = (-0.1, -0.05, 0.0, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2)


def fold_result(by_person: dict[str, np.ndarray], names: list[str], threshold: float,
                margins: tuple[float, ...]) -> dict[float, dict[str, float]]:
    """One fold: half of ``names`` enrolled, half impostors; figures for each margin."""
    enrolled, impostors = names[::2], names[1::2]
    ids = list(enrolled)
    gallery = np.stack([by_person[n][0] for n in enrolled])
    plain = EmbeddingIndex(ids, gallery)

    def best(index: EmbeddingIndex, x: np.ndarray, margin: float) -> tuple[str | None, float]:
        top = index.search(x, k=1, negative_margin=margin)
        return (top[0].person_id, top[0].similarity) if top else (None, -1.0)

    marks: list[tuple[str, int, str]] = []  # (impostor, marked image, person it was granted as)
    neg_ids: list[str] = []
    neg_rows: list[np.ndarray] = []
    for name in impostors:
        for i, x in enumerate(by_person[name]):
            pid, sim = best(plain, x, 0.0)
            if pid is not None and sim >= threshold:
                marks.append((name, i, pid))
                neg_ids.append(pid)
                neg_rows.append(x)
                break
    out: dict[float, dict[str, float]] = {}
    marked = EmbeddingIndex(ids, gallery, negatives=(neg_ids, np.stack(neg_rows)) if neg_rows else None)
    for margin in margins:
        before = after = after_anyone = 0
        for name, g, pid in marks:
            for j, x in enumerate(by_person[name]):
                if j == g:
                    continue
                p0, s0 = best(plain, x, margin)
                if p0 == pid and s0 >= threshold:
                    before += 1
                    p1, s1 = best(marked, x, margin)
                    after += int(p1 == pid and s1 >= threshold)
                    after_anyone += int(p1 is not None and s1 >= threshold)
        gen_total = gen_before = gen_after = 0
        own_total = own_before = own_after = 0  # only persons who have a negative
        has_negative = set(neg_ids)
        for name in enrolled:
            for x in by_person[name][1:]:
                gen_total += 1
                p0, s0 = best(plain, x, margin)
                p1, s1 = best(marked, x, margin)
                hit0, hit1 = int(p0 == name and s0 >= threshold), int(p1 == name and s1 >= threshold)
                gen_before += hit0
                gen_after += hit1
                if name in has_negative:
                    own_total, own_before, own_after = own_total + 1, own_before + hit0, own_after + hit1
        out[margin] = {
            "enrolled": len(enrolled), "impostors": len(impostors), "marked_impostors": len(marks),
            "other_images_matched_before": before, "other_images_matched_after": after,
            "other_images_matched_anyone_after": after_anyone,
            "genuine_probes": gen_total, "genuine_matched_before": gen_before, "genuine_matched_after": gen_after,
            "marked_persons_probes": own_total, "marked_persons_matched_before": own_before,
            "marked_persons_matched_after": own_after,
        }
    return out


def summarise(rows: list[dict[str, float]]) -> dict[str, Any]:
    tot = {k: sum(r[k] for r in rows) for k in rows[0]}
    before, after = tot["other_images_matched_before"], tot["other_images_matched_after"]
    g = tot["genuine_probes"]
    return {
        **{k: int(v) for k, v in tot.items()},
        "impostor_match_fall_pct": round(100.0 * (1 - after / before), 1) if before else None,
        "genuine_tar_before_pct": round(100.0 * tot["genuine_matched_before"] / g, 3),
        "genuine_tar_after_pct": round(100.0 * tot["genuine_matched_after"] / g, 3),
        "genuine_loss_points": round(100.0 * (tot["genuine_matched_before"] - tot["genuine_matched_after"]) / g, 3),
        # the same among the probes of persons who have a negative (the only ones the rule can touch)
        "marked_persons_loss_points": round(
            100.0 * (tot["marked_persons_matched_before"] - tot["marked_persons_matched_after"])
            / tot["marked_persons_probes"], 3) if tot["marked_persons_probes"] else None,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    manifest, by_person = embeddings_by_person(args.faces, args.models, args.threads, min_faces=2)
    threshold = ThresholdTable.load(manifest.directory / "thresholds.json").for_far(args.far)
    names = sorted(by_person)
    chosen_rows: list[dict[str, float]] = []
    sweep: dict[float, list[dict[str, float]]] = {m: [] for m in args.margins}
    choices: list[float] = []
    for seed in range(args.splits):
        order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
        folds = [order[::2], order[1::2]]
        results = [fold_result(by_person, f, threshold, tuple(args.margins)) for f in folds]
        for m in args.margins:
            sweep[m] += [r[m] for r in results]
        for tune, test in ((0, 1), (1, 0)):
            tuned = {m: summarise([results[tune][m]]) for m in args.margins}
            ok = [m for m in args.margins if (tuned[m]["marked_persons_loss_points"] or 0.0) <= args.max_genuine_loss]
            # the most impostor images stopped; of those, the smallest margin (the least genuine cost)
            margin = min(ok, key=lambda m: (-(tuned[m]["impostor_match_fall_pct"] or 0.0), m)) if ok \
                else min(args.margins)
            choices.append(margin)
            chosen_rows.append(results[test][margin])
    return {
        "faces": str(args.faces), "far": args.far, "threshold": round(threshold, 5), "splits": args.splits,
        "persons_with_2_images": len(names),
        "held_out": {"margins_chosen": choices, **summarise(chosen_rows)},
        "sweep": {str(m): summarise(rows) for m, rows in sweep.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--faces", type=Path, default=default_faces_dir())
    p.add_argument("--models", type=Path, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--far", type=float, default=1e-4, help="operating point of models/thresholds.json")
    p.add_argument("--splits", type=int, default=3, help="random person-disjoint splits (each two folds)")
    p.add_argument("--margins", type=float, nargs="+", default=list(MARGINS))
    p.add_argument("--max-genuine-loss", type=float, default=0.25,
                   help="loss (points) of the marked persons' own matches allowed on the tuning fold when choosing "
                        "the margin")
    args = p.parse_args(argv)
    print(json.dumps(run(args), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
