"""Debian root filesystems for the host-side install checks (tools/checks/pi_check.py, tools/checks/systemd_check.py).

What both share: the mirror this machine's apt uses, a cached debootstrap per release and architecture, a
throw-away copy of it with /proc and the package caches mounted, Raspberry Pi OS's own packages as local stand-in
.debs, the door's inputs made on the host (scikit-image's astronaut, the demo's replay frames), and the table the
checks print. Root only (debootstrap, mount, chroot).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]
from tools import ROOT

# Packages in a cached base: what a Raspberry Pi OS Lite image already has, plus what the stand-ins depend on.
BASE_PACKAGES = ["python3", "python3-venv", "python3-numpy", "python3-h5py", "ca-certificates", "passwd"]
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What of a checkout goes into a root filesystem for the installer (never the host's venv or build output).
CHECKOUT_IGNORE = shutil.ignore_patterns(".venv", "build", ".git", "__pycache__", ".mypy_cache", ".ruff_cache",
                                         ".pytest_cache", "reports", "demo-state", "*.egg-info")


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


def build_base(release: str, build: Path, arch: str = "arm64", packages: list[str] | None = None) -> Path:
    """The cached debootstrap of one release; built once (minutes; more under emulation), reused afterwards."""
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
    subprocess.run(["debootstrap", f"--arch={arch}", "--variant=minbase", f"--cache-dir={cache}",
                    "--include=" + ",".join(packages or BASE_PACKAGES), release, str(tmp), mirror()],
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

    def run(self, name: str, fn: Callable[[], tuple[bool, str]], log: Callable[[str], None]) -> bool:
        """Run one step, timed; its crash is that step's failure, so the table still comes out."""
        t0 = time.monotonic()
        try:
            ok, detail = fn()
        except Exception as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        self.steps.append(Step(name, ok, time.monotonic() - t0, detail))
        log(f"{self.release}: {name}: {'ok' if ok else 'FAILED'} in {time.monotonic() - t0:.1f} s  {detail}")
        return ok


def table(results: list[Result]) -> str:
    """Release x step: ok/FAILED and seconds, in Markdown."""
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


def tail(proc: subprocess.CompletedProcess[str], n: int = 2) -> str:
    lines = [ln for ln in (proc.stderr + proc.stdout).strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[:300]


def json_lines(text: str) -> list[dict[str, object]]:
    out = []
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


STANDIN_DEBS = {
    "python3-picamera2": ("python3-numpy, python3-h5py", "picamera2"),
    "python3-lgpio": ("", None),
}


def build_standins(build: Path) -> dict[str, Path]:
    """Local .deb packages named like Raspberry Pi OS's (see tools/checks/pi_standins/README.md)."""
    out = build / "standins"
    out.mkdir(parents=True, exist_ok=True)
    debs = {}
    for name, (depends, module) in STANDIN_DEBS.items():
        tree = out / name
        if tree.exists():
            shutil.rmtree(tree)
        (tree / "DEBIAN").mkdir(parents=True)
        control = (f"Package: {name}\nVersion: 0.0~picheck1\nArchitecture: all\nMaintainer: facegate pi-check\n"
                   f"Description: pi-check stand-in for Raspberry Pi OS's {name} (tools/checks/pi_standins)\n")
        if depends:
            control += f"Depends: {depends}\n"
        (tree / "DEBIAN" / "control").write_text(control)
        doc = tree / "usr/share/doc" / name
        doc.mkdir(parents=True)
        shutil.copy(ROOT / "tools/checks/pi_standins/README.md", doc / "README.md")
        if module:
            shutil.copytree(ROOT / "tools/checks/pi_standins" / module,
                            tree / "usr/lib/python3/dist-packages" / module,
                            ignore=shutil.ignore_patterns("__pycache__"))
        deb = out / f"{name}.deb"
        subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)], check=True,
                       capture_output=True)
        debs[name] = deb
    return debs


def install_standins(ch: Chroot, debs: dict[str, Path]) -> tuple[bool, str]:
    """dpkg -i the stand-ins the release needs: python3-picamera2 always, python3-lgpio where Debian has none."""
    policy = ch.run(["apt-cache", "policy", "python3-lgpio"]).stdout
    lgpio_real = "Candidate:" in policy and "Candidate: (none)" not in policy
    standins = [debs["python3-picamera2"]] + ([] if lgpio_real else [debs["python3-lgpio"]])
    for deb in standins:
        shutil.copy(deb, ch.root / "tmp" / deb.name)
    proc = ch.run(["dpkg", "-i", *[f"/tmp/{d.name}" for d in standins]])
    if proc.returncode:
        return False, tail(proc)
    return True, (f"{', '.join(d.stem for d in standins)} (python3-lgpio "
                  f"{'from Debian' if lgpio_real else 'stand-in'})")


def shipped_inputs(folder: Path) -> Path:
    """scikit-image's astronaut as astronaut.png and the demo's replay (she walks up, then a stranger) in
    frames/, made with the development venv; returns the photo's path."""
    import cv2

    from tools.demo import build_frames, shipped_photos

    folder.mkdir(parents=True, exist_ok=True)
    astronaut, _hopper, _bg = shipped_photos()
    photo = folder / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    frames = folder / "frames"
    if frames.exists():
        shutil.rmtree(frames)
    build_frames(frames)
    return photo


def unmount_under(root: Path) -> None:
    mounted = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for where in sorted((m for m in mounted if m.startswith(str(root) + "/")), reverse=True):
        subprocess.run(["umount", "-l", where], check=False)


class Chroot:
    """One throw-away copy of a cached base, with /proc mounted (never /sys: LiteRT's cpuinfo would read an x86
    host's CPU topology and crash under emulation) and a clean environment (the host's PIP_* settings must not
    leak in)."""

    def __init__(self, release: str, build: Path, logfile: Path) -> None:
        self.release, self.build, self.logfile = release, build, logfile
        self.root = build / f"{release}-run"
        self.mounts: list[Path] = []

    def __enter__(self) -> Chroot:
        unmount_under(self.root)  # left by an interrupted run
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
        self.mounts.clear()

    def run(self, cmd: list[str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return run_logged(["chroot", str(self.root), *cmd], self.logfile, timeout, shown=cmd)


def run_logged(argv: list[str], logfile: Path, timeout: float, shown: list[str] | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run with a clean environment; command, output and exit code go to the log (a timeout is exit 124)."""
    env = env or {"PATH": CHROOT_PATH, "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive",
                  "TERM": "dumb"}
    with logfile.open("a") as logf:
        logf.write(f"\n$ {' '.join(shown or argv)}\n")
        logf.flush()
        try:
            proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
            logf.write(out + f"\n[timed out after {timeout:.0f} s]\n")
            return subprocess.CompletedProcess(argv, 124, out, f"timed out after {timeout:.0f} s")
        logf.write(proc.stdout + proc.stderr + f"[exit {proc.returncode}]\n")
    return proc
