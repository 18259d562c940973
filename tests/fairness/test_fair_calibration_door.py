"""With recognition.fair_calibration on, the door still grants the enrolled person and refuses a stranger."""

from __future__ import annotations

from typing import Any

from facegate.recognition.calibration import FairCalibration
from facegate.recognition.thresholds import ThresholdTable
from facegate.service import Service
from facegate.wiring.recognition import match_threshold
from support.scenes import enrol, make_config, pulses, write_frames

CAL = {"fair_calibration": True}


def decisions(service: Service) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    service.emitter.add_listener(seen.append)
    service.run()
    return [e for e in seen if e["type"] in ("access_granted", "unknown_face", "access_denied")]


def test_calibrated_door_grants_then_refuses_the_stranger_behind(tmp_path, photos, astro_templates,  # type: ignore[no-untyped-def]
                                                                 pipeline, factory) -> None:
    frames = write_frames(tmp_path / "frames", photos, [("bg", 2), ("astro", 8), ("hopper", 12), ("bg", 2)])
    config = make_config(tmp_path, frames, None, recognition=CAL)
    enrol(config, astro_templates, pipeline)
    service = Service(config, pin_factory=factory)
    assert isinstance(service.calibration, FairCalibration) and service.index.calibration is service.calibration
    table = ThresholdTable.load(pipeline.manifest.directory / "thresholds.json", service.calibration.sha256)
    # the calibrated table, not the raw one; the worst-group point (a one-person gallery needs no stricter)
    assert service.threshold == table.point_for(1e-4, "every_group").similarity
    assert service.engine.new_person_below == table.for_far(config.recognition.new_person_far)
    assert service.status()["fair_calibration"] is True
    # the sync receiver hands over indexes built without calibration: they are scored alike when installed
    service.swap_index(service.gallery.build_index(), {"astro": "Eileen Collins"}, service.gallery.revision)
    assert service.index.calibration is service.calibration
    got = decisions(service)
    assert [e["type"] for e in got] == ["access_granted", "unknown_face"]
    assert got[0]["person_id"] == "astro" and got[0]["similarity"] >= service.threshold
    assert got[1]["best_similarity"] < service.threshold
    assert len(pulses(factory.pin(17))) == 1


def test_off_switch_restores_the_raw_threshold(tmp_path, photos, pipeline) -> None:  # type: ignore[no-untyped-def]
    frames = write_frames(tmp_path / "frames", photos, [("bg", 1)])
    off = make_config(tmp_path, frames, None, recognition={"fair_calibration": False})
    raw = ThresholdTable.load(pipeline.manifest.directory / "thresholds.json")
    assert match_threshold(off, pipeline) == raw.point_for(1e-4, "every_group").similarity
