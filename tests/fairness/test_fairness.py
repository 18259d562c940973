"""Per-group error rates: evaluate's per_group shape, and `facegate fairness` on a site's stored templates."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from facegate.cli import main
from facegate.fairness.report import Templates, group_rates, wilson
from facegate.gallery.store import Gallery, NewTemplate
from facegate.recognition.thresholds import ThresholdTable
from facegate.vision.models import Manifest
from support import ROOT
from support.two_groups import two_groups

from tools.eval import evaluate as ev


def test_evaluate_per_group_has_the_stable_shape(tmp_path: Path) -> None:
    proto, genuine, imp, iu, ju, csv = two_groups(tmp_path, b_genuine=0.45, b_impostor=0.6, header=True)
    per, summary = ev.per_group_at(csv, proto, genuine, imp, iu, ju, [(0.0001, 0.5), (0.01, 0.7)])
    assert list(per) == ["0.0001", "0.01"] and set(per["0.0001"]) == {"a", "b"}  # the header row is no group
    for point in per.values():
        for counts in point.values():
            assert set(counts) == {"fmr", "fnmr", "impostor_pairs", "genuine_pairs", "threshold"}
    assert per["0.0001"]["b"] == {"fmr": 1.0, "fnmr": 1.0, "impostor_pairs": 3, "genuine_pairs": 3,
                                  "threshold": 0.5}
    assert per["0.0001"]["a"]["fmr"] == 0.0 and per["0.01"]["b"]["fmr"] == 0.0
    assert summary["0.0001"]["fmr_vs_nominal"]["b"] == pytest.approx(1e4)
    # a b-probe meets 2 other b's (both match) and 3 a's (none): 6 of 15 pair-sides
    assert summary["0.0001"]["fmr_probe_vs_everyone"] == {"a": 0.0, "b": pytest.approx(6 / 15)}
    json.dumps(per)  # plain JSON types only


def test_wilson_interval() -> None:
    low, high = wilson(0, 30_000) or (None, None)
    assert low == 0.0 and high == pytest.approx(1.28e-4, rel=0.02)  # about 3.84 / n for none seen
    low, high = wilson(50, 100) or (None, None)
    assert low < 0.5 < high and high - low == pytest.approx(0.19, abs=0.01)
    assert wilson(0, 0) is None


def site(rng: np.random.Generator, people: int, spread: float) -> list[np.ndarray]:
    """Each person: a random identity vector and three noisy templates of it."""
    out = []
    for _ in range(people):
        centre = rng.normal(0, 1, 192)
        out.append(np.stack([centre + rng.normal(0, spread, 192) for _ in range(3)]))
    return out


def test_group_rates_find_a_group_whose_people_look_alike() -> None:
    rng = np.random.default_rng(1)
    shared = rng.normal(0, 1, 192)
    a = [t + 2.0 * shared for t in site(rng, 12, 0.6)]  # group a: everyone shares a strong common component
    b = site(rng, 12, 0.6)
    ids, vecs = [], []
    for name, person in [(f"a{i}", p) for i, p in enumerate(a)] + [(f"b{i}", p) for i, p in enumerate(b)]:
        for v in person:
            ids.append(name)
            vecs.append(v / np.linalg.norm(v))
    templates = Templates(ids, np.asarray(vecs, dtype=np.float32))
    report = group_rates(templates, {n: n[0] for n in ids}, [(0.0001, 0.6)], None)
    a_rates, b_rates = report["per_group"]["0.0001"]["a"], report["per_group"]["0.0001"]["b"]
    assert a_rates["impostor_pairs"] == b_rates["impostor_pairs"] == 12 * 11 // 2 * 9
    assert a_rates["genuine_pairs"] == 12 * 3 and a_rates["persons"] == 12
    assert a_rates["fmr"] > 0.5 and b_rates["fmr"] == 0.0
    assert a_rates["fmr_ci95"][0] > 0.5 and b_rates["fmr_ci95"][1] < 0.01
    assert any("'a'" in w for w in report["warnings"]) and not any("'b'" in w for w in report["warnings"])
    assert report["per_group_summary"]["0.0001"]["fmr_measurable"] == {"a": False, "b": False}


def test_fairness_command_reads_the_gallery(tmp_path: Path) -> None:
    manifest = Manifest.load(ROOT / "models")
    embedder = manifest.get("embedder").sha256
    rng = np.random.default_rng(2)
    db = tmp_path / "gallery.db"
    with Gallery(db) as g:
        for i, person in enumerate(site(rng, 6, 0.5)):
            unit = person / np.linalg.norm(person, axis=1, keepdims=True)
            g.enroll(f"p{i}", [NewTemplate(v.astype(np.float32), {}, f"{i}.jpg") for v in unit], embedder)
    groups = tmp_path / "groups.csv"
    groups.write_text("person_id,group\np0,f\np1,f\np2,f\np3,m\np4,m\n")  # p5 has no group
    out, err = io.StringIO(), io.StringIO()
    assert main(["fairness", "--gallery", str(db), "--groups", str(groups)], out, err) == 0
    report = json.loads(out.getvalue())
    raw = ThresholdTable.load(ROOT / "models" / "thresholds.json")
    assert report["persons"] == 6 and report["templates"] == 18 and report["fair_calibration"] is False
    assert list(report["per_group"]) == [str(p.far) for p in raw.points]
    f = report["per_group"]["0.0001"]["f"]
    # the door's default points: where the worst group of the reference set meets each FAR
    assert report["operating_point"] == "every_group"
    assert f["genuine_pairs"] == 9 and f["impostor_pairs"] == 27
    assert f["threshold"] == raw.point_for(1e-4, "every_group").similarity > raw.for_far(1e-4)
    assert f["fnmr"] == 0.0 and f["fmr"] == 0.0
    assert f["meets_far"] is None  # 0 of 27 pairs cannot show a rate of 1e-4: too few to tell, never "yes"
    out = io.StringIO()
    assert main(["fairness", "--gallery", str(db), "--groups", str(groups), "--operating-point", "pooled"],
                out, err) == 0
    assert json.loads(out.getvalue())["per_group"]["0.0001"]["f"]["threshold"] == raw.for_far(1e-4)
    assert report["ungrouped_persons"] == ["p5"] and "no group" in err.getvalue()
    out = io.StringIO()
    assert main(["fairness", "--gallery", str(db), "--groups", str(groups), "--fair-calibration"], out, err) == 0
    assert json.loads(out.getvalue())["fair_calibration"] is True
    bad = tmp_path / "bad.csv"
    bad.write_text("p0\n")
    assert main(["fairness", "--gallery", str(db), "--groups", str(bad)], io.StringIO(), err) == 2
    assert "bad.csv:1" in err.getvalue()
