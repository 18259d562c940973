"""systemd/facegate.service: `systemd-analyze verify` is clean and the offline exposure score stays low.

The unit's ExecStart points at /opt/facegate; here it is pointed at this venv's facegate so verify checks a
real executable. Skips where systemd-analyze is not installed (apt install systemd).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_EXPOSURE = 1.5  # measured 1.4 with systemd 252 (it was 3.5 before the Pi hardening)


@pytest.fixture()
def unit(tmp_path: Path) -> Path:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed (apt install systemd)")
    facegate = Path(sys.executable).with_name("facegate")
    if not facegate.exists():
        pytest.skip(f"{facegate} not installed (pip install -e .)")
    text = (ROOT / "systemd/facegate.service").read_text().replace("/opt/facegate/.venv/bin/facegate", str(facegate))
    path = tmp_path / "facegate.service"
    path.write_text(text)
    return path


def test_unit_verifies_clean(unit: Path) -> None:
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stderr.strip() and not proc.stdout.strip(), proc.stderr


def test_unit_exposure_is_low_and_keeps_what_the_door_needs(unit: Path) -> None:
    proc = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
                          capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout + proc.stderr)
    assert found, proc.stdout[-500:] + proc.stderr[-500:]
    assert float(found.group(1)) <= MAX_EXPOSURE
    text = unit.read_text()
    settings = [line for line in text.splitlines() if not line.startswith("#")]
    assert not [s for s in settings if s.startswith("ProcSubset=")]  # LiteRT reads /proc/cpuinfo
    for kept in ("SupplementaryGroups=gpio video", "DeviceAllow=char-gpiochip rw", "DeviceAllow=char-video4linux rw",
                 "AF_NETLINK"):
        assert kept in text, kept
