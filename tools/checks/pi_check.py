"""Prove the Raspberry Pi install on an x86 Linux box: Debian arm64 root filesystems under qemu-user.

``make pi-check`` (as root) builds a Debian bookworm and a Debian trixie arm64 root filesystem with
debootstrap (cached under build/pi-check/), runs ``deploy/install-pi.sh`` inside a fresh copy of each, then
runs the door's commands there under emulation and prints one table (release x step: ok/failed, seconds).
It exits non-zero when any step fails.

What is real and what is a stand-in (docs/install-and-pi.md repeats this):
- Real: Debian's arm64 packages of each release (python3, python3-numpy, python3-h5py, mosquitto-clients...),
  the unchanged installer, pip resolving aarch64 wheels from PyPI for that Python and numpy, the shipped models
  running in LiteRT, the service's frame loop on a replay with gpiozero's MockFactory.
- Stand-ins, because Raspberry Pi OS's own packages are not in Debian: ``python3-picamera2`` and
  ``python3-lgpio`` are tiny local .deb packages built here. The picamera2 stand-in is a ``picamera2`` module
  whose import does what the real one's does to numpy: it imports a C extension compiled against the system
  numpy (Debian's ``python3-h5py``, standing in for ``python3-simplejpeg``), so a venv that shadows the system
  numpy with an incompatible one fails exactly as on a Pi ("numpy.dtype size changed"). Its Picamera2 class
  raises RuntimeError on open (no camera under emulation), so doctor's camera check is expected to fail there
  and pi-check runs doctor with the camera on a replay and the pins on the mock factory.
  ``python3-lgpio`` is empty (Debian has no lgpio); no real GPIO is exercised.
- Not emulated: libcamera, a real camera, real pins, the Pi's kernel, systemd (the chroot has no init).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]
from tools import ROOT
from tools.checks.debian_rootfs import (
    CHECKOUT_IGNORE,
    Chroot,
    Result,
    Step,
    build_base,
    build_standins,
    install_standins,
    shipped_inputs,
    table,
)
from tools.checks.debian_rootfs import json_lines as _json_lines
from tools.checks.debian_rootfs import tail as _tail

RELEASES = ("bookworm", "trixie")


def log(msg: str) -> None:
    print(f"[pi-check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def ensure_binfmt() -> None:
    """qemu-aarch64 must be registered with binfmt_misc so the chroot's arm64 programs run."""
    if not shutil.which("debootstrap") or not Path("/usr/bin/qemu-aarch64-static").exists():
        subprocess.run(["apt-get", "install", "-y", "-qq", "qemu-user-static", "debootstrap", "binfmt-support"],
                       check=True)
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "status").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], check=True)
    if not (binfmt / "qemu-aarch64").exists():
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], check=True)
    if not (binfmt / "qemu-aarch64").exists():
        raise SystemExit("pi-check: qemu-aarch64 is not registered in binfmt_misc (install qemu-user-static)")


VENV = "/opt/facegate/.venv"
WORK = "/var/tmp/pi-check"  # inside the chroot: inputs made on the host, the door's state


def host_inputs(folder: Path) -> list[float]:
    """What the chroot steps use, made here with the development venv: a shipped photo (scikit-image's astronaut),
    the demo's replay frames, and the x86 embedding of the photo to compare the arm64 one with."""
    photo = shipped_inputs(folder)
    from facegate.base.imageio import read_image
    from facegate.vision.pipeline import FacePipeline, PipelineOptions

    pipeline = FacePipeline.from_models_dir(None, PipelineOptions())
    best = pipeline.process(read_image(photo), largest_only=True)[0]
    assert best.embedding is not None
    (folder / "facegate.toml").write_text(f"""device_id = "pi-check"
state_dir = "{WORK}/state"
[camera]
source = "replay:{WORK}/frames"
fps = 10
[door]
pin_factory = "mock"
unlock_seconds = 1
[mqtt]
enabled = false
[outbox]
flush_timeout_seconds = 1
# Under emulation a frame takes seconds, not milliseconds: a track must survive that between its frames.
[recognition]
track_timeout_seconds = 120
# The visitor is a photograph pasted into frames; the liveness gate would (rightly) refuse it.
[liveness]
enabled = false
""")
    return [float(v) for v in best.embedding]


