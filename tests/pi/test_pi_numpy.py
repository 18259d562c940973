"""The installer's numpy pin (device/facegate/pi/numpy_pin.py): what it accepts, refuses and repairs.

The resolution test runs the real pip (this venv's) on small local wheels: a package that wants a numpy newer
than the "system" one must make the unconstrained resolution fail the check, and the constrained one fail
in pip itself, before anything is installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from facegate.pi import numpy_pin
from facegate.pi.checks import abi_compatible, board_model, groups_state
from facegate.pi.numpy_pin import PinError, check_report, constraints_text, system_numpy_version, venv_numpy_version
from support import ROOT


def _report(*items: tuple[str, str, list[str]]) -> dict[str, object]:
    return {"install": [{"metadata": {"name": n, "version": v, "requires_dist": r}} for n, v, r in items]}


def test_report_that_installs_numpy_is_refused_naming_who_wants_it() -> None:
    report = _report(("opencv-python-headless", "5.0.0.93", ['numpy>=2; python_version >= "3.9"']),
                     ("numpy", "2.4.6", []), ("paho-mqtt", "2.1.0", []))
    with pytest.raises(PinError) as err:
        check_report(report, "1.24.2")
    text = str(err.value)
    assert "numpy 2.4.6" in text and "1.24.2" in text and "opencv-python-headless 5.0.0.93" in text
    assert "paho-mqtt" not in text and "Nothing was installed" in text


def test_report_without_numpy_passes_even_the_same_version_elsewhere_is_refused() -> None:
    check_report(_report(("opencv-python-headless", "4.11.0.86", ["numpy>=1.21.2"])), "1.24.2")
    with pytest.raises(PinError):  # a PyPI wheel of the same number is still not apt's build
        check_report(_report(("numpy", "1.24.2", [])), "1.24.2")


def _dist_info(site: Path, name: str, version: str) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_system_and_venv_numpy_are_read_from_their_own_folders(tmp_path: Path) -> None:
    system = tmp_path / "usr/lib/python3/dist-packages"
    _dist_info(system, "numpy", "1.24.2")
    _dist_info(system, "h5py", "3.7.0")
    assert system_numpy_version(system) == "1.24.2"
    assert constraints_text("1.24.2").splitlines()[-1] == "numpy==1.24.2"
    venv = tmp_path / "venv"
    (venv / "lib/python3.11/site-packages").mkdir(parents=True)
    assert venv_numpy_version(venv) is None
    assert numpy_pin.main(["shadowed", str(venv), "--site", str(system)]) == 1  # nothing to rebuild
    _dist_info(venv / "lib/python3.11/site-packages", "numpy", "2.4.6")
    assert venv_numpy_version(venv) == "2.4.6"
    assert numpy_pin.main(["shadowed", str(venv), "--site", str(system)]) == 0  # the installer rebuilds it
    assert numpy_pin.main(["constraints", "--site", str(tmp_path / "none")]) == 3  # no python3-numpy: stop


def _wheel(folder: Path, name: str, version: str, requires: list[str]) -> Path:
    """A minimal wheel: only its metadata matters to a dry-run resolution."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/__init__.py", "")
        zf.writestr(f"{info}/METADATA", meta)
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return path


def _pip_dry_run(tmp: Path, wheels: Path, requirement: str, constraints: Path | None) -> tuple[int, str, Path]:
    report = tmp / f"report-{requirement}-{bool(constraints)}.json"
    cmd = [sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--quiet", "--no-index",
           "--find-links", str(wheels), "--report", str(report), requirement]
    if constraints:
        cmd += ["-c", str(constraints)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # this machine's global pip settings must not change the resolution
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    return proc.returncode, proc.stderr, report


def test_real_pip_resolution_is_pinned_to_the_installed_numpy(tmp_path: Path) -> None:
    here = metadata.version("numpy")  # this venv's numpy plays the system numpy
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "numpy", "99.0", [])  # a newer numpy on the "index"
    _wheel(wheels, "wantsnewnumpy", "1.0", ["numpy>=99"])  # like opencv-python-headless 5 wanting numpy>=2
    _wheel(wheels, "anynumpy", "1.0", ["numpy>=1.20"])
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(constraints_text(here))

    # The old installer: no constraint, pip replaces numpy. The check refuses that resolution.
    code, err, report = _pip_dry_run(tmp_path, wheels, "wantsnewnumpy", None)
    assert code == 0, err
    with pytest.raises(PinError, match=r"numpy 99\.0.*wantsnewnumpy 1\.0"):
        check_report(json.loads(report.read_text()), here)
    # With the constraint pip cannot resolve at all, so nothing is installed.
    code, err, _ = _pip_dry_run(tmp_path, wheels, "wantsnewnumpy", constraints)
    assert code != 0 and "numpy" in err
    # A dependency that works with the installed numpy resolves without touching it.
    code, err, report = _pip_dry_run(tmp_path, wheels, "anynumpy", constraints)
    assert code == 0, err
    installs = [i["metadata"]["name"] for i in json.loads(report.read_text())["install"]]
    assert installs == ["anynumpy"]
    check_report(json.loads(report.read_text()), here)


def test_abi_compatibility_rule() -> None:
    assert not abi_compatible("1.24.2", "2.4.6")  # Bookworm's simplejpeg under pip's numpy 2
    assert abi_compatible("2.2.4", "2.4.6")  # Trixie: built against older runs on newer
    assert not abi_compatible("2.2.4", "2.1.0")
    assert abi_compatible("1.24.2", "1.24.2")


def test_board_model_and_groups_off_a_pi(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\0")
    assert board_model((tmp_path / "missing", model)) == "Raspberry Pi 5 Model B Rev 1.0"
    assert board_model((tmp_path / "missing",)) is None
    state = groups_state("no-such-user-facegate-test")
    assert state.ok and "skipped" in state.detail


def test_installer_script_is_valid_bash_and_uses_the_pin() -> None:
    script = ROOT / "deploy/install-pi.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "|| true" not in text  # a failing doctor check stops the install
    for needed in ("pin constraints", "pin check-report", "pin shadowed", "-c \"$DEST/constraints.txt\"",
                   "doctor --installer"):
        assert needed in text, needed

