#!/usr/bin/env python3
"""Fit and choose the fair score calibration (facegate.recognition.calibration) on lfw_dev, by measurement.

Fitting uses embeddings and which image belongs to which person (to form impostor pairs) — never a demographic
label. ``--groups CSV`` is used only to *measure*: every candidate is cross-validated by people (fit on one half of
the identities, measure on the other half, swap; repeated over several random splits) and reported per group at
the FAR-1e-4 operating point whose threshold comes from the fitting half, exactly as thresholds.json would.

    python tools/eval/fit_calibration.py --experiments --groups ../shared/faces/lfw_dev_meta/gender.csv   # the table
    python tools/eval/fit_calibration.py --write models/fair_calibration.json --k 20                      # ship

Methods (all shift a comparison of clusters a, b by a symmetric amount):
- ``fsn``: Terhoerst et al. 2020: o_c = t_c - t_global, t_c at ``--fit-far`` on impostor pairs involving c;
  score - (o_a + o_b) / 2.
- ``fsn_within``: the same with t_c on impostor pairs with both faces in c.
- ``faircal``: after Salvador et al. 2022 (per-cluster calibration of the score, the two clusters' calibrated
  values averaged): each cluster maps a score to -log10 of its own impostor tail (the FMR among comparisons
  involving it); the comparison is the mean of both maps, turned back into a similarity on the global tail.
- ``pair`` (second attempt): a k x k symmetric table, cell (a, b) = t_ab - t_global at ``fit_far`` on impostor
  pairs between clusters a and b (a == b included), shrunk toward 0 where the cell has fewer than 30/fit_far pairs;
  score - table[a, b]. Config ``pair:<k>:<fit_far>``.
- ``density_m<m>`` (second attempt): local density d = mean cosine to the m nearest of K k-means centroids;
  score - lam * (d_a + d_b - 2 mean d). Config ``density_m<m>:<K>:<lam>``; lam ``nan`` = fitted label-free (the
  grid value that makes the FMR most equal across pairs of 10 coarse clusters on the fitting half);
  ``densityq_m<m>:<K>:nan`` fits lam to equalise pairs of 5 density quantile bins instead.

None reaches the issue's bar (tables in docs/fairness.md). The second attempt's table:

    python tools/eval/fit_calibration.py --experiments --groups ../shared/faces/lfw_dev_meta/gender.csv --splits 3 \
        --configs second_attempt
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]
from facegate.recognition.calibration import FairCalibration
from facegate.vision.models import Manifest, sha256_file
from facegate.vision.pipeline import FacePipeline, PipelineOptions

from tools.eval import evaluate as ev

TARGET_FAR = 1e-4
PRESETS = {  # named --configs lists (the docs/fairness.md tables)
    "second_attempt": "raw:0:0,pair:5:1e-4,pair:10:1e-4,pair:20:1e-4,pair:40:1e-4,pair:20:1e-3,density_m5:50:nan,"
                      "density_m20:200:nan,density_m5:200:nan,densityq_m20:200:nan,densityq_m5:50:nan,"
                      "density_m20:200:0.5,density_m20:200:-0.5,density_m20:200:-1,density_m5:50:-1",
}


# ---------------------------------------------------------------- fitting (no demographic label anywhere here)


def kmeans(x: np.ndarray, k: int, seed: int = 0, iterations: int = 50) -> np.ndarray:
    """Spherical k-means (cosine), k-means++ seeding; returns unit centroids (k, d)."""
    rng = np.random.default_rng(seed)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    centroids = [x[rng.integers(len(x))]]
    dist = 1.0 - x @ centroids[0]
    for _ in range(1, k):
        p = np.maximum(dist, 0) ** 2
        centroids.append(x[rng.choice(len(x), p=p / p.sum())])
        dist = np.minimum(dist, 1.0 - x @ centroids[-1])
    c = np.stack(centroids)
    for _ in range(iterations):
        assign = np.argmax(x @ c.T, axis=1)
        new = np.stack([x[assign == j].sum(axis=0) if np.any(assign == j) else c[j] for j in range(k)])
        new /= np.linalg.norm(new, axis=1, keepdims=True)
        if np.allclose(new, c, atol=1e-6):
            break
        c = new
    return c.astype(np.float32)


def top_threshold(scores: np.ndarray, far: float) -> float:
    """ev.threshold_at_far without a full sort (the fitting sets have millions of pairs)."""
    allowed = int(np.floor(far * len(scores)))
    if allowed >= len(scores) - 1:
        return float(np.min(scores))
    kth = np.partition(scores, len(scores) - 1 - allowed)[len(scores) - 1 - allowed]
    return float(np.nextafter(kth, np.inf))


@dataclass
class ImpostorSet:
    scores: np.ndarray  # raw cosine of every cross-person pair of the fitting images
    ca: np.ndarray  # cluster of each side
    cb: np.ndarray


def impostor_set(vectors: np.ndarray, owners: np.ndarray, centroids: np.ndarray) -> ImpostorSet:
    sims = vectors @ vectors.T
    iu, ju = np.triu_indices(len(vectors), k=1)
    keep = owners[iu] != owners[ju]
    iu, ju = iu[keep], ju[keep]
    cl = np.argmax(vectors @ centroids.T, axis=1)
    return ImpostorSet(sims[iu, ju].astype(np.float32), cl[iu], cl[ju])


def fit_offsets(imp: ImpostorSet, k: int, far: float, within: bool, centroids: np.ndarray | None = None,
                neighbours: int = 0) -> np.ndarray:
    """o_c = t_c - t_global; t_c on pairs involving c (with ``neighbours``: only pairs whose other face is in one
    of c's ``neighbours`` nearest clusters, c included), or with ``within`` both faces in c."""
    t_global = top_threshold(imp.scores, far)
    offsets = np.zeros(k, dtype=np.float32)
    near = np.ones((k, k), dtype=bool)
    if neighbours and centroids is not None:
        near[:] = False
        order = np.argsort(-(centroids @ centroids.T), axis=1)[:, :neighbours]
        for c in range(k):
            near[c, order[c]] = True
    for c in range(k):
        if within:
            mask = (imp.ca == c) & (imp.cb == c)
        elif neighbours:
            mask = ((imp.ca == c) & near[c][imp.cb]) | ((imp.cb == c) & near[c][imp.ca])
        else:
            mask = (imp.ca == c) | (imp.cb == c)
        if mask.sum() * far >= 5:  # at least 5 impostors above t_c: otherwise the tail is noise, no shift
            offsets[c] = top_threshold(imp.scores[mask], far) - t_global
    return offsets


def fit(vectors: np.ndarray, owners: np.ndarray, k: int, method: str, far: float, seed: int = 0) -> Any:
    """A fitted scorer: FairCalibration for the offset methods, a FairCalMap for faircal."""
    ok = ~np.isnan(vectors[:, 0])
    vectors, owners = vectors[ok], owners[ok]
    if method.startswith("density_m"):  # density_m<m>:<K>:<lambda or nan = fitted>
        return fit_density(vectors, owners, k, int(method[len("density_m"):]), far, seed)
    if method.startswith("densityq_m"):  # the same, lambda fitted to equalise density-bin pairs
        return fit_density(vectors, owners, k, int(method[len("densityq_m"):]), far, seed, cells_k=5,
                           by_density=True)
    centroids = kmeans(vectors, k, seed)
    imp = impostor_set(vectors, owners, centroids)
    if method == "faircal":
        return FairCalMap.fit(imp, centroids)
    if method == "pair":
        return PairTable(centroids, fit_pair_table(imp, k, far))
    neighbours = int(method.split("_nn")[1]) if "_nn" in method else 0
    offsets = fit_offsets(imp, k, far, within=method == "fsn_within", centroids=centroids, neighbours=neighbours)
    return FairCalibration(centroids, offsets, embedder_sha256="", method=method)


@dataclass
class FairCalMap:
    """Per-cluster impostor tails on a common grid of -log10 FMR (tried, see the module docstring)."""

    centroids: np.ndarray
    grid: np.ndarray  # -log10 FMR levels
    knots: np.ndarray  # (k, L) score at each level per cluster
    global_knots: np.ndarray  # (L,)

    @classmethod
    def fit(cls, imp: ImpostorSet, centroids: np.ndarray) -> FairCalMap:
        grid = np.linspace(0.5, 5.0, 19)
        qs = 1 - 10.0 ** -grid

        def knots_of(s: np.ndarray) -> np.ndarray:
            return np.maximum.accumulate(np.quantile(s, qs)) if len(s) * 10 ** -grid[-1] >= 3 else None

        global_knots = knots_of(imp.scores)
        rows = []
        for c in range(len(centroids)):
            mask = (imp.ca == c) | (imp.cb == c)
            q = knots_of(imp.scores[mask])
            rows.append(global_knots if q is None else q)
        return cls(centroids, grid, np.stack(rows), global_knots)

    def _level(self, s: np.ndarray, c: np.ndarray) -> np.ndarray:
        out = np.empty_like(s)
        for j in np.unique(c):
            m = c == j
            out[m] = np.interp(s[m], self.knots[j], self.grid, left=self.grid[0] * 0, right=np.nan)
            hi = m & np.isnan(out)  # beyond the last knot: extrapolate with the global slope
            if hi.any():
                slope = (self.grid[-1] - self.grid[-2]) / (self.knots[j, -1] - self.knots[j, -2] + 1e-9)
                out[hi] = self.grid[-1] + (s[hi] - self.knots[j, -1]) * slope
        return out

    def pair_scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        raw = np.einsum("ij,ij->i", a, b)
        ca = np.argmax(np.nan_to_num(a) @ self.centroids.T, axis=1)
        cb = np.argmax(np.nan_to_num(b) @ self.centroids.T, axis=1)
        return self._combine(raw, ca, cb)

    def upper_scores(self, v: np.ndarray) -> np.ndarray:
        iu, ju = np.triu_indices(len(v), k=1)
        c = np.argmax(np.nan_to_num(v) @ self.centroids.T, axis=1)
        return self._combine((v @ v.T)[iu, ju], c[iu], c[ju])

    def _combine(self, raw: np.ndarray, ca: np.ndarray, cb: np.ndarray) -> np.ndarray:
        level = (self._level(raw, ca) + self._level(raw, cb)) / 2
        slope = (self.global_knots[-1] - self.global_knots[-2]) / (self.grid[-1] - self.grid[-2])
        back = np.interp(level, self.grid, self.global_knots)
        back = np.where(level > self.grid[-1], self.global_knots[-1] + (level - self.grid[-1]) * slope, back)
        return np.where(np.isnan(raw), -np.inf, back)


def cell_ids(ca: np.ndarray, cb: np.ndarray, k: int) -> np.ndarray:
    """Unordered (a, b) cluster pair as one index ``min * k + max``."""
    return np.minimum(ca, cb).astype(np.int64) * k + np.maximum(ca, cb)


def fit_pair_table(imp: ImpostorSet, k: int, far: float, min_exceed: float = 30.0) -> np.ndarray:
    """Pairwise cluster offsets (tried, second attempt): cell (a, b) gets t_ab - t_global, t_ab at ``far`` on
    impostor pairs between a and b (a == b included), shrunk toward 0 by ``min(1, n * far / min_exceed)`` so a
    cell with fewer than ~30/far pairs moves only as far as its tail can be trusted."""
    t_global = top_threshold(imp.scores, far)
    cells = cell_ids(imp.ca, imp.cb, k)
    order = np.argsort(cells, kind="stable")
    counts = np.bincount(cells, minlength=k * k)
    starts = np.concatenate([[0], np.cumsum(counts)])
    table = np.zeros(k * k, dtype=np.float32)
    for cell in np.nonzero(counts)[0]:
        s = imp.scores[order[starts[cell]:starts[cell + 1]]]
        w = min(1.0, len(s) * far / min_exceed)
        table[cell] = w * (top_threshold(s, far) - t_global)
    t = table.reshape(k, k)
    return np.triu(t) + np.triu(t, 1).T  # symmetric


@dataclass
class PairTable:
    """Score ``s - table[c_a, c_b]`` (a k x k symmetric offset table; tried, see fit_pair_table)."""

    centroids: np.ndarray
    table: np.ndarray

    def _c(self, v: np.ndarray) -> np.ndarray:
        return np.asarray(np.argmax(np.nan_to_num(v) @ self.centroids.T, axis=1))

    def pair_scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        raw = np.einsum("ij,ij->i", a, b)
        out = raw - self.table[self._c(a), self._c(b)]
        return np.where(np.isnan(raw), -np.inf, out)

    def upper_scores(self, v: np.ndarray) -> np.ndarray:
        iu, ju = np.triu_indices(len(v), k=1)
        c = self._c(v)
        m = np.nan_to_num(v) @ np.nan_to_num(v).T - self.table[c[:, None], c[None, :]]
        bad = np.isnan(v[:, 0])
        return np.where(bad[iu] | bad[ju], -np.inf, m[iu, ju].astype(np.float64))


@dataclass
class DensityNorm:
    """Local-density (cohort) normalisation from centroids only (tried, second attempt): d(x) = mean cosine of x
    to its m nearest of K k-means centroids (how crowded its region is); score ``s - lam * (d_a + d_b - 2 mu)``,
    mu the mean d of the reference set. Separable: each face carries ``lam * (d - mu)``."""

    centroids: np.ndarray
    m: int
    lam: float
    mu: float

    def density(self, v: np.ndarray) -> np.ndarray:
        sims = np.nan_to_num(v) @ self.centroids.T
        return np.asarray(np.mean(-np.partition(-sims, self.m - 1, axis=1)[:, : self.m], axis=1))

    def half_offsets(self, v: np.ndarray) -> np.ndarray:
        return self.lam * (self.density(v) - self.mu)

    def pair_scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        raw = np.einsum("ij,ij->i", a, b)
        return np.where(np.isnan(raw), -np.inf, raw - self.half_offsets(a) - self.half_offsets(b))

    def upper_scores(self, v: np.ndarray) -> np.ndarray:
        iu, ju = np.triu_indices(len(v), k=1)
        h = self.half_offsets(v)
        m = np.nan_to_num(v) @ np.nan_to_num(v).T - h[:, None] - h[None, :]
        bad = np.isnan(v[:, 0])
        return np.where(bad[iu] | bad[ju], -np.inf, m[iu, ju].astype(np.float64))


LAMBDA_GRID = np.arange(-2.0, 3.01, 0.25)


def fit_density(vectors: np.ndarray, owners: np.ndarray, big_k: int, m: int, lam: float, seed: int,
                cells_k: int = 10, far: float = 1e-3, by_density: bool = False) -> DensityNorm:
    """Centroids by k-means; lam given, or (lam NaN) the grid value that makes the FMR most equal across
    unordered pairs of ``cells_k`` coarse clusters (label-free: clusters, not groups) at the global threshold for
    ``far`` on the fitting half (1e-3: enough exceedances per cell to compare)."""
    centroids = kmeans(vectors, big_k, seed)
    probe = DensityNorm(centroids, m, 1.0, 0.0)
    d = probe.density(vectors)
    mu = float(np.mean(d))
    if not np.isnan(lam):
        return DensityNorm(centroids, m, lam, mu)
    coarse = kmeans(vectors, cells_k, seed + 1)
    imp = impostor_set(vectors, owners, coarse)
    iu, ju = np.triu_indices(len(vectors), k=1)
    keep = owners[iu] != owners[ju]
    dsum = (d[iu] + d[ju])[keep].astype(np.float32) - 2 * mu
    if by_density:  # cells = pairs of density quantile bins instead of k-means clusters
        bins = np.searchsorted(np.quantile(d, np.linspace(0, 1, cells_k + 1)[1:-1]), d)
        imp = ImpostorSet(imp.scores, bins[iu][keep], bins[ju][keep])
    cells = cell_ids(imp.ca, imp.cb, cells_k)
    n = np.bincount(cells, minlength=cells_k * cells_k).astype(float)
    use = n * far >= 30
    best, best_lam = np.inf, 0.0
    for lam_try in LAMBDA_GRID:
        s = imp.scores - lam_try * dsum
        t = top_threshold(s, far)
        fm = np.bincount(cells, weights=(s >= t), minlength=cells_k * cells_k)
        ratio = np.log((fm[use] + 1) / (n[use] * far))
        spread = float(np.average((ratio - np.average(ratio, weights=n[use])) ** 2, weights=n[use]))
        if spread < best:
            best, best_lam = spread, float(lam_try)
    return DensityNorm(centroids, m, best_lam, mu)


class Raw:
    """No calibration: the cosine itself."""

    def pair_scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return ev.similarities(a, b)


def upper_scores(scorer: Any, v: np.ndarray) -> np.ndarray:
    """Scores of every pair i < j of rows of v (row-major triu order), without materialising pair arrays."""
    if hasattr(scorer, "upper_scores"):
        return np.asarray(scorer.upper_scores(v))
    iu, ju = np.triu_indices(len(v), k=1)
    m = np.nan_to_num(v) @ np.nan_to_num(v).T
    if isinstance(scorer, FairCalibration):
        half = scorer.half_offsets(np.nan_to_num(v))
        m = m - half[:, None] - half[None, :]
    out = m[iu, ju].astype(np.float64)
    bad = np.isnan(v[:, 0])
    return np.where(bad[iu] | bad[ju], -np.inf, out)


# ---------------------------------------------------------------- measuring (labels used here only)


@dataclass
class Half:
    people: dict[str, list[Path]]
    vectors: np.ndarray  # all images of these people (fitting)
    owners: np.ndarray


def measure(scorer: Any, people: dict[str, list[Path]], emb: ev.Embeddings, group_of: dict[str, str],
            threshold: float | None) -> dict[str, Any]:
    """Counts on the evaluation protocol of tools/eval/evaluate.py (one image per person for impostors)."""
    proto = ev.open_protocol(people, emb.row, 20)
    v = emb.vectors
    gen = scorer.pair_scores(v[proto.genuine_pairs[:, 0]], v[proto.genuine_pairs[:, 1]])
    rows = proto.impostor_rows
    iu, ju = np.triu_indices(len(rows), k=1)
    imp = upper_scores(scorer, v[rows])
    imp = np.where(np.isnan(imp), -np.inf, imp)
    own_t = ev.threshold_at_far(imp, TARGET_FAR)
    t = own_t if threshold is None else threshold
    owners = np.asarray([group_of.get(n, "") for n in proto.genuine_people])
    imp_g = np.asarray([group_of.get(n, "") for n in proto.impostor_people])
    out: dict[str, Any] = {"tar_own": float(np.mean(gen >= own_t)), "genuine": len(gen), "impostor": len(imp),
                           "far_at_t": float(np.mean(imp >= t)), "groups": {}}
    for g in ("female", "male"):
        gm = owners == g
        im = (imp_g[iu] == g) & (imp_g[ju] == g)
        out["groups"][g] = {"fm": int(np.sum(imp[im] >= t)), "imp": int(im.sum()),
                            "fnm": int(np.sum(gen[gm] < t)), "gen": int(gm.sum())}
    return out


def operating_threshold(scorer: Any, half: Half, people: dict[str, list[Path]], emb: ev.Embeddings) -> float:
    """The FAR-1e-4 similarity on the fitting half, by the same protocol as thresholds.json."""
    proto = ev.open_protocol(people, emb.row, 20)
    imp = upper_scores(scorer, emb.vectors[proto.impostor_rows])
    return ev.threshold_at_far(np.where(np.isnan(imp), -np.inf, imp), TARGET_FAR)


def split_people(people: dict[str, list[Path]], seed: int) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    names = sorted(people)
    order = np.random.default_rng(seed).permutation(len(names))
    a = {names[i]: people[names[i]] for i in order[: len(names) // 2]}
    b = {names[i]: people[names[i]] for i in order[len(names) // 2:]}
    return a, b


def half_arrays(people: dict[str, list[Path]], emb: ev.Embeddings) -> Half:
    rows = [(emb.row[p], n) for n, imgs in people.items() for p in imgs[:20]]
    return Half(people, emb.vectors[[r for r, _ in rows]], np.asarray([n for _, n in rows]))


def experiments(emb: ev.Embeddings, people: dict[str, list[Path]], group_of: dict[str, str],
                configs: list[tuple[str, int, float]], splits: int) -> list[dict[str, Any]]:
    results = []
    for method, k, far in configs:
        totals: dict[str, Any] = {"tar": [], "far": [], "g": {g: {"fm": 0, "imp": 0, "fnm": 0, "gen": 0}
                                                              for g in ("female", "male")}}
        for seed in range(splits):
            a, b = split_people(people, seed)
            for fit_half, test_half in ((a, b), (b, a)):
                h = half_arrays(fit_half, emb)
                scorer = Raw() if method == "raw" else fit(h.vectors, h.owners, k, method, far, seed)
                t = operating_threshold(scorer, h, fit_half, emb)
                if hasattr(scorer, "lam"):
                    totals.setdefault("lam", []).append(scorer.lam)
                m = measure(scorer, test_half, emb, group_of, t)
                totals["tar"].append(m["tar_own"])
                totals["far"].append(m["far_at_t"])
                for g, c in m["groups"].items():
                    for key in c:
                        totals["g"][g][key] += c[key]
        g = totals["g"]
        fmr = {x: g[x]["fm"] / g[x]["imp"] for x in g}
        fnmr = {x: g[x]["fnm"] / g[x]["gen"] for x in g}
        row = {"method": method, "k": k, "fit_far": far, "fmr_female": fmr["female"], "fmr_male": fmr["male"],
               "fmr_ratio_f_m": fmr["female"] / fmr["male"] if fmr["male"] else None,
               "fnmr_female": fnmr["female"], "fnmr_male": fnmr["male"],
               "fnmr_ratio_f_m": fnmr["female"] / fnmr["male"] if fnmr["male"] else None,
               "false_matches": {x: g[x]["fm"] for x in g}, "impostor_pairs": {x: g[x]["imp"] for x in g},
               "far_overall_at_t": float(np.mean(totals["far"])), "tar_at_1e-4": float(np.mean(totals["tar"])),
               "tar_min": float(np.min(totals["tar"])), "folds": len(totals["tar"])}
        if "lam" in totals:
            row["lambda_per_fold"] = totals["lam"]
        print(json.dumps(row), file=sys.stderr, flush=True)
        results.append(row)
    return results


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| method | k | fit FAR | F/M FMR ratio | FMR female (x nominal) | FMR male (x nominal) | overall FAR at t "
           "| TAR@1e-4 | FNMR F/M ratio |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        fit_col = (f"lam {np.mean(r['lambda_per_fold']):.2f}" + (" (fitted)" if np.isnan(r["fit_far"]) else "")
                   if "lambda_per_fold" in r else f"{r['fit_far']:g}")
        out.append(f"| {r['method']} | {r['k']} | {fit_col} | {r['fmr_ratio_f_m']:.2f} "
                   f"| {r['fmr_female']:.2e} ({r['fmr_female'] / TARGET_FAR:.2f}) "
                   f"| {r['fmr_male']:.2e} ({r['fmr_male'] / TARGET_FAR:.2f}) | {r['far_overall_at_t']:.2e} "
                   f"| {100 * r['tar_at_1e-4']:.2f}% | {r['fnmr_ratio_f_m']:.2f} |")
    return "\n".join(out)


# ---------------------------------------------------------------- driver


def load_embeddings(args: argparse.Namespace) -> tuple[dict[str, list[Path]], ev.Embeddings, str]:
    """The same images, pipeline and cache as tools/eval/evaluate.py (so both tools embed lfw_dev once)."""
    eargs = ev.parse_args(["--faces", str(args.faces), "--threads", str(args.threads)]
                          + (["--models", str(args.models)] if args.models else []))
    people = ev.list_identities(eargs.faces)
    paths = sorted({p for imgs in people.values() for p in imgs[: eargs.max_per_person]})
    manifest = Manifest.load(eargs.models)
    pipeline = FacePipeline(manifest, PipelineOptions(threads=eargs.threads, five_point=True))
    emb = ev.embed_images(pipeline, paths, ev.cache_path(eargs.faces, pipeline.embedder_sha256, None, True, False,
                                                         "largest"))
    return people, emb, pipeline.embedder_sha256


def write_calibration(args: argparse.Namespace, people: dict[str, list[Path]], emb: ev.Embeddings,
                      embedder_sha256: str) -> None:
    h = half_arrays(people, emb)
    cal = fit(h.vectors, h.owners, args.k, args.method, args.fit_far, seed=0)
    if not isinstance(cal, FairCalibration):
        raise SystemExit("only the offset methods (fsn, fsn_within) can be shipped")
    data = FairCalibration(cal.centroids, cal.offsets, embedder_sha256, method=args.method).to_json()
    data["fit"] = {"tool": "tools/eval/fit_calibration.py", "faces": args.faces.name, "people": len(people),
                   "images": int(np.sum(~np.isnan(h.vectors[:, 0]))), "fit_far": args.fit_far, "kmeans_seed": 0,
                   "labels_used": "identity (to form impostor pairs) only; no demographic label"}
    args.write.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    update_manifest(args.write, data)
    print(f"wrote {args.write} (k={args.k}, offsets {np.min(cal.offsets):+.4f}..{np.max(cal.offsets):+.4f})",
          file=sys.stderr)


def update_manifest(path: Path, data: dict[str, Any]) -> None:
    manifest_path = path.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry = {
        "name": f"fair_score_normalisation_k{data['k']}", "role": "score_calibration", "default": True,
        "file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size,
        "quantization": "none (JSON float parameters)",
        "input": {"shape": [1, len(data["centroids"][0])], "dtype": "float32", "layout": "NC", "color": "none",
                  "mean": 0.0, "std": 1.0},
        "outputs": [{"name": "cluster_offset", "shape": [1], "dtype": "float32"}],
        "source": {"registry": "none", "package": "facegate", "version": "0.1.0", "archive": None,
                   "archive_sha256": None, "tool": f"tools/eval/fit_calibration.py --write {path.name} --k {data['k']} "
                                                   f"--method {data['method']}",
                   "training_data": f"shared/faces/{data['fit']['faces']}: Labeled Faces in the Wild (Huang et al. "
                                    "2007), View-1 training people, embeddings of the default embedder",
                   "embedder_sha256": data["embedder_sha256"],
                   "transform": f"spherical k-means (k={data['k']}, seed 0) of the embeddings; per cluster the "
                                f"threshold at FAR {data['fit']['fit_far']:g} on cross-person pairs "
                                f"{'with both faces in it' if data['method'] == 'fsn_within' else 'involving it'}, "
                                "offset = cluster threshold - global threshold (Terhoerst et al. 2020); no "
                                "demographic label used"},
        "licence": "Apache-2.0 (facegate code and parameters); derived from LFW face images (a research "
                   "benchmark; no image or embedding is included, only cluster centroids and offsets): check its "
                   "terms before commercial deployment",
        "upstream": "fair score normalization after Terhoerst, Kolf, Damer, Kirchbuchner, Kuijper (IJCB 2020), "
                    "reimplemented",
    }
    manifest_path.write_text(with_entry(manifest_path.read_text(), manifest, entry))


def with_entry(text: str, manifest: dict[str, Any], entry: dict[str, Any]) -> str:
    """The manifest text with ``entry`` as its last model (replacing an older calibration entry), edited as
    text so the rest of the file keeps its layout (one-line shapes) and a diff shows only this entry."""
    def block(item: dict[str, Any]) -> str:
        raw = json.dumps(item, indent=2)
        raw = re.sub(r"\[\s*([-0-9.e,\s]+?)\s*\]", lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",")
                     + "]", raw)
        return "\n".join("    " + line for line in raw.splitlines())

    old = [m for m in manifest["models"] if m.get("role") == "score_calibration"]
    if old:
        start = text.index(block(old[0]).splitlines()[0].rstrip() + "\n" + block(old[0]).splitlines()[1])
        end = text.index("\n    }", start) + len("\n    }")
        text = text[:start].rstrip().rstrip(",") + text[end:]
    tail = text.rindex("\n  ]")
    return text[:tail].rstrip() + ",\n" + block(entry) + text[tail:]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--faces", type=Path, default=ev.default_faces_dir())
    p.add_argument("--models", type=Path, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--groups", type=Path, default=None, help="CSV identity,group: for measuring only")
    p.add_argument("--experiments", action="store_true", help="cross-validate the candidates, print the table")
    p.add_argument("--configs", default="raw:0:0,fsn:5:1e-4,fsn:10:1e-4,fsn:20:1e-4,fsn:50:1e-4,fsn:20:1e-3,"
                                        "fsn_within:20:1e-3,faircal:20:0",
                   help="method:k:fit_far,... for --experiments, or a preset: " + ", ".join(PRESETS))
    p.add_argument("--splits", type=int, default=3, help="random person splits (each measured both ways)")
    p.add_argument("--out", type=Path, default=None, help="write the experiment rows as JSON here")
    p.add_argument("--write", type=Path, default=None, help="fit on all people and write the calibration file")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--method", default="fsn", choices=["fsn", "fsn_within"])
    p.add_argument("--fit-far", type=float, default=1e-4)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    people, emb, embedder_sha256 = load_embeddings(args)
    if args.experiments:
        if args.groups is None:
            raise SystemExit("--experiments needs --groups (labels are used to measure, never to fit)")
        group_of = dict(ev.read_groups(args.groups))
        spec = PRESETS.get(args.configs, args.configs)
        configs = [(m, int(k), float(f)) for m, k, f in (c.split(":") for c in spec.split(","))]
        rows = experiments(emb, people, group_of, configs, args.splits)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(rows, indent=2))
        print(table(rows))
    if args.write:
        write_calibration(args, people, emb, embedder_sha256)
    return 0


if __name__ == "__main__":
    sys.exit(main())
