"""The door's threshold: worst-group operating points and the gallery-size rule (recognition/operating_point.py).

Against the shipped models/thresholds.json (fitted on lfw_dev with gender labels) and the real service, gallery
and CLI; galleries of many people are random unit vectors enrolled through the real Gallery.
"""

from __future__ import annotations

import io
import json
import math
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from facegate.cli import main
from facegate.config import Config, RecognitionConfig, parse_config
from facegate.fairness.report import meets_far, reference_rates
from facegate.gallery.store import Gallery, NewTemplate
from facegate.recognition.operating_point import door_threshold, per_comparison_rate, visit_fpir
from facegate.recognition.thresholds import ThresholdTable
from facegate.service import Service
from facegate.vision.models import Manifest
from support import ROOT
from support.scenes import enrol, make_config, write_frames

from tools.eval import evaluate as ev

TABLE = ROOT / "models" / "thresholds.json"


def table() -> ThresholdTable:
    return ThresholdTable.load(TABLE)


def enrol_random(db: Path, persons: int, seed: int = 0) -> None:
    embedder = Manifest.load(ROOT / "models").get("embedder").sha256
    rng = np.random.default_rng(seed)
    with Gallery(db) as g:
        for i in range(persons):
            v = rng.normal(size=(1, 192)).astype(np.float32)
            g.enroll(f"r{i:05d}", [NewTemplate(v[0] / np.linalg.norm(v[0]), {}, f"{i}.jpg")], embedder)


def test_shipped_worst_group_points_keep_every_group_within_the_promise() -> None:
    t = table()
    for far in (1e-3, 1e-4):
        worst = t.point_for(far, "every_group")
        pooled = t.point_for(far, "pooled")
        assert worst.far == pooled.far == far and worst.similarity > pooled.similarity
        assert {g.group for g in worst.groups} == {"female", "male"}
        for g in worst.groups:  # each group's same-group false matches on the reference set: within 1.5x
            assert g.fmr is not None and g.fmr <= 1.5 * far, (far, g)
        # the pooled point is the one that broke the promise for women
        female = next(g for g in pooled.groups if g.group == "female")
        assert female.fmr is not None and female.fmr > 2 * far
        assert meets_far(female.false_matches, female.impostor_pairs, far) is False


def test_threshold_grows_with_the_gallery_and_explicit_settings_win() -> None:
    t = table()
    rec = RecognitionConfig()
    assert rec.far is None and rec.fpir == 0.001 and rec.operating_point == "every_group"
    floor = t.point_for(1e-4, "every_group").similarity
    small = door_threshold(rec, t, 5, 5)
    assert small.similarity == floor and small.source == "fpir" and small.warning is None
    sims = [door_threshold(rec, t, n, n).similarity for n in (5, 100, 1000, 4000)]
    assert sims == sorted(sims) and sims[-1] > sims[0]
    big = door_threshold(rec, t, 1000, 1000)
    assert big.fpir_predicted is not None and math.isclose(big.fpir_predicted, 0.001, rel_tol=0.05)
    assert big.far is not None and math.isclose(big.far, per_comparison_rate(0.001, 1000))
    assert big.warning is not None and "recognition.fpir" in big.warning  # 1,000 people at 1e-3: TAR < 80 %
    # an explicit FAR wins over the rule, whatever the gallery; a hand-set threshold wins over both
    explicit = door_threshold(RecognitionConfig(far=1e-4), t, 4000, 4000)
    assert explicit.source == "far" and explicit.similarity == floor
    assert explicit.fpir_predicted is not None and explicit.fpir_predicted > 0.01  # and says what it costs
    assert door_threshold(RecognitionConfig(far=1e-3, operating_point="pooled"), t, 4000, 4000).similarity == \
        t.for_far(1e-3)
    hand = door_threshold(RecognitionConfig(threshold=0.5), t, 100, 100)
    assert hand.similarity == 0.5 and hand.source == "threshold"
    assert visit_fpir(per_comparison_rate(0.01, 250), 250) == pytest.approx(0.01)


def test_old_configs_and_old_tables_keep_working(tmp_path: Path) -> None:
    old = parse_config({"recognition": {"far": 1e-3}})
    assert old.recognition.far == 1e-3
    assert door_threshold(old.recognition, table(), 2000, 2000).similarity == \
        table().point_for(1e-3, "every_group").similarity
    data = json.loads(TABLE.read_text())
    for key in ("every_group_points", "impostor_tail"):
        del data[key]
    (tmp_path / "thresholds.json").write_text(json.dumps(data))
    bare = ThresholdTable.load(tmp_path / "thresholds.json")
    pooled = door_threshold(RecognitionConfig(operating_point="pooled"), bare, 4000, 4000)
    assert pooled.similarity == bare.for_far(1e-4) and pooled.warning and "impostor tail" in pooled.warning
    with pytest.raises(Exception, match="every_group_points"):
        door_threshold(RecognitionConfig(), bare, 10, 10)


