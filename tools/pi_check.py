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
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASES = ("bookworm", "trixie")
# Packages in the cached base: what a Raspberry Pi OS Lite image already has, plus what the stand-ins depend on.
BASE_PACKAGES = ["python3", "python3-venv", "python3-numpy", "python3-h5py", "ca-certificates", "passwd"]
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def log(msg: str) -> None:
    print(f"[pi-check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def mirror() -> str:
    """The Debian mirror this machine's apt uses (deb.debian.org when none is configured)."""
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("URIs:") and "debian" in line and "security" not in line:
                return line.split()[1]
            if line.startswith("deb ") and "/debian" in line and "security" not in line:
                return next(w for w in line.split()[1:] if w.startswith("http"))
    return "http://deb.debian.org/debian"


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


def build_base(release: str, build: Path) -> Path:
    """The cached debootstrap of one release; built once (minutes under emulation), reused afterwards."""
    base = build / f"{release}-base"
    if (base / ".complete").exists():
        return base
    if base.exists():
        shutil.rmtree(base)
    tmp = build / f"{release}-base.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    cache = build / "debs" / release
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(["debootstrap", "--arch=arm64", "--variant=minbase", f"--cache-dir={cache}",
                    "--include=" + ",".join(BASE_PACKAGES), release, str(tmp), mirror()],
                   check=True, env={"PATH": os.environ.get("PATH", CHROOT_PATH), "LANG": "C.UTF-8"})
    (tmp / ".complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n")
    tmp.rename(base)
    return base


@dataclass
class Step:
    name: str
    ok: bool
    seconds: float
    detail: str = ""


@dataclass
class Result:
    release: str
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)


STANDIN_DEBS = {
    "python3-picamera2": ("python3-numpy, python3-h5py", "picamera2"),
    "python3-lgpio": ("", None),
}
VENV = "/opt/facegate/.venv"
WORK = "/var/tmp/pi-check"  # inside the chroot: inputs made on the host, the door's state


def build_standins(build: Path) -> dict[str, Path]:
    """Local .deb packages named like Raspberry Pi OS's (see tools/pi_standins/README.md)."""
    out = build / "standins"
    out.mkdir(parents=True, exist_ok=True)
    debs = {}
    for name, (depends, module) in STANDIN_DEBS.items():
        tree = out / name
        if tree.exists():
            shutil.rmtree(tree)
        (tree / "DEBIAN").mkdir(parents=True)
        control = (f"Package: {name}\nVersion: 0.0~picheck1\nArchitecture: all\nMaintainer: facegate pi-check\n"
                   f"Description: pi-check stand-in for Raspberry Pi OS's {name} (tools/pi_standins)\n")
        if depends:
            control += f"Depends: {depends}\n"
        (tree / "DEBIAN" / "control").write_text(control)
        doc = tree / "usr/share/doc" / name
        doc.mkdir(parents=True)
        shutil.copy(ROOT / "tools/pi_standins/README.md", doc / "README.md")
        if module:
            shutil.copytree(ROOT / "tools/pi_standins" / module,
                            tree / "usr/lib/python3/dist-packages" / module,
                            ignore=shutil.ignore_patterns("__pycache__"))
        deb = out / f"{name}.deb"
        subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)], check=True,
                       capture_output=True)
        debs[name] = deb
    return debs


