#!/usr/bin/env python3
"""Measure recognition accuracy the way a door uses it: TAR at a strict FAR, and open-set 1:N errors.

Works on any folder laid out ``<identity>/<images>``. Reports, as JSON (and a DET plot PNG):
- LFW-style pairs accuracy (10-fold cross-validated threshold) when a pairs file is given;
- the open protocol: genuine = every same-person pair (at most ``--max-per-person`` images each), impostors =
  every cross-person pair of one image per person; TAR at FAR 1e-2..1e-5 with the thresholds, and EER;
- open-set identification: FNIR at FPIR, with half the multi-image people enrolled and everyone else a stranger;
- per-group FMR/FNMR (ISO/IEC 19795-10 style) when ``--groups CSV`` maps identities to groups: ``per_group``
  at every operating point of models/thresholds.json (``{far: {group: {fmr, fnmr, impostor_pairs,
  genuine_pairs, threshold}}}``), ``per_group_summary`` (max/min ratios, each group's FMR over the nominal FAR)
  and, with ``--out``, a plot of FMR against threshold per group.
``--write-thresholds`` with ``--groups`` also writes ``every_group_points`` (at each FAR the similarity at which
the worst group's same-group impostors meet it, each group's counts beside it) next to the pooled ``points``, and
always an ``impostor_tail`` grid for the door's gallery-size rule (facegate.recognition.operating_point).
Scores are the device's: with the fair score calibration (facegate.recognition.calibration) unless
``--no-fair-calibration``; ``--write-thresholds`` writes both tables (raw and calibrated).
An image where no face is found counts as a rejection on both sides (never a false accept) and is listed.

    python tools/eval/evaluate.py --faces ../shared/faces/lfw_dev --pairs ../shared/faces/lfw_dev_meta/pairsDevTrain.txt
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]
from facegate.base.imageio import read_image
from facegate.errors import ImageError, ModelError
from facegate.recognition.calibration import ROLE as CALIBRATION_ROLE
from facegate.recognition.calibration import FairCalibration
from facegate.recognition.thresholds import table_for
from facegate.vision.models import Manifest
from facegate.vision.pipeline import FacePipeline, PipelineOptions

from tools import ROOT

FARS = (1e-2, 1e-3, 1e-4, 1e-5)
FPIRS = (1e-1, 1e-2, 1e-3)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def default_faces_dir() -> Path:
    return Path(os.environ.get("FACEGATE_FACES", ROOT.parent / "shared" / "faces")) / "lfw_dev"


def progress(items: list[Any], desc: str) -> Iterable[Any]:
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, file=sys.stderr, leave=False, mininterval=10, disable=None)


def list_identities(root: Path) -> dict[str, list[Path]]:
    people: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if images:
            people[folder.name] = images
    return people


# ---------------------------------------------------------------- embeddings


@dataclass
class Embeddings:
    """Embeddings of a set of images; rows of images with no face are NaN."""

    paths: list[Path]
    vectors: np.ndarray
    seconds: float

    def __post_init__(self) -> None:
        self.row = {p: i for i, p in enumerate(self.paths)}

    def failed(self) -> list[Path]:
        return [p for p, v in zip(self.paths, self.vectors, strict=True) if np.isnan(v[0])]


def centre_face(pipeline: FacePipeline, image: np.ndarray) -> list[Any]:
    """The face nearest the image centre (LFW centres the labelled person; the largest face of a photo of two
    people is sometimes the other one, which makes a false "impostor" pair of one person)."""
    faces = pipeline.detect(image)
    if not faces:
        return []
    cy, cx = image.shape[0] / 2, image.shape[1] / 2
    nearest = min(faces, key=lambda f: (f.box[0] + f.box[2] / 2 - cx) ** 2 + (f.box[1] + f.box[3] / 2 - cy) ** 2)
    return list(pipeline.analyse(image, [nearest]))


def embed_images(pipeline: FacePipeline, paths: list[Path], cache: Path | None, centre: bool = False) -> Embeddings:
    """Largest (or with ``centre`` the most central) face of each image; cached on disk by pipeline config so
    variants can be compared quickly."""
    if cache is not None and cache.is_file():
        data = np.load(cache, allow_pickle=False)
        cached = dict(zip(data["paths"].tolist(), data["vectors"], strict=True))
        if all(str(p) in cached for p in paths):
            return Embeddings(paths, np.stack([cached[str(p)] for p in paths]), float(data["seconds"]))
    vectors = np.full((len(paths), pipeline.embedder.dim), np.nan, dtype=np.float32)
    start = time.perf_counter()
    for i, path in enumerate(progress(paths, "embedding")):
        try:
            image = read_image(path)
            results = centre_face(pipeline, image) if centre else pipeline.process(image, largest_only=True)
        except ImageError:
            continue
        if results and results[0].embedding is not None:
            vectors[i] = results[0].embedding
    seconds = time.perf_counter() - start
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, paths=np.array([str(p) for p in paths]), vectors=vectors, seconds=seconds)
    return Embeddings(paths, vectors, seconds)


def embeddings_by_person(faces: Path, models: Path | None, threads: int, per_person: int | None = None,
                         min_faces: int = 1) -> tuple[Manifest, dict[str, np.ndarray]]:
    """Each person's embeddings (the largest face of each of their first ``per_person`` images; images without
    one dropped, persons left with fewer than ``min_faces`` left out) from the same pipeline and cache as the
    default evaluation, so the tools that build on it embed a face set once."""
    people = list_identities(faces)
    paths = sorted(p for imgs in people.values() for p in imgs[:per_person])
    manifest = Manifest.load(models)
    pipeline = FacePipeline(manifest, PipelineOptions(threads=threads))
    emb = embed_images(pipeline, paths, cache_path(faces, pipeline.embedder_sha256, None, True, False, "largest"))
    by_person: dict[str, np.ndarray] = {}
    for name, imgs in people.items():
        rows = np.stack([emb.vectors[emb.row[p]] for p in imgs[:per_person]])
        rows = rows[~np.isnan(rows[:, 0])]
        if len(rows) >= min_faces:
            by_person[name] = rows
    return manifest, by_person


def similarities(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine; a NaN (no face) scores -inf so it can never be accepted."""
    sims = np.einsum("ij,ij->i", a, b)
    return np.where(np.isnan(sims), -np.inf, sims)