def check_release(release: str, build: Path, inputs: Path, embedding: list[float], debs: dict[str, Path],
                  result: Result, full: bool) -> None:
    logfile = build / f"{release}.log"
    logfile.write_text(f"pi-check {release} {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")

    def step(name: str, fn: Callable[[], tuple[bool, str]]) -> bool:
        return result.run(name, fn, log)

    t0 = time.monotonic()
    cached = (build / f"{release}-base" / ".complete").exists()
    build_base(release, build)
    result.steps.append(Step("base", True, time.monotonic() - t0, "cached" if cached else "debootstrap"))

    with Chroot(release, build, logfile) as ch:
        shutil.copytree(ROOT, ch.root / "root/facegate", symlinks=True, ignore=CHECKOUT_IGNORE)
        shutil.copytree(inputs, ch.root / WORK.lstrip("/"))
        ok, detail = install_standins(ch, debs)
        if not ok:
            result.steps.append(Step("stand-ins", False, 0, detail))
            return
        log(f"{release}: stand-ins installed: {detail}")

        def install() -> tuple[bool, str]:
            proc = ch.run(["bash", "/root/facegate/deploy/install-pi.sh"], timeout=2400)
            return proc.returncode == 0, _tail(proc)

        def numpy_is_system() -> tuple[bool, str]:
            proc = ch.run([f"{VENV}/bin/python", "-c", "import numpy; print(numpy.__version__, numpy.__file__)"])
            ver, _, path = proc.stdout.strip().partition(" ")
            return path.startswith("/usr/lib/python3/dist-packages/"), f"numpy {ver} from {path}"

        def standin_import() -> tuple[bool, str]:
            proc = ch.run([f"{VENV}/bin/python", "-c",
                           "from picamera2 import Picamera2; import h5py; print('h5py', h5py.__version__)"])
            return proc.returncode == 0, _tail(proc, 1)

        def version() -> tuple[bool, str]:
            proc = ch.run([f"{VENV}/bin/facegate", "--version"])
            return proc.returncode == 0, proc.stdout.strip() or _tail(proc)

        def embed() -> tuple[bool, str]:
            proc = ch.run([f"{VENV}/bin/facegate", "embed", f"{WORK}/astronaut.png"])
            rows = _json_lines(proc.stdout)
            if proc.returncode or not rows or "embedding" not in rows[0]:
                return False, _tail(proc)
            arm = rows[0]["embedding"]
            assert isinstance(arm, list)
            cos = sum(a * b for a, b in zip(arm, embedding, strict=True))
            return cos > 0.999, f"cosine to the x86 embedding {cos:.5f}"

        def enroll() -> tuple[bool, str]:
            ch.run(["mkdir", "-p", f"{WORK}/state"])
            proc = ch.run([f"{VENV}/bin/facegate", "enroll", "--gallery", f"{WORK}/state/gallery.db", "--id",
                           "astronaut", "--name", "Eileen Collins", f"{WORK}/astronaut.png"])
            return proc.returncode == 0, _tail(proc, 1)

        def doctor() -> tuple[bool, str]:
            proc = ch.run([f"{VENV}/bin/facegate", "doctor", "--config", f"{WORK}/facegate.toml"])
            rows = _json_lines(proc.stdout)
            if not rows:
                return False, f"exit {proc.returncode}: {_tail(proc)}"
            # The root filesystem shares this machine's kernel clock: when the host itself is not synchronised,
            # doctor is right to say so in there too, and that is no fault of the install (it is printed).
            host = host_clock_note()
            # No OTP device key and no TPM2 under qemu: the key can only be a file on the same card, which doctor
            # rightly calls weak; a real Pi 4/5 binds it to the board (privacy.key_source = "auto"). Printed.
            unbound = [r for r in rows if r.get("check") == "privacy" and not r.get("ok")
                       and "bind the key to the board" in str(r.get("fix"))]
            bad = [f"{r['check']}: {r['detail']}" for r in rows
                   if not r.get("ok") and not (r.get("check") == "clock" and host) and r not in unbound]
            names = ",".join(str(r["check"]) for r in rows)
            clock = [f"clock: {r['detail']} ({host})" for r in rows if r.get("check") == "clock" and not r.get("ok")]
            weak = [f"privacy: {r['detail']} (no board key to bind to under emulation)" for r in unbound]
            return not bad, "; ".join(bad + clock + weak) or f"all ok ({names})"

        def service() -> tuple[bool, str]:
            proc = ch.run(["/usr/bin/env", "PYTHONUNBUFFERED=1", f"{VENV}/bin/facegate", "run", "--config",
                           f"{WORK}/facegate.toml"], timeout=900)
            events = [str(r.get("event", {}).get("type")) for r in _json_lines(proc.stdout)  # type: ignore[union-attr]
                      if isinstance(r.get("event"), dict)]
            seen = [e for e in ("access_granted", "door_unlocked", "unknown_face", "frame_rejected") if e in events]
            return proc.returncode == 0 and "access_granted" in events, \
                f"exit {proc.returncode}; events seen: {', '.join(seen) or _tail(proc)}"

        def old_venv() -> tuple[bool, str]:
            """What the old installer left on Bookworm: numpy 2 in the venv. Must fail, and be reported."""
            proc = ch.run([f"{VENV}/bin/pip", "install", "--quiet", "numpy>=2"], timeout=900)
            if proc.returncode:
                return False, "could not put numpy 2 into the venv: " + _tail(proc)
            imp = ch.run([f"{VENV}/bin/python", "-c", "from picamera2 import Picamera2"])
            doc = ch.run([f"{VENV}/bin/facegate", "doctor", "--config", "/etc/facegate/facegate.toml"])
            rows = {str(r["check"]): r for r in _json_lines(doc.stdout)}
            numpy_row, camera_row = rows.get("numpy", {}), rows.get("camera", {})
            abi = "numpy.dtype size changed" in imp.stderr
            diagnosed = numpy_row.get("ok") is False and "install-pi.sh" in str(numpy_row.get("fix"))
            camera_said = "ABI" in str(camera_row.get("detail"))
            return (imp.returncode != 0 and abi and doc.returncode == 1 and diagnosed and camera_said,
                    f"import: {_tail(imp, 1)[:120]}; doctor exit {doc.returncode}, numpy check: "
                    f"{str(numpy_row.get('detail'))[:90]}")

        def camera_error() -> tuple[bool, str]:
            """With that venv, the service on the Pi camera reports camera_error and keeps running."""
            proc = ch.run(["timeout", "--preserve-status", "-s", "TERM", "120", f"{VENV}/bin/facegate", "run",
                           "--config", f"{WORK}/facegate-picamera2.toml"], timeout=400)
            errors = [r["event"] for r in _json_lines(proc.stdout)
                      if isinstance(r.get("event"), dict) and r["event"].get("type") == "camera_error"]
            stopped = any(isinstance(r.get("event"), dict) and r["event"].get("type") == "service_stopped"
                          for r in _json_lines(proc.stdout))
            fix = str(errors[0].get("fix", "")) if errors else ""  # type: ignore[union-attr]
            return (bool(errors) and "install-pi.sh" in fix and stopped and proc.returncode == 0,
                    f"camera_error events: {len(errors)}, stopped by SIGTERM after 120 s, exit {proc.returncode}")

        def reinstall() -> tuple[bool, str]:
            ok, detail = install()
            if not ok:
                return False, detail
            ok_np, np_detail = numpy_is_system()
            ok_imp, _ = standin_import()
            return ok_np and ok_imp, f"repaired: {np_detail}; stand-in imports"

        if not step("install", install):
            return
        step("numpy is system", numpy_is_system)
        step("stand-in import", standin_import)
        step("--version", version)
        step("embed", embed)
        step("enroll", enroll)
        step("doctor", doctor)
        step("run (replay)", service)
        opencv = ch.run(["apt-get", "install", "--assume-no", "python3-opencv"])
        log(f"{release}: apt python3-opencv would need: "
            + " ".join(ln for ln in opencv.stdout.splitlines() if "newly installed" in ln or "Need to get" in ln
                       or "After this" in ln))
        if full and release == "bookworm":
            text = (inputs / "facegate.toml").read_text().replace(f'source = "replay:{WORK}/frames"',
                                                                  'source = "picamera2"')
            (ch.root / WORK.lstrip("/") / "facegate-picamera2.toml").write_text(text)
            step("old venv fails", old_venv)
            step("camera_error", camera_error)
            step("re-run repairs", reinstall)


