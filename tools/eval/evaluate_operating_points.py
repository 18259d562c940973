#!/usr/bin/env python3
"""Measure the door's two threshold rules person-disjointly on a labelled reference set (lfw_dev).

1. ``every_group`` against ``pooled`` (cross-validated by person): the people are split in two at random,
   the thresholds are fitted on one half (the worst group's same-group impostors for every_group, everyone's for
   pooled) and measured on the other, both ways, ``--repeats`` times; counts are summed over the held-out halves.
   Reported per FAR: each group's same-group FMR (95% Wilson interval) and its ratio to the nominal FAR, the
   pooled TAR, each group's FNMR per frame and per visit (k of n frames, frames taken as independent, which
   flatters the visit figure: frames of one visit are alike).
2. The gallery-size rule (``recognition.fpir``): the impostor tail (tools/eval/evaluate.py's grid) is fitted on one
   half of the people; strangers come from the other half and never from the gallery. Galleries of 100 and 1,000
   people are drawn from the strangers' half (so the gallery too is disjoint from the tail); the gallery of 4,000
   is everyone but a fold of 38 strangers (the reference set has 4,038 people), folds rotating through the
   held-out half. The door's own derivation (facegate.recognition.operating_point) sets the threshold for
   each gallery; a stranger probe (one image) is a false positive when its best gallery score reaches it; FNIR
   counts the gallery people's other images that miss (wrong top-1 or below the threshold).

    python tools/eval/evaluate_operating_points.py --groups ../shared/faces/lfw_dev_meta/gender.csv
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

from facegate.fairness.report import wilson
from facegate.recognition.operating_point import derive_threshold
from facegate.recognition.thresholds import OperatingPoint, TailPoint, ThresholdTable
from facegate.vision.models import Manifest
from facegate.vision.pipeline import FacePipeline, PipelineOptions

from tools.eval import evaluate as ev

CV_FARS = (1e-3, 1e-4)
# LFW errata, each inspected: one person filed under two names (name variants; John Burnett/Barnett), the same
# photo filed under two people (Bart Hendricks/Ricky Ray, Martha Bowen/Gabrielle Rose), a photo of one person
# filed under another (Carlos_Ruckauf_0001 shows Eduardo Duhalde). With --lfw-errata a stranger's probe scoring
# against the other identity of such a pair is not counted as a false positive.
LFW_ERRATA = (("Nan_Wang", "Wang_Nan"), ("Chyung_Dai-chul", "Dai_Chul_Chyung"), ("Sepp_Blatter", "Joseph_Blatter"),
              ("Uday_Hussein", "Odai_Hussein"), ("Glenn_Rivers", "Doc_Rivers"), ("Prince_Felipe", "Felipe_De_Borbon"),
              ("Jon_Gruden", "John_Gruden"), ("John_Burnett", "John_Barnett"), ("Bart_Hendricks", "Ricky_Ray"),
              ("Martha_Bowen", "Gabrielle_Rose"), ("Carlos_Ruckauf", "Eduardo_Duhalde"))
SIZES = (100, 1000, 4000)
TARGETS = (1e-2, 1e-3)


def load(args: argparse.Namespace) -> tuple[dict[str, list[Path]], ev.Embeddings]:
    people = ev.list_identities(args.faces)
    paths = sorted({p for imgs in people.values() for p in imgs[: args.max_per_person]})
    pipeline = FacePipeline(Manifest.load(args.models), PipelineOptions(threads=2))
    cache = ev.cache_path(args.faces, pipeline.embedder_sha256, None, True, False, args.face)
    return people, ev.embed_images(pipeline, paths, cache, centre=args.face == "centre")


def rate(hits: int, n: int) -> dict[str, Any]:
    ci = wilson(hits, n)
    return {"rate": hits / n if n else None, "hits": hits, "n": n, "ci95": list(ci) if ci else None}


def visit_fnmr(fnmr: float, k: int, n: int) -> float:
    """P(fewer than k of n independent frames match) with per-frame match probability 1 - fnmr."""
    from math import comb

    p = 1 - fnmr
    return float(sum(comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k)))


# ---------------------------------------------------------------- 1. every_group vs pooled, cross-validated


def cross_validate(people: dict[str, list[Path]], emb: ev.Embeddings, group_of: dict[str, str],
                   args: argparse.Namespace) -> dict[str, Any]:
    proto = ev.open_protocol(people, emb.row, args.max_per_person)
    gen = ev.similarities(emb.vectors[proto.genuine_pairs[:, 0]], emb.vectors[proto.genuine_pairs[:, 1]])
    imp, iu, ju = ev.impostor_scores(emb.vectors, proto.impostor_rows)
    names = proto.impostor_people
    person_group = np.asarray([group_of.get(n, "") for n in names])
    index = {n: i for i, n in enumerate(names)}
    owner = np.asarray([index[n] for n in proto.genuine_people])
    groups = sorted(g for g in set(group_of.values()) if g)
    same = {g: (person_group[iu] == g) & (person_group[ju] == g) for g in groups}
    rng = np.random.default_rng(args.seed)
    counts: dict[str, Any] = {}
    for _ in range(args.repeats):
        half = rng.permutation(len(names)) < len(names) // 2
        for train_side in (True, False):
            train = half == train_side
            tr_pairs, te_pairs = train[iu] & train[ju], ~train[iu] & ~train[ju]
            te_gen = ~train[owner]
            for far in CV_FARS:
                thresholds = {
                    "pooled": ev.threshold_at_far(imp[tr_pairs], far),
                    "every_group": max(ev.threshold_at_far(imp[tr_pairs & same[g]], far) for g in groups),
                }
                for point, t in thresholds.items():
                    c = counts.setdefault(f"{far:g}", {}).setdefault(point, {
                        "thresholds": [], "pooled_fm": 0, "pooled_imp": 0, "accepted": 0, "genuine": 0,
                        **{f"{g}_fm": 0 for g in groups}, **{f"{g}_imp": 0 for g in groups},
                        **{f"{g}_fnm": 0 for g in groups}, **{f"{g}_gen": 0 for g in groups}})
                    c["thresholds"].append(t)
                    c["pooled_fm"] += int(np.sum(imp[te_pairs] >= t))
                    c["pooled_imp"] += int(np.sum(te_pairs))
                    c["accepted"] += int(np.sum(gen[te_gen] >= t))
                    c["genuine"] += int(np.sum(te_gen))
                    for g in groups:
                        c[f"{g}_fm"] += int(np.sum(imp[te_pairs & same[g]] >= t))
                        c[f"{g}_imp"] += int(np.sum(te_pairs & same[g]))
                        g_gen = te_gen & (person_group[owner] == g)
                        c[f"{g}_fnm"] += int(np.sum(gen[g_gen] < t))
                        c[f"{g}_gen"] += int(np.sum(g_gen))
    out: dict[str, Any] = {}
    for far_key, by_point in counts.items():
        far = float(far_key)
        out[far_key] = {}
        for point, c in by_point.items():
            per = {}
            for g in groups:
                fmr = rate(c[f"{g}_fm"], c[f"{g}_imp"])
                fnmr = c[f"{g}_fnm"] / c[f"{g}_gen"]
                per[g] = {"fmr": fmr, "fmr_vs_nominal": fmr["rate"] / far if fmr["rate"] is not None else None,
                          "fnmr_per_frame": fnmr,
                          "fnmr_per_visit": visit_fnmr(fnmr, args.required_frames, args.window_frames)}
            tar = c["accepted"] / c["genuine"]
            out[far_key][point] = {
                "threshold_mean": float(np.mean(c["thresholds"])), "threshold_sd": float(np.std(c["thresholds"])),
                "pooled_fmr": rate(c["pooled_fm"], c["pooled_imp"]), "pooled_tar": tar,
                "pooled_fnmr_per_visit": visit_fnmr(1 - tar, args.required_frames, args.window_frames),
                "groups": per,
                "worst_group_fmr_vs_nominal": max(v["fmr_vs_nominal"] or 0 for v in per.values()),
            }
        out[far_key]["tar_cost"] = out[far_key]["pooled"]["pooled_tar"] - out[far_key]["every_group"]["pooled_tar"]
    return out


# ---------------------------------------------------------------- 2. the gallery-size rule, open-set


def fitted_table(emb: ev.Embeddings, people: dict[str, list[Path]], fit_people: list[str],
                 group_of: dict[str, str], max_per_person: int) -> ThresholdTable:
    """The thresholds.json tables tools/eval/evaluate.py would write from ``fit_people`` only."""
    subset = {n: people[n] for n in fit_people}
    proto = ev.open_protocol(subset, emb.row, max_per_person)
    gen = ev.similarities(emb.vectors[proto.genuine_pairs[:, 0]], emb.vectors[proto.genuine_pairs[:, 1]])
    imp, iu, ju = ev.impostor_scores(emb.vectors, proto.impostor_rows)
    by_group, probe_by_group = ev.split_by_group(group_of, proto.impostor_people, imp, iu, ju)
    block = ev.table_block(gen, imp, by_group, None, probe_by_group)

    def points(rows: list[dict[str, Any]]) -> tuple[OperatingPoint, ...]:
        return tuple(OperatingPoint(r["far"], r["similarity"], r["tar"]) for r in rows)

    tails = {k: tuple(TailPoint(r["far"], r["similarity"], r["tar"], r["measured"]) for r in v)
             for k, v in block["impostor_tail"].items()}
    return ThresholdTable("", points(block["points"]), "fit half", None, points(block["every_group_points"]), tails)


def open_set(people: dict[str, list[Path]], emb: ev.Embeddings, group_of: dict[str, str],
             args: argparse.Namespace) -> dict[str, Any]:
    names = list(people)
    first = np.nan_to_num(np.stack([emb.vectors[emb.row[people[n][0]]] for n in names]))
    images = [(i, emb.row[p]) for i, n in enumerate(names) for p in people[n][: args.max_per_person]]
    owner = np.asarray([i for i, _ in images])
    is_first = np.asarray([emb.row[people[names[i]][0]] == r for i, r in images])
    probes = np.nan_to_num(emb.vectors[[r for _, r in images]])
    sims = probes @ first.T  # every image against every person's first image (the template)
    if args.lfw_errata:
        at = {n: i for i, n in enumerate(names)}
        for a, b in LFW_ERRATA:
            if a in at and b in at:
                sims[owner == at[a], at[b]] = -np.inf
                sims[owner == at[b], at[a]] = -np.inf
    group = np.asarray([group_of.get(n, "") for n in names])
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(names))
    halves = [np.sort(order[: len(names) // 2]), np.sort(order[len(names) // 2:])]
    results: dict[str, Any] = {}
    for op in ("pooled", "every_group"):
        acc: dict[tuple[int, float], dict[str, Any]] = {}
        for h in (0, 1):
            table = fitted_table(emb, people, [names[i] for i in halves[h]], group_of, args.max_per_person)
            test = halves[1 - h]
            for size in SIZES:
                draws: list[tuple[np.ndarray, np.ndarray]] = []
                if size < len(test):
                    for _ in range(args.draws):
                        shuffled = rng.permutation(test)
                        draws.append((np.sort(shuffled[:size]), shuffled[size:]))
                else:
                    fold = len(names) - size
                    for start in range(0, len(test), fold):
                        strangers = test[start:start + fold]
                        draws.append((np.setdiff1d(np.arange(len(names)), strangers), strangers))
                for gallery, strangers in draws:
                    sub = sims[:, gallery]
                    s_mask = np.isin(owner, strangers)
                    s_best = sub[s_mask].max(axis=1)
                    m_mask = np.isin(owner, gallery) & ~is_first
                    m_arg = sub[m_mask].argmax(axis=1)
                    m_best = sub[m_mask][np.arange(int(m_mask.sum())), m_arg]
                    m_right = gallery[m_arg] == owner[m_mask]
                    for target in TARGETS:
                        d = derive_threshold(threshold=None, far=None, fpir=target, operating_point=op, table=table,
                                             templates=len(gallery), persons=len(gallery))
                        a = acc.setdefault((size, target), {"fp": 0, "n": 0, "miss": 0, "mated": 0, "who": set(),
                                                            "predicted": [], "threshold": [], "warning": set(),
                                                            **{f"{g}_fp": 0 for g in set(group) if g},
                                                            **{f"{g}_n": 0 for g in set(group) if g}})
                        hits = s_best >= d.similarity
                        a["fp"] += int(hits.sum())
                        a["who"] |= {names[i] for i in owner[s_mask][hits]}
                        a["n"] += int(s_mask.sum())
                        for g in set(group) - {""}:
                            gm = group[owner[s_mask]] == g
                            a[f"{g}_fp"] += int(hits[gm].sum())
                            a[f"{g}_n"] += int(gm.sum())
                        a["miss"] += int(np.sum(~(m_right & (m_best >= d.similarity))))
                        a["mated"] += int(m_mask.sum())
                        a["predicted"].append(d.fpir_predicted)
                        a["threshold"].append(d.similarity)
                        if d.warning:
                            a["warning"].add(d.warning.split(":")[0])
        results[op] = [{
            "gallery_persons": size, "fpir_target": target,
            "fpir_predicted": float(np.mean(a["predicted"])),
            "fpir_measured": rate(a["fp"], a["n"]),
            "measured_over_target": a["fp"] / a["n"] / target,
            "fpir_measured_by_stranger_group": {g: rate(a[f"{g}_fp"], a[f"{g}_n"])
                                                for g in sorted(set(group) - {""})},
            "stranger_persons_hit": len(a["who"]),
            "fnir": a["miss"] / a["mated"], "mated_probes": a["mated"],
            "threshold_mean": float(np.mean(a["threshold"])), "galleries": len(a["threshold"]),
            "warnings": sorted(a["warning"]),
        } for (size, target), a in sorted(acc.items())]
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--faces", type=Path, default=ev.default_faces_dir())
    p.add_argument("--groups", type=Path, required=True, help="CSV identity,group")
    p.add_argument("--models", type=Path, default=None)
    p.add_argument("--max-per-person", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5, help="random person splits for the cross-validation")
    p.add_argument("--draws", type=int, default=5, help="random galleries per size and half (100 and 1,000)")
    p.add_argument("--required-frames", type=int, default=3, help="k of the k-of-n visit rule")
    p.add_argument("--window-frames", type=int, default=5, help="n of the k-of-n visit rule")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--face", choices=("largest", "centre"), default="largest",
                   help="the largest face of an image (as the door) or the one nearest the centre (LFW's person)")
    p.add_argument("--skip-open-set", action="store_true")
    p.add_argument("--lfw-errata", action="store_true",
                   help="a stranger matching the other identity of an LFW erratum (LFW_ERRATA) is no false positive")
    args = p.parse_args(argv)
    people, emb = load(args)
    group_of = ev.read_groups(args.groups)
    report: dict[str, Any] = {"faces": str(args.faces), "people": len(people),
                              "lfw_errata": args.lfw_errata, "face": args.face,
                              "cross_validation": cross_validate(people, emb, group_of, args)}
    if not args.skip_open_set:
        report["open_set"] = open_set(people, emb, group_of, args)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
