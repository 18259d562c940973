"""``make demo`` keeps the door online until it is stopped, then stops cleanly (a real Mosquitto, the real script)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support import ROOT
from support.broker import Collector, Mosquitto

from tools.wait import wait_for

TOPIC = "facegate/demo-door"


def children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return kids


def test_demo_stays_online_until_ctrl_c(tmp_path: Path, broker: Mosquitto) -> None:
    with Collector(broker, f"{TOPIC}/#") as seen:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tools" / "demo.py"), "--port", str(broker.port), "--dir", str(tmp_path)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONFAULTHANDLER": "1"})  # a hang is reported with every thread's stack
        try:
            seen.wait_for(lambda m: any(x.topic == f"{TOPIC}/availability" and x.text == "online" for x in m),
                          timeout=120)
            online_at = time.monotonic()
            # One pass of the scenes is 49 frames at 10 fps (~5 s); well past that the door must still be up.
            assert wait_for(lambda: time.monotonic() - online_at > 9 or proc.poll() is not None, timeout=15)
            assert proc.poll() is None, "the demo ended by itself"
            availability = [x.text for x in seen.on(f"{TOPIC}/availability")]
            assert availability[-1] == "online"
            decisions = [json.loads(x.payload)["type"] for x in seen.on(f"{TOPIC}/events")]
            assert "access_granted" in decisions and "unknown_face" in decisions
            proc.send_signal(signal.SIGINT)  # Ctrl-C
            try:
                out, _ = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                for kid in children(proc.pid):  # the service: faulthandler prints every thread's stack
                    os.kill(kid, signal.SIGABRT)
                proc.kill()
                out, _ = proc.communicate(timeout=30)
                head, tail = out[:3000], out[-8000:]
                raise AssertionError(f"the demo did not stop within 60 s of Ctrl-C:\n{head}\n...\n{tail}") from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
        assert proc.returncode == 0, out
        seen.wait_for(lambda m: [x.text for x in seen.on(f"{TOPIC}/availability")][-1] == "offline", timeout=10)
    assert "press Ctrl-C to stop" in out and "demo: stopped (exit 0)" in out
    assert "service_stopped" in out


def test_demo_once_ends_by_itself(tmp_path: Path) -> None:
    """The bounded form for scripts: no broker needed, the scenes play once and the demo exits 0."""
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py"), "--once", "--port", "1",
                           "--dir", str(tmp_path)], capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "playing the scenes once" in proc.stdout and "access_granted" in proc.stdout


def test_demo_extra_config_reaches_the_service(tmp_path: Path) -> None:
    """--extra-config (tools/checks/check_ha_live.py's code mode) is appended to the door's config and loaded by it:
    a bad key there stops the service at start, naming the key."""
    extra = tmp_path / "extra.toml"
    extra.write_text('[commands]\nhome_assistant_codes = ["not-a-hash"]\n')
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py"), "--once", "--port", "1",
                           "--dir", str(tmp_path / "demo"), "--extra-config", str(extra)],
                          capture_output=True, text=True, timeout=180, check=False)
    assert 'home_assistant_codes = ["not-a-hash"]' in (tmp_path / "demo" / "facegate.toml").read_text()
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "home_assistant_codes" in proc.stdout + proc.stderr


def test_bench_door_from_the_readme(tmp_path: Path) -> None:
    """The README's bench door, as a newcomer follows it: the scene written to a folder that is not wiped, the
    astronaut enrolled with the CLI, and the README's own minimal config run: she is granted, the stranger not."""
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "keep.txt").write_text("mine")
    facegate = str(Path(sys.executable).with_name("facegate"))
    written = subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py"), "--write-scene", str(bench)],
                             capture_output=True, text=True, timeout=180, check=False)
    assert written.returncode == 0, written.stdout + written.stderr
    assert (bench / "keep.txt").read_text() == "mine", "--write-scene must not wipe the folder"
    assert len(list((bench / "frames").glob("*.jpg"))) == 50 and (bench / "astronaut.png").is_file()
    assert "mkdir -p ~/bench/state" in (ROOT / "README.md").read_text(encoding="utf-8")
    (bench / "state").mkdir()
    enrolled = subprocess.run([facegate, "enroll", "--gallery", str(bench / "state" / "gallery.db"), "--id",
                               "astronaut", "--name", "Eileen Collins", str(bench / "astronaut.png")],
                              capture_output=True, text=True, timeout=120, check=False)
    assert enrolled.returncode == 0, enrolled.stderr

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## A bench door without a Pi", 1)[1]
    toml = section.split("```toml\n", 1)[1].split("```", 1)[0]
    assert 'pin_factory = "mock"' in toml and "contact_pin =" not in toml
    (bench / "facegate.toml").write_text(toml.replace("/home/me/bench", str(bench)).replace("loop = true",
                                                                                           "loop = false"))
    run = subprocess.run([facegate, "run", "--config", str(bench / "facegate.toml")],
                         capture_output=True, text=True, timeout=180, check=False)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    events = [json.loads(line)["event"] for line in run.stdout.splitlines() if '"event"' in line]
    types = [e["type"] for e in events]
    assert any(e["type"] == "access_granted" and e["person_id"] == "astronaut" for e in events), types
    assert "unknown_face" in types and "door_unlocked" in types