def host_clock_note() -> str:
    """Why the emulated door's clock check may fail without an install fault: "" when this machine's clock is
    synchronised, else what the same probe says here (the chroot shares the kernel's clock)."""
    from facegate.access.clock import ClockProbe

    state = ClockProbe().state()
    return "" if state.trusted else f"this host's kernel clock is not synchronised either: {state.detail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--release", action="append", choices=RELEASES, help="default: both")
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build" / "pi-check")
    parser.add_argument("--only-base", action="store_true", help="build the cached root filesystems and stop")
    parser.add_argument("--quick", action="store_true",
                        help="skip the old-venv / camera_error / re-run steps (Bookworm's numpy-2 repair)")
    parser.add_argument("--serial", action="store_true", help="one release after the other (default: both at once)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("pi-check: run as root (debootstrap and chroot need it)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("pi-check: stopped"))  # unwind: mounts are released
    releases = args.release or list(RELEASES)
    build: Path = args.build_dir.resolve()
    build.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    ensure_binfmt()
    if args.only_base:
        for release in releases:
            t0 = time.monotonic()
            build_base(release, build)
            log(f"{release}: base ready in {time.monotonic() - t0:.0f} s")
        return 0
    inputs = build / "inputs"
    embedding = host_inputs(inputs)
    debs = build_standins(build)
    results = [Result(r) for r in releases]

    def one(result: Result) -> None:
        try:
            check_release(result.release, build, inputs, embedding, debs, result, not args.quick)
        except Exception as exc:
            result.steps.append(Step("pi-check", False, 0, f"{type(exc).__name__}: {exc}"))

    if args.serial:
        for result in results:
            one(result)
    else:
        threads = [threading.Thread(target=one, args=(r,)) for r in results]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    print()
    print(table(results))
    print(f"\npi-check: {time.monotonic() - started:.0f} s in all; logs in {build}/<release>.log")
    for r in results:
        for s in r.steps:
            if not s.ok:
                print(f"  {r.release} {s.name}: {s.detail}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