def host_inputs(folder: Path) -> list[float]:
    """What the chroot steps use, made here with the development venv: a shipped photo (scikit-image's astronaut),
    the demo's replay frames, and the x86 embedding of the photo to compare the arm64 one with."""
    sys.path.insert(0, str(ROOT / "device"))
    sys.path.insert(0, str(ROOT / "tools"))
    import cv2
    from demo import build_frames, shipped_photos
    from facegate.vision.pipeline import FacePipeline, PipelineOptions

    folder.mkdir(parents=True, exist_ok=True)
    astronaut, _hopper, _bg = shipped_photos()
    cv2.imwrite(str(folder / "astronaut.png"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    frames = folder / "frames"
    if frames.exists():
        shutil.rmtree(frames)
    build_frames(frames)
    pipeline = FacePipeline.from_models_dir(None, PipelineOptions())
    from facegate.imageio import read_image

    best = pipeline.process(read_image(folder / "astronaut.png"), largest_only=True)[0]
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


def _unmount_under(root: Path) -> None:
    mounted = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for where in sorted((m for m in mounted if m.startswith(str(root) + "/")), reverse=True):
        subprocess.run(["umount", "-l", where], check=False)


class Chroot:
    """One throw-away copy of a cached base, with /proc mounted (never /sys: LiteRT's cpuinfo would read the x86
    host's CPU topology and crash) and a clean environment (the host's PIP_* settings must not leak in)."""

    def __init__(self, release: str, build: Path, logfile: Path) -> None:
        self.release, self.build, self.logfile = release, build, logfile
        self.root = build / f"{release}-run"
        self.mounts: list[Path] = []

    def __enter__(self) -> Chroot:
        _unmount_under(self.root)  # left by an interrupted run
        if self.root.exists():
            subprocess.run(["rm", "-rf", "--one-file-system", str(self.root)], check=True)
        subprocess.run(["cp", "-a", "--reflink=auto", str(self.build / f"{self.release}-base"), str(self.root)],
                       check=True)
        shutil.copy("/etc/resolv.conf", self.root / "etc/resolv.conf")
        # This machine's HTTPS may go through a TLS-inspecting proxy whose CA only the host's bundle has: pip in
        # the chroot gets that bundle (and nothing else of the host's pip settings). A real Pi needs none of it.
        host_ca = Path("/etc/ssl/certs/ca-certificates.crt")
        if host_ca.exists():
            shutil.copy(host_ca, self.root / "etc/pi-check-host-ca.crt")
            (self.root / "etc/pip.conf").write_text("[global]\ncert = /etc/pi-check-host-ca.crt\n")
        self._mount(["-t", "proc", "proc"], self.root / "proc")
        for host, inside in ((self.build / "pip-cache" / self.release, "root/.cache/pip"),
                             (self.build / "debs" / self.release, "var/cache/apt/archives")):
            host.mkdir(parents=True, exist_ok=True)
            (host / "partial").mkdir(exist_ok=True) if inside.startswith("var") else None
            self._mount(["--bind", str(host)], self.root / inside)
        return self

    def _mount(self, how: list[str], where: Path) -> None:
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", *how, str(where)], check=True)
        self.mounts.append(where)

    def __exit__(self, *exc: object) -> None:
        for where in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(where)], check=False)

    def run(self, cmd: list[str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
        env = {"PATH": CHROOT_PATH, "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive",
               "TERM": "dumb"}
        with self.logfile.open("a") as logf:
            logf.write(f"\n$ {' '.join(cmd)}\n")
            logf.flush()
            try:
                proc = subprocess.run(["chroot", str(self.root), *cmd], env=env, capture_output=True, text=True,
                                      timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
                logf.write(out + f"\n[timed out after {timeout:.0f} s]\n")
                return subprocess.CompletedProcess(cmd, 124, out, f"timed out after {timeout:.0f} s")
            logf.write(proc.stdout + proc.stderr + f"[exit {proc.returncode}]\n")
        return proc


def _tail(proc: subprocess.CompletedProcess[str], n: int = 2) -> str:
    lines = [ln for ln in (proc.stderr + proc.stdout).strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[:300]


def _json_lines(text: str) -> list[dict[str, object]]:
    out = []
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def check_release(release: str, build: Path, inputs: Path, embedding: list[float], debs: dict[str, Path],
                  result: Result, full: bool) -> None:
    logfile = build / f"{release}.log"
    logfile.write_text(f"pi-check {release} {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")

    def step(name: str, fn: Callable[[], tuple[bool, str]]) -> bool:
        t0 = time.monotonic()
        try:
            ok, detail = fn()
        except Exception as exc:  # one step's crash is that step's failure; the table still comes out
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        result.steps.append(Step(name, ok, time.monotonic() - t0, detail))
        log(f"{release}: {name}: {'ok' if ok else 'FAILED'} in {time.monotonic() - t0:.0f} s  {detail}")
        return ok

    t0 = time.monotonic()
    cached = (build / f"{release}-base" / ".complete").exists()
    build_base(release, build)
    result.steps.append(Step("base", True, time.monotonic() - t0, "cached" if cached else "debootstrap"))

    with Chroot(release, build, logfile) as ch:
        shutil.copytree(ROOT, ch.root / "root/facegate", symlinks=True, ignore=shutil.ignore_patterns(
            ".venv", "build", ".git", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", "reports",
            "demo-state", "*.egg-info"))
        shutil.copytree(inputs, ch.root / WORK.lstrip("/"))
        policy = ch.run(["apt-cache", "policy", "python3-lgpio"]).stdout
        lgpio_real = "Candidate:" in policy and "Candidate: (none)" not in policy
        standins = [debs["python3-picamera2"]] + ([] if lgpio_real else [debs["python3-lgpio"]])
        for deb in standins:
            shutil.copy(deb, ch.root / "tmp" / deb.name)
        proc = ch.run(["dpkg", "-i", *[f"/tmp/{d.name}" for d in standins]])
        if proc.returncode:
            result.steps.append(Step("stand-ins", False, 0, _tail(proc)))
            return
        log(f"{release}: stand-ins installed: {', '.join(d.stem for d in standins)} (python3-lgpio "
            f"{'from Debian' if lgpio_real else 'stand-in'})")

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
            bad = [f"{r['check']}: {r['detail']}" for r in rows if not r.get("ok")]
            names = ",".join(str(r["check"]) for r in rows)
            return proc.returncode == 0 and not bad, "; ".join(bad) or f"all ok ({names})"

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


def table(results: list[Result]) -> str:
    names: list[str] = []
    for r in results:
        names += [s.name for s in r.steps if s.name not in names]
    width = max(len(n) for n in names) if names else 4
    head = f"| {'step':<{width}} | " + " | ".join(f"{r.release:<14}" for r in results) + " |"
    rule = "|" + "-" * (width + 2) + "|" + "|".join("-" * 16 for _ in results) + "|"
    lines = [head, rule]
    for n in names:
        cells = []
        for r in results:
            s = next((s for s in r.steps if s.name == n), None)
            cells.append(f"{'—':<14}" if s is None else f"{('ok' if s.ok else 'FAILED') + f' {s.seconds:.0f} s':<14}")
        lines.append(f"| {n:<{width}} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
