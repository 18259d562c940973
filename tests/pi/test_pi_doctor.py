"""doctor's Pi checks and the camera's failure path with a real numpy ABI conflict.

The conflict is the real one: Debian's python3-h5py (compiled against the system numpy 1.24, as
python3-simplejpeg is on a Pi) imported under this venv's numpy 2, through the stand-in picamera2 that
`make pi-check` ships (tools/checks/pi_standins). Processes get apt's folder *after* their own site-packages, the
order a venv made with --system-site-packages has.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from facegate import doctor
from facegate.camera.source import Frame
from facegate.camera.supervisor import CameraSupervisor
from facegate.cli import main
from facegate.pi.checks import abi_compatible
from facegate.pi.numpy_pin import SYSTEM_SITE, system_numpy_version
from support import ROOT, write_image

STANDINS = ROOT / "tools/checks/pi_standins"


def _needs_conflict() -> str:
    if not (SYSTEM_SITE / "h5py").is_dir():
        pytest.skip(f"Debian's python3-h5py is not installed in {SYSTEM_SITE} (make test installs it as root)")
    system = system_numpy_version()
    if system is None or abi_compatible(system, np.__version__):
        pytest.skip(f"no ABI conflict to show: system numpy {system}, venv numpy {np.__version__}")
    return system


def _py(code: str) -> list[str]:
    prelude = f"import sys; sys.path += [{str(SYSTEM_SITE)!r}, {str(STANDINS)!r}]\n"
    return [sys.executable, "-c", prelude + code]


def _config(tmp: Path, source: str) -> Path:
    path = tmp / "facegate.toml"
    path.write_text(f'device_id = "pi"\nstate_dir = "{tmp / "state"}"\n[camera]\nsource = "{source}"\n'
                    '[door]\npin_factory = "mock"\n[mqtt]\nenabled = false\n[liveness]\nenabled = false\n')
    return path


def test_doctor_names_the_numpy_conflict_and_the_fix(tmp_path: Path) -> None:
    system = _needs_conflict()
    config = _config(tmp_path, "picamera2")
    code = f"from facegate.cli import main; sys.exit(main(['doctor', '--config', {str(config)!r}]))"
    proc = subprocess.run(_py(code), capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr
    checks = {r["check"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert proc.returncode == 1
    assert not checks["numpy"]["ok"] and checks["numpy"]["blocking"]
    assert f"shadows the system numpy {system}" in checks["numpy"]["detail"]
    assert "install-pi.sh" in checks["numpy"]["fix"]
    camera = checks["camera"]
    assert not camera["ok"] and camera["blocking"] and "numpy.dtype size changed" in camera["detail"]
    assert "install-pi.sh" in camera["fix"]
    assert checks["models"]["ok"] and checks["runtime"]["ok"]  # the rest of the report is still there


def test_service_reports_camera_error_and_keeps_running(tmp_path: Path) -> None:
    _needs_conflict()
    config = _config(tmp_path, "picamera2")
    proc = subprocess.Popen(_py(f"from facegate.cli import main; sys.exit(main(['run', '--config', {str(config)!r}]))"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    error: dict[str, str] = {}
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            event = json.loads(line).get("event") or {}
            if event.get("type") == "camera_error":
                error.update(event)
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(60)
    try:
        assert error, "no camera_error within 60 s:\n" + "".join(lines[-5:])
        assert "numpy.dtype size changed" in error["error"] and "install-pi.sh" in error["fix"]
        time.sleep(1.0)
        assert proc.poll() is None, "the service exited instead of waiting for the camera"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]


class BrokenLibraryCamera:
    """Opens like a camera whose library raises something other than ImportError/CameraError."""

    def __init__(self) -> None:
        self.opens = 0

    def open(self) -> None:
        self.opens += 1
        raise ValueError("numpy.dtype size changed, may indicate binary incompatibility")

    def read(self) -> Frame | None:
        raise AssertionError("never opened")

    def close(self) -> None:
        raise RuntimeError("closing a camera that never opened")


def test_supervisor_turns_any_open_failure_into_camera_error() -> None:
    events: list[tuple[str, dict[str, object]]] = []
    stop = threading.Event()
    camera = BrokenLibraryCamera()
    supervisor = CameraSupervisor(camera, lambda t, **kw: events.append((t, kw)), stop, backoff_max_seconds=0.02,
                                  backoff_start_seconds=0.01)
    threading.Timer(0.3, stop.set).start()
    assert list(supervisor.frames()) == []
    assert [t for t, _ in events] == ["camera_error"]  # once per outage, not per retry
    assert "ValueError: numpy.dtype size changed" in str(events[0][1]["error"])
    assert camera.opens > 2


def test_doctor_survives_a_check_that_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def exploding(_config: object) -> doctor.Check:
        raise ValueError("numpy.dtype size changed")

    monkeypatch.setattr(doctor, "CHECKS", [exploding, *doctor.CHECKS])
    frames = tmp_path / "frames"
    frames.mkdir()
    write_image(frames / "0.png", np.zeros((48, 64, 3), dtype=np.uint8))
    out, err = io.StringIO(), io.StringIO()
    code = main(["doctor", "--config", str(_config(tmp_path, f"replay:{frames}"))], out=out, err=err)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert code == 1 and rows[0]["check"] == "exploding" and not rows[0]["ok"]
    assert "ValueError: numpy.dtype size changed" in rows[0]["detail"]
    assert {r["check"] for r in rows} >= {"numpy", "models", "runtime", "camera", "gpio", "groups", "clock"}


def test_installer_mode_fails_only_on_blocking_checks(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    write_image(frames / "0.png", np.zeros((48, 64, 3), dtype=np.uint8))
    config = str(_config(tmp_path, f"replay:{frames}"))
    out, err = io.StringIO(), io.StringIO()
    assert main(["doctor", "--config", config], out=out, err=err) == 1  # no gallery yet
    gallery = next(r for r in map(json.loads, out.getvalue().splitlines()) if r["check"] == "gallery")
    assert not gallery["ok"] and not gallery["blocking"]
    out, err = io.StringIO(), io.StringIO()
    assert main(["doctor", "--installer", "--config", config], out=out, err=err) == 0
    assert "gallery (warning)" in err.getvalue()
    rows = {r["check"]: r for r in map(json.loads, out.getvalue().splitlines())}
    assert "MockFactory" in rows["gpio"]["detail"] and rows["numpy"]["ok"]