def test_evaluate_writes_the_worst_group_point_and_a_tail(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    gen = rng.normal(0.7, 0.1, 5000)
    easy, hard = rng.normal(0.0, 0.1, 200_000), rng.normal(0.1, 0.1, 50_000)
    imp = np.concatenate([easy, hard])
    block = ev.table_block(gen, imp, {"a": easy, "b": hard}, {"a": gen[:2500], "b": gen[2500:]},
                           {"a": easy, "b": hard})
    worst = {p["far"]: p for p in block["every_group_points"]}
    for far in (1e-2, 1e-3):
        assert worst[far]["similarity"] == round(ev.threshold_at_far(hard, far), 5)
        assert worst[far]["groups"]["b"]["false_matches"] <= far * len(hard)
    tail = block["impostor_tail"]["every_group"]
    assert [r["far"] for r in tail] == sorted((r["far"] for r in tail), reverse=True)
    assert all(a["similarity"] <= b["similarity"] for a, b in pairwise(tail))
    assert tail[0]["measured"] and not tail[-1]["measured"] and all(-1 <= r["similarity"] <= 1 for r in tail)
    # the shipped tail is a summary: a few dozen numbers, never embeddings
    shipped = json.loads(TABLE.read_text())["impostor_tail"]
    assert set(shipped) == {"pooled", "every_group"} and all(len(rows) < 64 for rows in shipped.values())


def test_door_recomputes_its_threshold_when_the_gallery_grows(tmp_path, photos, astro_templates,  # type: ignore[no-untyped-def]
                                                               pipeline, factory) -> None:
    frames = write_frames(tmp_path / "frames", photos, [("bg", 1)])
    config = make_config(tmp_path, frames, None)
    enrol(config, astro_templates, pipeline)
    service = Service(config, pin_factory=factory)
    t = table()
    before = service.threshold
    assert before == t.point_for(1e-4, "every_group").similarity == service.engine.threshold
    status = service.status()
    assert status["operating_point"]["templates"] == 2 and status["operating_point"]["source"] == "fpir"
    enrol_random(config.gallery_path, 600)
    assert service.reload_gallery_if_changed()
    after = service.status()["operating_point"]
    assert after["templates"] == 602 and after["persons"] == 601
    assert service.threshold > before and service.engine.threshold == service.threshold
    assert service.threshold == door_threshold(config.recognition, t, 602, 601).similarity
    assert after["fpir_predicted"] == pytest.approx(0.001, rel=0.05) and after["threshold"] == round(
        service.threshold, 4)
    assert service.status()["far"] == pytest.approx(per_comparison_rate(0.001, 602))
    # the console's System page: each group's measured FMR with its interval, and whether it meets the FAR
    rows = reference_rates(t, "every_group", service.threshold)
    at = {(r["far"], r["group"]): r for r in rows}
    assert at[(1e-4, "female")]["meets_far"] is True and at[(1e-4, "female")]["door_at_or_above"]
    assert at[(1e-4, "female")]["fmr_ci95"][0] < at[(1e-4, "female")]["fmr"] < at[(1e-4, "female")]["fmr_ci95"][1]


def test_gallery_info_and_doctor_show_the_derived_threshold(tmp_path: Path) -> None:
    db = tmp_path / "gallery.db"
    enrol_random(db, 1500, seed=3)
    out, err = io.StringIO(), io.StringIO()
    assert main(["gallery", "info", "--gallery", str(db)], out, err) == 0
    info = json.loads(out.getvalue())
    assert info["persons"] == 1500 and info["templates"] == 1500
    rec = info["recognition"]
    assert rec["source"] == "fpir" and rec["fpir"] == 0.001 and rec["operating_point"] == "every_group"
    assert rec["threshold"] == round(door_threshold(Config().recognition, table(), 1500, 1500).similarity, 4)
    assert rec["warning"] and "warning: recognition.fpir" in err.getvalue()
    cfg = tmp_path / "door.toml"
    cfg.write_text(f'state_dir = "{tmp_path}"\n[gallery]\npath = "{db}"\n[recognition]\nfar = 0.0001\n')
    out = io.StringIO()
    assert main(["gallery", "info", "--config", str(cfg)], out, io.StringIO()) == 0
    explicit = json.loads(out.getvalue())["recognition"]
    assert explicit["source"] == "far" and explicit["threshold"] == round(
        table().point_for(1e-4, "every_group").similarity, 4)
    assert main(["gallery", "info", "--gallery", str(tmp_path / "none.db")], io.StringIO(), err) == 2
    cfg.write_text(f'state_dir = "{tmp_path}"\n[gallery]\npath = "{db}"\n[door]\npin_factory = "mock"\n')
    out = io.StringIO()
    main(["doctor", "--config", str(cfg)], out, io.StringIO())
    check = next(r for r in map(json.loads, out.getvalue().splitlines()) if r["check"] == "threshold")
    assert not check["ok"] and not check["blocking"] and "recognition.fpir" in check["detail"]
