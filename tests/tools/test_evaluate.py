"""The evaluation metrics themselves: thresholds at a FAR, TAR, EER, LFW pairs parsing, per-group report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.two_groups import two_groups

from tools.eval import evaluate as ev


def test_threshold_keeps_false_accepts_at_or_below_target() -> None:
    impostor = np.linspace(0.0, 0.999, 1000)
    for far in (0.1, 0.01, 0.001):
        t = ev.threshold_at_far(impostor, far)
        assert np.mean(impostor >= t) <= far
        assert np.mean(impostor >= t) >= far - 1.5 / len(impostor)


def test_tar_at_far_and_unmeasurable_points() -> None:
    impostor = np.linspace(-0.2, 0.4, 10_000)
    genuine = np.array([0.1, 0.35, 0.5, 0.7, -np.inf])  # -inf: an image with no face
    rows = ev.tar_at_far(genuine, impostor, (1e-2, 1e-5))
    assert rows[0]["threshold"] == pytest.approx(0.394, abs=1e-3)
    assert rows[0]["tar"] == pytest.approx(2 / 5)
    assert rows[0]["measurable"] and not rows[1]["measurable"]


def test_eer_of_separable_and_overlapping_scores() -> None:
    rng = np.random.default_rng(0)
    assert ev.equal_error_rate(rng.normal(1, 0.1, 500), rng.normal(0, 0.1, 500))[0] < 0.01
    eer, _ = ev.equal_error_rate(rng.normal(0, 1, 2000), rng.normal(0, 1, 2000))
    assert 0.4 < eer < 0.6


def test_pairs_accuracy_cross_validated() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.3] * 10)
    same = np.array([True, True, True, False, False, False] * 10)
    acc = ev.pairs_accuracy(scores, same)
    assert acc["accuracy_cv"] == 1.0 and acc["accuracy_best_threshold"] == 1.0


def test_read_pairs_format(tmp_path: Path) -> None:
    f = tmp_path / "pairs.txt"
    f.write_text("1\nAnn_Lee 1 3\nAnn_Lee 2 Bo_Ma 4\n")
    pairs = ev.read_pairs(f, tmp_path)
    assert pairs[0] == (tmp_path / "Ann_Lee" / "Ann_Lee_0001.jpg", tmp_path / "Ann_Lee" / "Ann_Lee_0003.jpg", True)
    assert pairs[1][1] == tmp_path / "Bo_Ma" / "Bo_Ma_0004.jpg" and pairs[1][2] is False


def test_group_report_shows_the_worse_group(tmp_path: Path) -> None:
    proto, genuine, imp, iu, ju, csv = two_groups(tmp_path, b_genuine=0.2, b_impostor=0.9, header=False)
    report = ev.group_report(csv, proto, genuine, imp, iu, ju, threshold=0.5)
    assert report["groups"]["a"]["fnmr"] == 0.0 and report["groups"]["b"]["fnmr"] == 1.0
    assert report["groups"]["a"]["fmr"] == 0.0 and report["groups"]["b"]["fmr"] == 1.0
    assert report["fnmr_max_min_ratio"] is None  # a zero rate has no finite ratio
