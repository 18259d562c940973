"""facegate doctor: says what is wrong and how to fix it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from facegate.cli import main
from support import write_image


def _config(tmp: Path, broker_port: int, frames: Path) -> Path:
    path = tmp / "facegate.toml"
    path.write_text(f'device_id = "doc"\nstate_dir = "{tmp / "state"}"\n[camera]\nsource = "replay:{frames}"\n'
                    f'[door]\npin_factory = "mock"\n[mqtt]\nhost = "127.0.0.1"\nport = {broker_port}\n')
    return path


def _doctor(config: Path) -> tuple[int, dict[str, dict]]:  # type: ignore[type-arg]
    out, err = io.StringIO(), io.StringIO()
    code = main(["doctor", "--config", str(config)], out=out, err=err)
    return code, {r["check"]: r for r in map(json.loads, out.getvalue().splitlines())}


def test_doctor_names_each_problem_and_its_fix(tmp_path, broker) -> None:  # type: ignore[no-untyped-def]
    frames = tmp_path / "frames"
    frames.mkdir()
    write_image(frames / "0.png", np.zeros((48, 64, 3), dtype=np.uint8))
    config = _config(tmp_path, broker.port, frames)
    code, checks = _doctor(config)
    assert code == 1
    assert checks["models"]["ok"] and checks["camera"]["ok"] and checks["gpio"]["ok"] and checks["broker"]["ok"]
    assert not checks["gallery"]["ok"] and "facegate enroll" in checks["gallery"]["fix"]
    broker.stop()
    _, checks = _doctor(config)
    assert not checks["broker"]["ok"] and "outbox" in checks["broker"]["fix"]


def test_doctor_camera_failure(tmp_path, broker) -> None:  # type: ignore[no-untyped-def]
    _, checks = _doctor(_config(tmp_path, broker.port, tmp_path / "missing"))
    assert not checks["camera"]["ok"] and "replay folder not found" in checks["camera"]["detail"]