def cache_path(root: Path, embedder_sha256: str, detector: str | None, five_point: bool, flip: bool,
               face: str) -> Path:
    key_fields: list[Any] = [str(root), embedder_sha256, detector, five_point, flip]
    if face != "largest":  # the largest face keeps the key earlier caches were written under
        key_fields.append(face)
    key = hashlib.sha256(json.dumps(key_fields).encode()).hexdigest()[:16]
    return ROOT / "build" / "eval-cache" / f"{key}.npz"


# ---------------------------------------------------------------- metrics


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """The lowest threshold at which at most ``far`` of the impostor scores are accepted (score >= t)."""
    ordered = np.sort(impostor)[::-1]
    allowed = int(np.floor(far * len(ordered)))
    if allowed >= len(ordered):
        return float(ordered[-1])
    return float(np.nextafter(ordered[allowed], np.inf))


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, fars: Iterable[float]) -> list[dict[str, float]]:
    rows = []
    for far in fars:
        t = threshold_at_far(impostor, far)
        rows.append({
            "far": far,
            "threshold": round(t, 5),
            "tar": float(np.mean(genuine >= t)),
            "measured_far": float(np.mean(impostor >= t)),
            "measurable": bool(far * len(impostor) >= 1.0),
        })
    return rows


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    thresholds = np.unique(np.concatenate([genuine[np.isfinite(genuine)], impostor[np.isfinite(impostor)]]))
    if len(thresholds) > 4000:
        thresholds = np.quantile(thresholds, np.linspace(0, 1, 4000))
    imp_sorted, gen_sorted = np.sort(impostor), np.sort(genuine)
    far = 1 - np.searchsorted(imp_sorted, thresholds, side="left") / len(imp_sorted)
    frr = np.searchsorted(gen_sorted, thresholds, side="left") / len(gen_sorted)
    i = int(np.argmin(np.abs(far - frr)))
    return float((far[i] + frr[i]) / 2), float(thresholds[i])


