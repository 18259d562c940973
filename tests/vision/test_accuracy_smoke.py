"""Accuracy smoke test on real faces: a small, fixed slice of LFW View-1 pairs (skipped without ../shared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from facegate.base.imageio import read_image


def _pairs(lfw_dir: Path, count: int) -> list[tuple[Path, Path, bool]]:
    lines = (lfw_dir.parent / "lfw_dev_meta" / "pairsDevTrain.txt").read_text().splitlines()[1:]
    genuine = [ln.split() for ln in lines if len(ln.split()) == 3][::11][:count]
    impostor = [ln.split() for ln in lines if len(ln.split()) == 4][::11][:count]

    def img(name: str, n: str) -> Path:
        return lfw_dir / name / f"{name}_{int(n):04d}.jpg"

    return [(img(a, i), img(a, j), True) for a, i, j in genuine] + [
        (img(a, i), img(b, j), False) for a, i, b, j in impostor
    ]


def test_pairs_accuracy_on_lfw_slice(pipeline, lfw_dir) -> None:  # type: ignore[no-untyped-def]
    """100 genuine + 100 impostor pairs: at the shipped FAR-1e-3 threshold genuine pairs mostly match and
    impostors essentially never do; the full figures come from tools/eval/evaluate.py."""
    from facegate.recognition.thresholds import ThresholdTable

    table = ThresholdTable.load(pipeline.manifest.directory / "thresholds.json")
    threshold = table.for_far(1e-3)
    cache: dict[Path, np.ndarray] = {}

    def emb(p: Path) -> np.ndarray:
        if p not in cache:
            res = pipeline.process(read_image(p), largest_only=True)
            assert res, f"no face in {p}"
            cache[p] = res[0].embedding
        return cache[p]

    scores, same = [], []
    for a, b, s in _pairs(lfw_dir, 100):
        scores.append(float(emb(a) @ emb(b)))
        same.append(s)
    scores_a, same_a = np.array(scores), np.array(same)
    tar = np.mean(scores_a[same_a] >= threshold)
    far = np.mean(scores_a[~same_a] >= threshold)
    assert tar >= 0.9, f"TAR {tar:.3f} at the FAR-1e-3 threshold {threshold:.3f}"
    assert far <= 0.02, f"{far:.3f} of impostor pairs accepted"
    best = max(np.mean((scores_a >= t) == same_a) for t in scores_a)
    assert best >= 0.95
