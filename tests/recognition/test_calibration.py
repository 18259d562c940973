"""The fair score calibration: shifts as designed, symmetric, off restores cosine, refused when altered."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from facegate.errors import ModelError
from facegate.gallery.index import EmbeddingIndex
from facegate.recognition.calibration import ROLE, FairCalibration
from facegate.recognition.thresholds import ThresholdTable
from facegate.vision.models import Manifest, sha256_file
from support import ROOT

from tools.eval import fit_calibration as fc


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def two_clusters() -> FairCalibration:
    centroids = np.eye(2, 4, dtype=np.float32)  # cluster 0 along x, cluster 1 along y
    return FairCalibration(centroids, np.array([0.10, -0.04], dtype=np.float32), embedder_sha256="e")


def test_offsets_shift_scores_by_half_of_each_side() -> None:
    cal = two_clusters()
    a = unit(np.array([1.0, 0.2, 0.1, 0.0]))  # cluster 0
    b = unit(np.array([0.1, 1.0, 0.0, 0.3]))  # cluster 1
    c = unit(np.array([0.9, 0.1, 0.4, 0.0]))  # cluster 0
    raw = float(a @ b)
    assert cal.score(a, b) == pytest.approx(raw - 0.05 + 0.02, abs=1e-6)
    assert cal.score(a, c) == pytest.approx(float(a @ c) - 0.10, abs=1e-6)  # both in the high-impostor cluster
    assert cal.score(a, b) == pytest.approx(cal.score(b, a), abs=1e-7)  # symmetric
    pairs = cal.pair_scores(np.stack([a, a, b]), np.stack([b, c, a]))
    assert pairs == pytest.approx([cal.score(a, b), cal.score(a, c), cal.score(b, a)], abs=1e-6)


def test_index_search_uses_calibrated_scores_and_off_restores_cosine() -> None:
    cal = two_clusters()
    query = unit(np.array([1.0, 0.97, 0.0, 0.0]))  # between both clusters, slightly nearer x
    t_x = unit(np.array([1.0, 0.0, 0.3, 0.0]))  # person "x", cluster 0 (offset +0.10)
    t_y = unit(np.array([0.0, 1.0, 0.3, 0.0]))  # person "y", cluster 1 (offset -0.04)
    raw = EmbeddingIndex(["x", "y"], np.stack([t_x, t_y]))
    top = raw.search(query)
    assert top[0].person_id == "x" and top[0].similarity == pytest.approx(float(query @ t_x), abs=1e-6)
    calibrated = raw.calibrated(cal)
    top = calibrated.search(query)
    assert top[0].person_id == "y"  # x's cluster pays for its high impostor scores
    assert top[0].similarity == pytest.approx(cal.score(query, t_y), abs=1e-6)
    assert top[1].similarity == pytest.approx(cal.score(query, t_x), abs=1e-6)
    back = calibrated.calibrated(None).search(query)
    assert back[0].person_id == "x" and back[0].similarity == pytest.approx(float(query @ t_x), abs=1e-6)
    assert EmbeddingIndex([], np.zeros((0, 0), dtype=np.float32), cal).search(query) == []


def test_fitted_offsets_equalise_cluster_false_match_rates() -> None:
    """A population where one kind of face has heavier impostor scores: the fit finds it without labels."""
    rng = np.random.default_rng(0)
    d, n = 16, 400
    axis = np.eye(d, dtype=np.float32)
    # kind A (around axis 0) is tighter than kind B (around axis 1): A's impostors score higher
    a = axis[0] * 2.2 + rng.normal(0, 0.45, (n, d))
    b = axis[1] * 2.2 + rng.normal(0, 0.75, (n, d))
    x = np.concatenate([a, b]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    owners = np.arange(len(x))  # one image per person: every pair is an impostor pair
    cal = fc.fit(x, owners, k=2, method="fsn_within", far=1e-2)
    assert isinstance(cal, FairCalibration)
    kind_a = cal.clusters(axis[0])[0]
    assert cal.offsets[kind_a] > cal.offsets[1 - kind_a]  # the tight kind gets the larger shift

    def fmr_per_kind(scorer: object, t: float | None = None) -> tuple[float, float, float]:
        iu, ju = np.triu_indices(len(x), 1)
        s = scorer.pair_scores(x[iu], x[ju])  # type: ignore[attr-defined]
        t = fc.top_threshold(s, 1e-2) if t is None else t
        in_a, in_b = (iu < n) & (ju < n), (iu >= n) & (ju >= n)
        return float(np.mean(s[in_a] >= t)), float(np.mean(s[in_b] >= t)), t

    raw_a, raw_b, _ = fmr_per_kind(fc.Raw())
    cal_a, cal_b, _ = fmr_per_kind(cal)
    assert raw_a / raw_b > 3
    assert cal_a / cal_b < raw_a / raw_b / 2


def test_pair_table_raises_the_heavy_cell_and_shrinks_thin_cells() -> None:
    """The second attempt's pairwise table (tools only): cell offsets where the tail is measurable, 0 otherwise."""
    rng = np.random.default_rng(1)
    d, n = 16, 300
    axis = np.eye(d, dtype=np.float32)
    a = axis[0] * 2.2 + rng.normal(0, 0.45, (n, d))  # tight kind: heavy within-cell impostor tail
    b = axis[1] * 2.2 + rng.normal(0, 0.75, (n, d))
    x = np.concatenate([a, b]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    scorer = fc.fit(x, np.arange(len(x)), k=2, method="pair", far=1e-2)
    assert isinstance(scorer, fc.PairTable)
    ca = int(scorer._c(axis[:1])[0])
    t = scorer.table
    assert np.allclose(t, t.T)
    assert t[ca, ca] > 0 > t[ca, 1 - ca]  # within the tight kind: stricter; across kinds: looser
    iu, ju = np.triu_indices(len(x), 1)
    assert scorer.upper_scores(x) == pytest.approx(scorer.pair_scores(x[iu], x[ju]), abs=1e-5)
    thin = fc.ImpostorSet(np.array([0.9, 0.1, 0.2], dtype=np.float32), np.array([0, 0, 1]), np.array([0, 1, 1]))
    assert np.all(np.abs(fc.fit_pair_table(thin, 2, 1e-4)) < 1e-3)  # 3 pairs cannot move a 1e-4 threshold


def test_density_normalisation_is_separable_and_zero_lambda_is_cosine() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    scorer = fc.fit(x, np.arange(len(x)), k=10, method="density_m3", far=0.5)
    assert isinstance(scorer, fc.DensityNorm) and scorer.lam == 0.5
    d = scorer.density(x)
    top3 = np.sort(x @ scorer.centroids.T, axis=1)[:, -3:].mean(axis=1)
    assert d == pytest.approx(top3, abs=1e-6)
    s = scorer.pair_scores(x[:5], x[5:10])
    expected = np.einsum("ij,ij->i", x[:5], x[5:10]) - 0.5 * (d[:5] + d[5:10] - 2 * scorer.mu)
    assert s == pytest.approx(expected, abs=1e-6)
    assert scorer.pair_scores(x[5:10], x[:5]) == pytest.approx(s, abs=1e-7)
    flat = fc.DensityNorm(scorer.centroids, 3, 0.0, scorer.mu)
    assert flat.pair_scores(x[:5], x[5:10]) == pytest.approx(np.einsum("ij,ij->i", x[:5], x[5:10]), abs=1e-6)


def shipped_dir(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    shutil.copytree(ROOT / "models", models)
    return models


def shipped_embedder(manifest: Manifest) -> str:
    return manifest.get("embedder").sha256


def test_shipped_calibration_loads_and_an_altered_file_is_refused(tmp_path: Path) -> None:
    models = shipped_dir(tmp_path)
    manifest = Manifest.load(models)
    cal = FairCalibration.load(manifest, shipped_embedder(manifest))
    entry = next(e for e in manifest.entries if e.role == ROLE)
    assert cal.sha256 == entry.sha256 == sha256_file(entry.path) and cal.k == len(cal.offsets) >= 2
    assert cal.centroids.shape[1] == 192
    data = json.loads(entry.path.read_text())
    data["offsets"][0] += 0.01  # a nudged offset moves every threshold: must not load
    entry.path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="checksum mismatch"):
        FairCalibration.load(Manifest.load(models), shipped_embedder(manifest))
    with pytest.raises(ModelError, match="another embedder"):
        FairCalibration.load(Manifest.load(ROOT / "models"), "0" * 64)


def test_thresholds_hold_both_tables_and_old_files_still_load(tmp_path: Path) -> None:
    manifest = Manifest.load(ROOT / "models")
    cal = FairCalibration.load(manifest, shipped_embedder(manifest))
    path = ROOT / "models" / "thresholds.json"
    raw, calibrated = ThresholdTable.load(path), ThresholdTable.load(path, cal.sha256)
    assert [p.far for p in raw.points] == [p.far for p in calibrated.points]
    assert raw.calibration_sha256 is None and calibrated.calibration_sha256 == cal.sha256
    assert raw.for_far(1e-4) != calibrated.for_far(1e-4)
    old = tmp_path / "thresholds.json"
    data = json.loads(path.read_text())
    del data["calibrated"]
    old.write_text(json.dumps(data))
    assert ThresholdTable.load(old).for_far(1e-4) == raw.for_far(1e-4)
    with pytest.raises(ModelError, match="no operating points for the shipped score calibration"):
        ThresholdTable.load(old, cal.sha256)
