"""doctor's Raspberry Pi checks: the numpy apt's camera stack needs, the board's pin library, the service's groups.

Each says what is wrong in the installer's words and the command that fixes it. They also run (and pass, or
skip with the reason) on a development machine, so ``facegate doctor`` means the same everywhere.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from facegate.pi.numpy_pin import SYSTEM_SITE, system_numpy_version

SERVICE_USER = "facegate"
MODEL_FILES = (Path("/proc/device-tree/model"), Path("/sys/firmware/devicetree/base/model"))
# Device nodes the service opens, and the group the unit gives it for them (systemd/facegate.service).
DEVICE_GROUPS = {"gpio": ("/dev/gpiochip*", "/dev/gpiomem*"), "video": ("/dev/video*", "/dev/media*")}


def board_model(files: tuple[Path, ...] = MODEL_FILES) -> str | None:
    """'Raspberry Pi 5 Model B Rev 1.0' and the like; None when this is not a device-tree board."""
    for path in files:
        try:
            return path.read_bytes().rstrip(b"\0").decode(errors="replace").strip() or None
        except OSError:
            continue
    return None


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def abi_compatible(built_against: str, running: str) -> bool:
    """Can an extension compiled against numpy ``built_against`` run on numpy ``running``?

    numpy keeps its C ABI backward compatible within a major version (build against older, run on newer); a
    major version change (1.x extensions on numpy 2) or running an older numpy breaks it.
    """
    built, run = _version(built_against), _version(running)
    return built[0] == run[0] and run >= built


def numpy_fix() -> str:
    venv = Path(sys.prefix)
    return (f"re-run the installer (sudo deploy/install-pi.sh): it rebuilds {venv} on the system numpy; or by hand: "
            f"{venv}/bin/pip uninstall -y numpy && {venv}/bin/pip install -c {venv.parent}/constraints.txt "
            f"-e {venv.parent}")


@dataclass(frozen=True)
class CheckState:
    """One Pi check's outcome, in the shape doctor reports (``ok``, ``detail``, ``fix``)."""

    ok: bool
    detail: str
    fix: str = ""


def numpy_state(site: Path = SYSTEM_SITE) -> CheckState:
    """Is the numpy this Python imports the one apt's compiled packages (python3-picamera2's stack) expect?"""
    import numpy

    loaded = str(numpy.__version__)
    where = Path(numpy.__file__).resolve().parent.parent
    if str(site) not in sys.path:
        return CheckState(True, f"numpy {loaded} ({where}); apt's packages are not on this Python's path, "
                                "so nothing can conflict")
    system = system_numpy_version(site)
    if system is None:
        return CheckState(True, f"numpy {loaded} ({where}); no apt numpy (python3-numpy) to conflict with")
    if where == site.resolve():
        return CheckState(True, f"numpy {loaded} is the system's (python3-numpy, {site})")
    if abi_compatible(system, loaded):
        return CheckState(True, f"numpy {loaded} from {where} shadows the system numpy {system}; ABI-compatible "
                                f"(extensions built against {system} run on {loaded})")
    return CheckState(False, f"numpy {loaded} from {where} shadows the system numpy {system} that apt's "
                             "python3-picamera2 stack (python3-simplejpeg) is compiled against: "
                             "'from picamera2 import Picamera2' fails with 'numpy.dtype size changed'",
                      numpy_fix())


def groups_state(user: str = SERVICE_USER) -> CheckState:
    """The service user is in the groups that own the GPIO and camera device nodes."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return CheckState(True, f"no '{user}' user here (not installed with deploy/install-pi.sh): skipped")
    member = {g.gr_name for g in grp.getgrall() if user in g.gr_mem}
    with contextlib.suppress(KeyError):
        member.add(grp.getgrgid(entry.pw_gid).gr_name)
    missing = [g for g in DEVICE_GROUPS if g not in member]
    if missing:
        return CheckState(False, f"'{user}' is not in the group(s) {', '.join(missing)}",
                           f"sudo usermod -a -G {','.join(missing)} {user} && sudo systemctl restart facegate")
    closed = []
    for patterns in DEVICE_GROUPS.values():
        for pattern in patterns:
            for dev in sorted(Path("/dev").glob(pattern.removeprefix("/dev/"))):
                st = dev.stat()
                try:
                    owner_group = grp.getgrgid(st.st_gid).gr_name
                except KeyError:
                    owner_group = str(st.st_gid)
                if owner_group not in member and not st.st_mode & stat.S_IROTH:
                    closed.append(f"{dev} ({owner_group}, {stat.filemode(st.st_mode)})")
    if closed:
        return CheckState(False, f"'{user}' cannot open {', '.join(closed)}",
                           "give the devices to the group with a udev rule (Raspberry Pi OS ships one), e.g. "
                           'SUBSYSTEM=="gpio", GROUP="gpio", MODE="0660" in /etc/udev/rules.d/60-facegate.rules')
    here = "" if os.geteuid() == entry.pw_uid else f" (checked for '{user}')"
    return CheckState(True, f"'{user}' is in {', '.join(sorted(DEVICE_GROUPS))}{here}")
