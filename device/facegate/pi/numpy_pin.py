"""Keep the service's venv on the numpy that apt's camera stack was compiled against.

apt's ``python3-picamera2`` pulls ``python3-simplejpeg`` and friends, C extensions built against the system
numpy (1.24 on Bookworm, 2.2 on Trixie). The venv is made with ``--system-site-packages`` so it sees them, and
a venv-local numpy of another ABI (pip pulls numpy 2.x for ``opencv-python-headless`` 5) shadows the system
one: ``from picamera2 import Picamera2`` then fails with "numpy.dtype size changed". The installer therefore
pins numpy to the system version with a constraints file, refuses a resolution that would install numpy at all,
and rebuilds a venv that already has its own.

Standard library only: ``deploy/install-pi.sh`` runs this file with the system ``python3`` before the venv
exists, as ``python3 device/facegate/pi/numpy_pin.py COMMAND ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

# Where Debian and Raspberry Pi OS put apt's Python packages.
SYSTEM_SITE = Path("/usr/lib/python3/dist-packages")
# What numpy and Cython say when an extension meets a numpy of another ABI (seen on Bookworm with numpy 2).
ABI_MARKERS = (
    "numpy.dtype size changed",
    "compiled using NumPy 1.x cannot be run in",
    "_ARRAY_API not found",
    "numpy.core.multiarray failed to import",
    "numpy.core._multiarray_umath failed to import",
    "module compiled against ABI version",
    "module compiled against API version",
)


class PinError(Exception):
    """The install would break the camera stack; the message says why and what to do."""


def system_numpy_version(site: Path = SYSTEM_SITE) -> str | None:
    """The numpy version installed by apt (python3-numpy), or None when there is none."""
    for dist in metadata.distributions(path=[str(site)]):
        if (dist.metadata["Name"] or "").lower() == "numpy":
            return str(dist.version)
    return None


def venv_numpy_version(venv: Path) -> str | None:
    """A numpy installed inside the venv itself (which would shadow the system one), or None."""
    for site in sorted(venv.glob("lib/python3*/site-packages")):
        for dist in metadata.distributions(path=[str(site)]):
            if (dist.metadata["Name"] or "").lower() == "numpy":
                return str(dist.version)
    return None


def constraints_text(system_version: str) -> str:
    return (f"# Written by deploy/install-pi.sh: the venv must keep apt's numpy (python3-numpy {system_version}),\n"
            f"# which python3-picamera2's C extensions were compiled against.\nnumpy=={system_version}\n")


def _requires_numpy(item: dict[str, Any]) -> list[str]:
    reqs = item.get("metadata", {}).get("requires_dist") or []
    return [r for r in reqs if r.lower().replace("_", "-").split(";")[0].strip().startswith("numpy")
            and not r.lower().startswith("numpy-")]


def check_report(report: dict[str, Any], system_version: str) -> None:
    """Raise PinError when pip's ``--dry-run --report`` resolution would install any numpy into the venv.

    Any numpy in the venv shadows the system one, even the same version number (a PyPI wheel is not the build
    apt's extensions were compiled against), so the only safe resolution installs none.
    """
    installs = report.get("install") or []
    for item in installs:
        meta = item.get("metadata", {})
        if str(meta.get("name", "")).lower() == "numpy":
            wanted_by = [f"{m['metadata']['name']} {m['metadata']['version']} ({'; '.join(_requires_numpy(m))})"
                         for m in installs if _requires_numpy(m)]
            raise PinError(
                f"pip would install numpy {meta.get('version')} into the venv, shadowing the system numpy "
                f"{system_version} that apt's python3-picamera2 stack is compiled against "
                f"(from picamera2 import Picamera2 would then fail: 'numpy.dtype size changed'). "
                f"Wanted by: {', '.join(wanted_by) or 'the project itself'}. Nothing was installed. "
                f"Fix: keep the constraints file (numpy=={system_version}); if a dependency has no release "
                "for this numpy, report it: the project must pin an older one."
            )


def looks_like_abi_error(text: str) -> bool:
    return any(marker in text for marker in ABI_MARKERS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="numpy_pin.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("constraints", help="print a pip constraints file pinning the system numpy")
    p.add_argument("--site", type=Path, default=SYSTEM_SITE)
    p = sub.add_parser("check-report", help="fail when pip's --dry-run --report would install numpy")
    p.add_argument("report", type=Path)
    p.add_argument("--site", type=Path, default=SYSTEM_SITE)
    p = sub.add_parser("shadowed", help="exit 0 (and say so) when VENV has a numpy of its own")
    p.add_argument("venv", type=Path)
    p.add_argument("--site", type=Path, default=SYSTEM_SITE)
    args = parser.parse_args(argv)

    system = system_numpy_version(args.site)
    if system is None:
        print(f"install-pi: no system numpy in {args.site}: apt install python3-numpy first", file=sys.stderr)
        return 3
    if args.cmd == "constraints":
        sys.stdout.write(constraints_text(system))
        return 0
    if args.cmd == "check-report":
        try:
            check_report(json.loads(args.report.read_text()), system)
        except PinError as exc:
            print(f"install-pi: {exc}", file=sys.stderr)
            return 1
        return 0
    own = venv_numpy_version(args.venv)
    if own is None:
        return 1
    print(f"install-pi: {args.venv} has its own numpy {own}, shadowing the system numpy {system}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