def pairs_accuracy(scores: np.ndarray, same: np.ndarray, folds: int = 10) -> dict[str, float]:
    """LFW-style accuracy: threshold chosen on 9 folds, accuracy measured on the 10th (interleaved folds)."""
    candidates = np.unique(scores[np.isfinite(scores)])
    idx = np.arange(len(scores))
    accs = []
    for k in range(folds):
        test = idx % folds == k
        train = ~test
        train_acc = [np.mean((scores[train] >= t) == same[train]) for t in candidates]
        best = candidates[int(np.argmax(train_acc))]
        accs.append(float(np.mean((scores[test] >= best) == same[test])))
    best_overall = max(float(np.mean((scores >= t) == same)) for t in candidates)
    return {"accuracy_cv": float(np.mean(accs)), "accuracy_cv_std": float(np.std(accs)),
            "accuracy_best_threshold": best_overall}


def read_pairs(path: Path, root: Path) -> list[tuple[Path, Path, bool]]:
    """LFW pairs format: 'name i j' (same person) or 'name1 i name2 j' (different), images 1-based."""
    def image(name: str, number: str) -> Path:
        return root / name / f"{name}_{int(number):04d}.jpg"

    pairs = []
    for line in path.read_text().splitlines()[1:]:
        parts = line.split()
        if len(parts) == 3:
            pairs.append((image(parts[0], parts[1]), image(parts[0], parts[2]), True))
        elif len(parts) == 4:
            pairs.append((image(parts[0], parts[1]), image(parts[2], parts[3]), False))
    return pairs


# ---------------------------------------------------------------- protocols


@dataclass
class OpenProtocol:
    genuine_pairs: np.ndarray  # (G, 2) row indices into the embeddings
    impostor_rows: np.ndarray  # one image per person; all cross pairs are impostors
    impostor_people: list[str]
    genuine_people: list[str]  # owner of each genuine pair


def open_protocol(people: dict[str, list[Path]], row: dict[Path, int], max_per_person: int) -> OpenProtocol:
    genuine, owners = [], []
    for name, images in people.items():
        rows = [row[p] for p in images[:max_per_person]]
        for i in range(len(rows)):
            for j in range(i + 1, len(rows)):
                genuine.append((rows[i], rows[j]))
                owners.append(name)
    return OpenProtocol(
        genuine_pairs=np.asarray(genuine, dtype=np.int64).reshape(-1, 2),
        impostor_rows=np.asarray([row[images[0]] for images in people.values()], dtype=np.int64),
        impostor_people=list(people),
        genuine_people=owners,
    )


def impostor_scores(vectors: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All cross-person scores of one image per person; returns scores and the (i, j) person indices."""
    m = np.nan_to_num(vectors[rows], nan=0.0)
    ok = ~np.isnan(vectors[rows][:, 0])
    sims = m @ m.T
    iu, ju = np.triu_indices(len(rows), k=1)
    scores = sims[iu, ju]
    scores = np.where(ok[iu] & ok[ju], scores, -np.inf)
    return scores.astype(np.float64), iu, ju


def open_set(people: dict[str, list[Path]], emb: Embeddings, max_per_person: int,
             calibration: FairCalibration | None = None) -> dict[str, Any]:
    """Half of the multi-image people are enrolled with their first image; everyone else is a stranger."""
    multi = [n for n, imgs in people.items() if len(imgs) >= 2]
    enrolled = multi[::2]
    enrolled_set = set(enrolled)
    gallery = np.nan_to_num(np.stack([emb.vectors[emb.row[people[n][0]]] for n in enrolled]), nan=0.0)
    mated, mated_truth = [], []
    for gi, name in enumerate(enrolled):
        for p in people[name][1:max_per_person]:
            mated.append(emb.vectors[emb.row[p]])
            mated_truth.append(gi)
    strangers = [emb.vectors[emb.row[imgs[0]]] for n, imgs in people.items() if n not in enrolled_set]

    def top1(probes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        q = np.stack(probes)
        bad = np.isnan(q[:, 0])
        sims = np.nan_to_num(q, nan=0.0) @ gallery.T
        if calibration is not None:  # the same shift EmbeddingIndex.search applies
            sims = sims - calibration.half_offsets(np.nan_to_num(q, nan=0.0))[:, None] \
                - calibration.half_offsets(gallery)[None, :]
        best = sims.argmax(axis=1)
        score = sims[np.arange(len(q)), best]
        return best, np.where(bad, -np.inf, score)

    m_best, m_score = top1(mated)
    _s_best, s_score = top1(strangers)
    correct = m_best == np.asarray(mated_truth)
    rows = []
    for fpir in FPIRS:
        t = threshold_at_far(s_score, fpir)
        rows.append({"fpir": fpir, "threshold": round(t, 5),
                     "fnir": float(np.mean(~(correct & (m_score >= t)))),
                     "measured_fpir": float(np.mean(s_score >= t))})
    return {"enrolled": len(enrolled), "mated_probes": len(mated), "non_mated_probes": len(strangers),
            "rank1_identification_rate": float(np.mean(correct)), "fnir_at_fpir": rows}


def read_groups(groups_csv: Path) -> dict[str, str]:
    """``identity,group`` rows (a header row ``identity,group`` is skipped)."""
    with groups_csv.open() as handle:
        return {row[0]: row[1] for row in csv.reader(handle)
                if len(row) >= 2 and (row[0], row[1]) != ("identity", "group")}


TAIL_FARS = tuple(float(f"{10 ** (-2 - i / 4):.3g}") for i in range(29))  # 1e-2 .. 1e-9, quarter decades
TAIL_MIN_EXCEEDANCES = 30  # a tail point is "measured" when at least this many impostor scores reach it


def tail_similarities(impostor: np.ndarray, fars: Iterable[float] = TAIL_FARS) -> list[tuple[float, float, bool]]:
    """(far, similarity, measured) down the impostor tail: empirical while ``far * n`` reaches
    TAIL_MIN_EXCEEDANCES, below that extrapolated linearly in log10(far) with the slope of the last measured decade
    (the top few LFW impostor pairs are the same person under two names, so the raw extreme is not a tail)."""
    finite = np.sort(impostor[np.isfinite(impostor)])[::-1]
    n = len(finite)
    floor_far = TAIL_MIN_EXCEEDANCES / n
    fit = np.logspace(np.log10(floor_far), np.log10(min(10 * floor_far, 1e-2)), 9)
    fit_sims = [float(finite[int(f * n) - 1]) for f in fit]
    slope, intercept = np.polyfit(np.log10(fit), fit_sims, 1)
    rows = []
    for far in fars:
        if far >= floor_far:
            rows.append((far, float(np.nextafter(finite[int(np.floor(far * n))], np.inf)), True))
        else:
            rows.append((far, float(min(1.0, intercept + slope * np.log10(far))), False))
    return rows


def group_impostors(groups_csv: Path, proto: OpenProtocol, imp: np.ndarray, iu: np.ndarray,
                    ju: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per group: the same-group impostor scores (the hard case the worst-group points are fitted on), and the
    scores of a probe of the group against everyone (a pair counts once for each of its people in the group: a
    stranger of this group at a gallery mixed like the reference set; what the gallery-size rule reads)."""
    group_of = read_groups(groups_csv)
    return split_by_group(group_of, proto.impostor_people, imp, iu, ju)


def split_by_group(group_of: dict[str, str], names: list[str], imp: np.ndarray, iu: np.ndarray,
                   ju: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    people = np.asarray([group_of.get(n, "") for n in names])
    groups = sorted(g for g in set(group_of.values()) if g)
    same = {g: imp[(people[iu] == g) & (people[ju] == g)] for g in groups}
    probe = {g: np.concatenate([imp[people[iu] == g], imp[people[ju] == g]]) for g in groups}
    return same, probe


def worst_group_threshold(by_group: dict[str, np.ndarray], far: float) -> float:
    return max(threshold_at_far(scores, far) for scores in by_group.values() if len(scores))


def group_counts(by_group: dict[str, np.ndarray], gen_by_group: dict[str, np.ndarray],
                 threshold: float) -> dict[str, dict[str, Any]]:
    return {g: {"false_matches": int(np.sum(scores >= threshold)), "impostor_pairs": len(scores),
                "fnmr": float(np.mean(gen_by_group[g] < threshold)) if len(gen_by_group.get(g, ())) else None}
            for g, scores in by_group.items()}


def table_block(gen: np.ndarray, imp: np.ndarray, by_group: dict[str, np.ndarray] | None,
                gen_by_group: dict[str, np.ndarray] | None,
                probe_by_group: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """``points`` (pooled), and with groups ``every_group_points`` (worst group's same-group impostors);
    ``impostor_tail`` for the gallery-size rule: pooled, and ``every_group`` from the worst group's probes against
    everyone (``probe_by_group``)."""
    def point(far: float, t: float) -> dict[str, Any]:
        row: dict[str, Any] = {"far": far, "similarity": round(t, 5), "tar": float(np.mean(gen >= t))}
        if by_group is not None and gen_by_group is not None:
            row["groups"] = group_counts(by_group, gen_by_group, t)
        return row

    block: dict[str, Any] = {"points": [point(far, threshold_at_far(imp, far)) for far in FARS]}
    tails = {"pooled": tail_similarities(imp)}
    if by_group is not None:
        block["every_group_points"] = [point(far, worst_group_threshold(by_group, far)) for far in FARS]
        per = [tail_similarities(scores) for scores in (probe_by_group or by_group).values() if len(scores)]
        tails["every_group"] = [(rows[0][0], max(r[1] for r in rows), all(r[2] for r in rows))
                                for rows in zip(*per, strict=True)]
    block["impostor_tail"] = {
        name: [{"far": far, "similarity": round(sim, 5), "tar": round(float(np.mean(gen >= sim)), 5),
                "measured": measured} for far, sim, measured in rows]
        for name, rows in tails.items()}
    return block


def group_report(groups_csv: Path, proto: OpenProtocol, gen: np.ndarray, imp: np.ndarray,
                 iu: np.ndarray, ju: np.ndarray, threshold: float) -> dict[str, Any]:
    """FMR and FNMR per demographic group at one global threshold, and their max/min ratios."""
    group_of = read_groups(groups_csv)
    per: dict[str, dict[str, Any]] = {}
    owners = np.asarray([group_of.get(n, "") for n in proto.genuine_people])
    imp_people = np.asarray([group_of.get(n, "") for n in proto.impostor_people])
    for group in sorted(set(group_of.values())):
        g_mask = owners == group
        i_mask = (imp_people[iu] == group) & (imp_people[ju] == group)  # same-group impostors: the hard case
        per[group] = {
            "genuine_pairs": int(g_mask.sum()), "impostor_pairs": int(i_mask.sum()),
            "fnmr": float(np.mean(gen[g_mask] < threshold)) if g_mask.any() else None,
            "fmr": float(np.mean(imp[i_mask] >= threshold)) if i_mask.any() else None,
        }

    def ratio(key: str) -> float | None:
        vals = [v[key] for v in per.values() if v[key] is not None]
        if not vals or min(vals) == 0:
            return None
        return max(vals) / min(vals)

    return {"threshold": threshold, "groups": per, "fnmr_max_min_ratio": ratio("fnmr"),
            "fmr_max_min_ratio": ratio("fmr")}


def per_group_at(groups_csv: Path, proto: OpenProtocol, gen: np.ndarray, imp: np.ndarray, iu: np.ndarray,
                 ju: np.ndarray, points: list[tuple[float, float]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``per_group`` ({far: {group: counts and rates}}) and ``per_group_summary`` at each (far, threshold)."""
    per: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    group_of = read_groups(groups_csv)
    imp_people = np.asarray([group_of.get(n, "") for n in proto.impostor_people])
    a_group, b_group = imp_people[iu], imp_people[ju]
    for far, threshold in points:
        rep = group_report(groups_csv, proto, gen, imp, iu, ju, threshold)
        key = str(far)
        accepted = imp >= threshold

        def vs_everyone(group: str, accepted: np.ndarray = accepted) -> float | None:
            """A probe of this group against everyone else (either side of a pair; a same-group pair counts for
            both of its people): the rate a label-free calibration on this population can see."""
            weight = (a_group == group).astype(np.int64) + (b_group == group).astype(np.int64)
            return float(np.sum(weight * accepted) / np.sum(weight)) if weight.any() else None

        per[key] = {g: {"fmr": v["fmr"], "fnmr": v["fnmr"], "impostor_pairs": v["impostor_pairs"],
                        "genuine_pairs": v["genuine_pairs"], "threshold": threshold}
                    for g, v in rep["groups"].items()}
        summary[key] = {
            "threshold": threshold, "fmr_max_min_ratio": rep["fmr_max_min_ratio"],
            "fnmr_max_min_ratio": rep["fnmr_max_min_ratio"],
            "fmr_vs_nominal": {g: (v["fmr"] / far if v["fmr"] is not None else None)
                               for g, v in rep["groups"].items()},
            "fmr_probe_vs_everyone": {g: vs_everyone(g) for g in rep["groups"]},
        }
    return per, summary


def group_fmr_plot(path: Path, groups_csv: Path, proto: OpenProtocol, imp: np.ndarray, iu: np.ndarray,
                   ju: np.ndarray, points: list[tuple[float, float]]) -> None:
    """FMR of same-group impostor pairs against the threshold, one line per group, operating points marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    group_of = read_groups(groups_csv)
    imp_people = np.asarray([group_of.get(n, "") for n in proto.impostor_people])
    finite = imp[np.isfinite(imp)]
    ts = np.linspace(float(np.quantile(finite, 0.99)), float(finite.max()), 300)
    fig, ax = plt.subplots(figsize=(6, 5))
    for group in sorted(set(group_of.values())):
        scores = np.sort(imp[(imp_people[iu] == group) & (imp_people[ju] == group)])
        if len(scores) == 0:
            continue
        fmr = 1 - np.searchsorted(scores, ts, side="left") / len(scores)
        keep = fmr > 0
        ax.semilogy(ts[keep], fmr[keep], label=f"{group} ({len(scores)} impostor pairs)")
    for far, t in points:
        ax.axvline(t, color="grey", lw=0.6, ls=":")
        ax.axhline(far, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("similarity threshold")
    ax.set_ylabel("false match rate (same-group impostors)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_calibration(manifest: Manifest, embedder_sha256: str, wanted: bool | None) -> FairCalibration | None:
    """The shipped calibration (default: when the models have one for this embedder); None for raw cosine."""
    if wanted is False:
        return None
    has = any(e.role == CALIBRATION_ROLE for e in manifest.entries)
    if not has and wanted is None:
        return None
    try:
        return FairCalibration.load(manifest, embedder_sha256)
    except ModelError:
        if wanted:
            raise
        return None


def shifted(scores: np.ndarray, shift_a: np.ndarray, shift_b: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(scores), scores - shift_a - shift_b, scores)


def det_plot(path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    for label, (gen, imp) in curves.items():
        ts = np.quantile(imp[np.isfinite(imp)], np.linspace(0.5, 1, 400))
        far = np.array([np.mean(imp >= t) for t in ts])
        frr = np.array([np.mean(gen < t) for t in ts])
        keep = far > 0
        ax.loglog(far[keep], frr[keep], label=label)
    ax.set_xlabel("false accept rate (FMR)")
    ax.set_ylabel("false reject rate (FNMR)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- driver


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    root: Path = args.faces
    people = list_identities(root)
    if args.people:
        people = dict(list(people.items())[: args.people])
    pairs = read_pairs(args.pairs, root) if args.pairs else []
    paths = sorted({p for imgs in people.values() for p in imgs[: args.max_per_person]}
                   | {p for a, b, _ in pairs for p in (a, b)})
    options = PipelineOptions(threads=args.threads, embedder=args.embedder, detector=args.detector,
                              five_point=args.five_point, flip_fusion=args.flip)
    manifest = Manifest.load(args.models)
    pipeline = FacePipeline(manifest, options)
    calibration = load_calibration(manifest, pipeline.embedder_sha256, args.fair_calibration)
    cache = None if args.no_cache else cache_path(root, pipeline.embedder_sha256, args.detector, args.five_point,
                                                  args.flip, args.face)
    emb = embed_images(pipeline, paths, cache, centre=args.face == "centre")
    failed = emb.failed()

    report: dict[str, Any] = {
        "faces": str(root), "people": len(people), "images": len(paths),
        "config": {"embedder": manifest.get("embedder", args.embedder).name,
                   "embedder_sha256": pipeline.embedder_sha256,
                   "detector": manifest.get("detector", args.detector).name,
                   "five_point": args.five_point, "flip_fusion": args.flip, "threads": args.threads,
                   "fair_calibration": calibration is not None,
                   "calibration_sha256": calibration.sha256 if calibration is not None else None},
        "detection_failures": len(failed), "detection_failure_rate": len(failed) / max(len(paths), 1),
        "failed_images": [str(p.relative_to(root)) for p in failed],
        "ms_per_image": 1000 * emb.seconds / max(len(paths), 1),
    }
    curves = {}
    if pairs:
        a = np.stack([emb.vectors[emb.row[p]] for p, _, _ in pairs])
        b = np.stack([emb.vectors[emb.row[p]] for _, p, _ in pairs])
        scores = similarities(a, b) if calibration is None else shifted(
            similarities(a, b), calibration.half_offsets(np.nan_to_num(a)), calibration.half_offsets(np.nan_to_num(b)))
        same = np.asarray([s for _, _, s in pairs])
        report["pairs"] = {"file": str(args.pairs), "count": len(pairs), **pairs_accuracy(scores, same),
                           "tar_at_far": tar_at_far(scores[same], scores[~same], (1e-2,))}
    proto = open_protocol(people, emb.row, args.max_per_person)
    raw_gen = similarities(emb.vectors[proto.genuine_pairs[:, 0]], emb.vectors[proto.genuine_pairs[:, 1]])
    raw_imp, iu, ju = impostor_scores(emb.vectors, proto.impostor_rows)
    cal_gen = cal_imp = None
    if calibration is not None:  # each image's share of the shift, as EmbeddingIndex precomputes per template
        half = calibration.half_offsets(np.nan_to_num(emb.vectors, nan=0.0)).astype(np.float64)
        cal_gen = shifted(raw_gen, half[proto.genuine_pairs[:, 0]], half[proto.genuine_pairs[:, 1]])
        imp_half = half[proto.impostor_rows]
        cal_imp = shifted(raw_imp, imp_half[iu], imp_half[ju])
    gen, imp = (raw_gen, raw_imp) if cal_gen is None or cal_imp is None else (cal_gen, cal_imp)
    eer, eer_t = equal_error_rate(gen, imp)
    report["open_protocol"] = {"genuine_pairs": len(gen), "impostor_pairs": len(imp),
                               "tar_at_far": tar_at_far(gen, imp, FARS),
                               "eer": eer, "eer_threshold": eer_t}
    report["open_set"] = open_set(people, emb, args.max_per_person, calibration)
    curves["open protocol"] = (gen, imp)
    if args.groups:
        t = threshold_at_far(imp, 1e-3)
        report["groups"] = group_report(args.groups, proto, gen, imp, iu, ju, t)
        points, points_from = operating_points(args, manifest, pipeline.embedder_sha256, calibration, report)
        report["per_group"], report["per_group_summary"] = per_group_at(args.groups, proto, gen, imp, iu, ju,
                                                                        points)
        report["per_group_thresholds_from"] = points_from
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "report.json").write_text(json.dumps(report, indent=2))
        det_plot(args.out / "det.png", curves)
        if args.groups:
            group_fmr_plot(args.out / "fmr_by_group.png", args.groups, proto, imp, iu, ju, points)
    if args.write_thresholds:
        source = (f"tools/eval/evaluate.py open protocol on {root.name}: {len(gen)} genuine, {len(imp)} impostor "
                  f"pairs; five_point={args.five_point} flip_fusion={args.flip}")

        by_group = gen_by_group = cal_by_group = probe_by_group = cal_probe_by_group = None
        if args.groups:
            by_group, probe_by_group = group_impostors(args.groups, proto, raw_imp, iu, ju)
            owners = np.asarray([read_groups(args.groups).get(n, "") for n in proto.genuine_people])
            gen_by_group = {g: raw_gen[owners == g] for g in by_group}
            if cal_imp is not None and cal_gen is not None:
                cal_by_group, cal_probe_by_group = group_impostors(args.groups, proto, cal_imp, iu, ju)
        data: dict[str, Any] = {"embedder_sha256": pipeline.embedder_sha256,
                                **table_block(raw_gen, raw_imp, by_group, gen_by_group, probe_by_group),
                                "source": source}
        if cal_gen is not None and cal_imp is not None and calibration is not None:
            cal_gen_by_group = None if cal_by_group is None else {
                g: cal_gen[owners == g] for g in cal_by_group}
            data["calibrated"] = {"calibration_sha256": calibration.sha256,
                                  **table_block(cal_gen, cal_imp, cal_by_group, cal_gen_by_group, cal_probe_by_group),
                                  "source": source + "; scores after the fair score calibration"}
        args.write_thresholds.write_text(json.dumps(data, indent=2) + "\n")
    return report


def operating_points(args: argparse.Namespace, manifest: Manifest, embedder_sha256: str,
                     calibration: FairCalibration | None,
                     report: dict[str, Any]) -> tuple[list[tuple[float, float]], str]:
    """(far, similarity) of models/thresholds.json for these scores (this run's own when it has none for them,
    or when writing a new table), and where they came from."""
    try:
        table = table_for(manifest.directory, embedder_sha256, calibration.sha256 if calibration is not None else None)
        if not args.write_thresholds:
            return [(p.far, p.similarity) for p in table.points], str(manifest.directory / "thresholds.json")
    except ModelError:
        pass
    return [(r["far"], r["threshold"]) for r in report["open_protocol"]["tar_at_far"]], "this run"


def summary(report: dict[str, Any]) -> Iterator[str]:
    yield f"images {report['images']}, detection failures {report['detection_failures']} " \
          f"({100 * report['detection_failure_rate']:.2f}%), {report['ms_per_image']:.1f} ms/image"
    if "pairs" in report:
        yield f"pairs accuracy {100 * report['pairs']['accuracy_cv']:.2f}% (10-fold CV)"
    for r in report["open_protocol"]["tar_at_far"]:
        yield f"TAR {100 * r['tar']:.2f}% at FAR {r['far']:g} (threshold {r['threshold']:.4f})"
    yield f"EER {100 * report['open_protocol']['eer']:.2f}%"
    for r in report["open_set"]["fnir_at_fpir"]:
        yield f"FNIR {100 * r['fnir']:.2f}% at FPIR {r['fpir']:g}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--faces", type=Path, default=default_faces_dir(), help="folder of <identity>/<images>")
    p.add_argument("--pairs", type=Path, default=None, help="LFW-format pairs file")
    p.add_argument("--models", type=Path, default=None)
    p.add_argument("--embedder", default=None)
    p.add_argument("--detector", default=None)
    p.add_argument("--four-point", dest="five_point", action="store_false",
                   help="align with BlazeFace's 4 points only (default: 5 points with face-mesh mouth corners)")
    p.add_argument("--flip", action="store_true", help="flip fusion")
    p.add_argument("--face", choices=("largest", "centre"), default="largest",
                   help="which face of an image: the largest (as the door) or the one nearest the centre (LFW's "
                        "labelled person, when a photo shows two people)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-per-person", type=int, default=20)
    p.add_argument("--people", type=int, default=0, help="only the first N identities (smoke runs)")
    p.add_argument("--groups", type=Path, default=None, help="CSV: identity,group")
    p.add_argument("--out", type=Path, default=None, help="write report.json and det.png here")
    p.add_argument("--write-thresholds", type=Path, default=None, help="write a thresholds.json for the device")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--fair-calibration", dest="fair_calibration", action="store_true", default=None,
                   help="score with the fair score calibration (default: when the models have one)")
    p.add_argument("--no-fair-calibration", dest="fair_calibration", action="store_false",
                   help="raw cosine similarity")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = evaluate(args)
    for line in summary(report):
        print(line, file=sys.stderr)
    print(json.dumps({k: v for k, v in report.items() if k != "failed_images"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
