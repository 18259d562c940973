#!/usr/bin/env python3
"""Fleet sync at scale on one machine: N door processes on one Mosquitto converge on a K-person gallery.

Each door is a real ``facegate run`` (replay camera looping an empty scene and scikit-image's astronaut,
``door.pin_factory = "mock"``, ``[sync] topic``) with an empty gallery. The admin side builds a gallery of
one real person (the astronaut, from the shipped photo) and K-1 random unit vectors (dim 192), signs a full
bundle and publishes it; right after the publish the broker is restarted (SIGTERM, so its persistence file
keeps the retained bundle), while doors are downloading. Then, optionally, a delta (about 1% of persons
added, 1% removed, a policy changed) is published. The tool reports the time from each publish to the last
door's ``gallery_updated`` for that version (event timestamps, taken on the doors), and waits until every
door has granted the astronaut on the new gallery.

Usage::

    .venv/bin/python tools/fleet_sim.py                       # 20 doors x 10,000 persons
    .venv/bin/python tools/fleet_sim.py --devices 3 --persons 200 --fps 10

Prints one JSON summary on stdout (progress on stderr). Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "device")]

import paho.mqtt.client as paho
from facegate.access.policy import AccessPolicy
from facegate.gallery.store import Gallery, NewTemplate
from facegate.sync.export import export_bundle
from facegate.sync.keys import generate_keypair, load_private_key, public_key_b64
from facegate.sync.mqtt import MqttTarget, publish_bundle
from facegate.vision.pipeline import FacePipeline
from paho.mqtt.enums import CallbackAPIVersion

from tools.demo import augment, in_scene, shipped_photos
from tools.mosquitto import Mosquitto
from tools.wait import wait_for

TOPIC = "facegate/fleet/gallery"
PERSON = "astronaut"


def log(message: str) -> None:
    print(f"[fleet_sim {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Broker(Mosquitto):
    """The private broker (tools/mosquitto.py) with persistence: retained bundles survive a restart, as they
    must on a production broker (without persistence a restart loses them and the admin must re-publish)."""

    def __init__(self) -> None:
        super().__init__(settings="persistence true\npersistence_location {dir}/\nmax_queued_messages 10000\n",
                         stop_timeout=10)  # a clean stop writes the persistence file
        # World-writable: started as root, mosquitto drops to its own user, which must be able to reach this
        # folder to save its persistence file (a 0700 folder would silently stop the save, and the retained
        # bundle would be lost in the restart).
        self.dir.chmod(0o777)


@dataclass
class Observer:
    """Records every door event (by device id) from the broker; reconnects after the broker restarts."""

    port: int
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        # A persistent session: the broker queues the doors' events for us while we reconnect after its restart
        # (a clean session would silently miss whatever a door delivered in that gap).
        self.client = paho.Client(CallbackAPIVersion.VERSION2, clean_session=False,
                                  client_id=f"fleet-sim-observer-{os.getpid()}-{time.time_ns()}")
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("facegate/+/events", qos=1)
        self.client.on_message = self._on_message

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            event = json.loads(msg.payload)
        except ValueError:
            return
        with self.lock:
            seen = self.events.setdefault(str(event.get("device_id")), [])
            if all(e.get("event_id") != event.get("event_id") for e in seen[-50:]):  # at-least-once: dedupe
                seen.append(event)

    def start(self) -> None:
        self.client.connect("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def of(self, device: str, type: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events.get(device, []) if e.get("type") == type]


def event_time(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["ts"]).replace("Z", "+00:00")).timestamp()


def write_frames(folder: Path, fps: float) -> None:
    """An empty scene longer than the 1 s track timeout, then the astronaut walking up, looped by the replay."""
    astronaut, _hopper, background = shipped_photos()
    folder.mkdir(parents=True, exist_ok=True)
    empty = max(4, int(fps * 1.3) + 1)
    frames = [background] * empty + [in_scene(augment(astronaut, 2 - 0.4 * i, 0.9, False), background,
                                               500 + 6 * i, 60, 0) for i in range(8)]
    for n, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{n:04d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))


def build_admin(path: Path, persons: int) -> tuple[Gallery, str]:
    pipeline = FacePipeline.from_models_dir()
    astronaut = shipped_photos()[0]
    templates = []
    for image in (astronaut, augment(astronaut, 4, 1.1, True, 0.9)):
        best = pipeline.process(image, largest_only=True)[0]
        assert best.embedding is not None
        templates.append(NewTemplate(best.embedding, best.quality.as_dict(), "astronaut"))
    gallery = Gallery(path)
    gallery.enroll(PERSON, templates, pipeline.embedder_sha256, name="Eileen Collins")
    add_random(gallery, persons - 1, 0, pipeline.embedder_sha256)
    return gallery, pipeline.embedder_sha256


def add_random(gallery: Gallery, n: int, start: int, embedder: str, seed: int = 0) -> None:
    """Random unit vectors (dim 192), one template each, in one transaction."""
    rng = np.random.default_rng(seed + start)
    vectors = rng.standard_normal((n, 192)).astype("<f4")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    now = time.time()
    ids = [f"person-{i:06d}" for i in range(start, start + n)]
    with gallery.transaction() as db:
        db.execute("INSERT OR IGNORE INTO meta VALUES ('embedder_sha256', ?)", (embedder,))
        db.executemany("INSERT INTO persons (id, name, metadata, created_at, updated_at) VALUES (?, ?, '{}', ?, ?)",
                       [(pid, f"Person {pid[7:]}", now, now) for pid in ids])
        db.executemany("INSERT INTO templates (person_id, embedding, embedder_sha256, quality, source, created_at) "
                       "VALUES (?, ?, ?, '{}', 'synthetic', ?)",
                       [(pid, vectors[i].tobytes(), embedder, now) for i, pid in enumerate(ids)])


def device_config(work: Path, device: str, frames: Path, port: int, public_key: str, fps: float) -> Path:
    state = work / "devices" / device
    state.mkdir(parents=True, exist_ok=True)
    path = state / "facegate.toml"
    path.write_text(f"""device_id = "{device}"
state_dir = "{state}"
log_level = "warning"
[camera]
source = "replay:{frames}"
fps = {fps}
loop = true
[models]
threads = 1
[recognition]
cooldown_seconds = 2
[door]
pin_factory = "mock"
relay_pin = 17
unlock_seconds = 1
[mqtt]
host = "127.0.0.1"
port = {port}
discovery = false
[outbox]
flush_timeout_seconds = 5
[liveness]
# The replayed "visitor" is a registry photo pasted into frames: a photograph, which liveness refuses.
enabled = false
[sync]
public_keys = ["{public_key}"]
topic = "{TOPIC}"
""")
    return path


def converge(observer: Observer, devices: list[str], version: int, since: float, timeout: float
             ) -> dict[str, Any]:
    """Wait until every device reported gallery_updated for ``version``; times are from the doors' events."""
    def done(device: str) -> dict[str, Any] | None:
        return next((e for e in observer.of(device, "gallery_updated") if e.get("version") == version), None)

    wait_for(lambda: all(done(d) for d in devices), timeout, f"{len(devices)} doors at version {version}", 0.1)
    updates = [done(d) for d in devices]
    times = [event_time(e) - since for e in updates if e is not None]
    applies = sorted(float(e["seconds"]) for e in updates if e is not None)
    rejected = sum(len(observer.of(d, "gallery_rejected")) for d in devices)
    return {"converged_seconds": round(max(times), 2), "first_door_seconds": round(min(times), 2),
            "apply_seconds_median": applies[len(applies) // 2], "apply_seconds_max": applies[-1],
            "rejections": rejected}


def run(devices: int = 20, persons: int = 10_000, *, fps: float = 8.0, chunk_bytes: int = 256 * 1024,
        restart: bool = True, delta: bool = True, work: Path | None = None, timeout: float = 600.0) -> dict[str, Any]:
    """Run the simulation and return the summary (also used by tests/tools/test_sync_fleet.py at a small scale)."""
    own_work = work is None
    work = Path(tempfile.mkdtemp(prefix="facegate-fleet-")) if work is None else work
    work.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"devices": devices, "persons": persons, "chunk_bytes": chunk_bytes}
    broker = Broker()
    procs: list[subprocess.Popen[bytes]] = []
    observer: Observer | None = None
    try:
        broker.start()
        observer = Observer(broker.port)
        observer.start()
        frames = work / "frames"
        write_frames(frames, fps)
        generate_keypair(work / "admin.key", work / "admin.pub", overwrite=True)
        key = load_private_key(work / "admin.key")
        public = public_key_b64(key.public_key())
        t = time.perf_counter()
        admin, embedder = build_admin(work / "admin.db", persons)
        log(f"admin gallery: {persons} persons in {time.perf_counter() - t:.1f} s")

        names = [f"fleet-{i:03d}" for i in range(devices)]
        exe = str(Path(sys.executable).with_name("facegate"))
        t = time.perf_counter()
        for name in names:
            config = device_config(work, name, frames, broker.port, public, fps)
            with (config.parent / "service.log").open("ab") as out:
                procs.append(subprocess.Popen([exe, "run", "--config", str(config)], stdout=out,
                                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        wait_for(lambda: all(observer.of(n, "service_started") for n in names), timeout, "doors to start", 0.1)
        summary["doors_started_seconds"] = round(time.perf_counter() - t, 1)
        log(f"{devices} doors running after {summary['doors_started_seconds']} s")

        t = time.perf_counter()
        full = export_bundle(admin, key)
        summary["full"] = {"bytes": len(full.data), "version": full.version,
                           "export_seconds": round(time.perf_counter() - t, 3)}
        target = MqttTarget("127.0.0.1", broker.port)
        published_at = time.time()
        t = time.perf_counter()
        info = publish_bundle(full.data, target, TOPIC, chunk_bytes=chunk_bytes)
        summary["full"].update(chunks=info["chunks"], publish_seconds=round(time.perf_counter() - t, 3))
        if restart:  # while the doors download the chunks
            broker.stop()
            summary["doors_done_before_restart"] = sum(
                1 for n in names if any(e.get("version") == full.version for e in observer.of(n, "gallery_updated")))
            time.sleep(1.0)
            broker.start()
            log(f"broker restarted ({summary['doors_done_before_restart']}/{devices} doors had the bundle)")
        summary["full"].update(converge(observer, names, full.version, published_at, timeout))
        log(f"full bundle v{full.version}: all doors in {summary['full']['converged_seconds']} s")

        final = full.version
        if delta:
            changed = max(1, persons // 100)
            ids = [p["id"] for p in admin.persons() if p["id"] != PERSON][:changed]
            for pid in ids:
                admin.remove(pid)
            add_random(admin, changed, persons, embedder, seed=1)
            with AccessPolicy(admin) as pol:
                pol.set_person(PERSON, groups=["staff"])
            t = time.perf_counter()
            d = export_bundle(admin, key, base=full.version)
            summary["delta"] = {"bytes": len(d.data), "version": d.version, "upserts": d.persons,
                                "deletes": d.deletes, "export_seconds": round(time.perf_counter() - t, 3)}
            published_at = time.time()
            publish_bundle(d.data, target, TOPIC, chunk_bytes=chunk_bytes)
            summary["delta"].update(converge(observer, names, d.version, published_at, timeout))
            log(f"delta v{d.version}: all doors in {summary['delta']['converged_seconds']} s")
            final = d.version

        def granted(name: str) -> bool:
            update = next(e for e in observer.of(name, "gallery_updated") if e.get("version") == final)
            return any(e.get("person_id") == PERSON and event_time(e) >= event_time(update)
                       for e in observer.of(name, "access_granted"))

        t = time.perf_counter()
        wait_for(lambda: all(granted(n) for n in names), timeout, "every door to grant the enrolled person", 0.1)
        summary["granted"] = devices
        summary["all_granted_seconds"] = round(time.perf_counter() - t, 1)
        log(f"every door granted '{PERSON}' on the new gallery")
        admin.close()
        return summary
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if observer is not None:
            observer.stop()
        broker.close()
        if own_work:
            shutil.rmtree(work, ignore_errors=True)


_APPLY_PROBE = """
import json, resource, sys, time

def status(key):  # this process's own figures: /proc is per address space, reset by exec
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return round(int(line.split()[1]) / 1024, 1)

from facegate.sync.apply import apply_file
from facegate.gallery.store import Gallery
imports = status("VmRSS")
t = time.perf_counter()
result = apply_file(sys.argv[1], sys.argv[2], [sys.argv[3]], sys.argv[4], 1 << 30)
verify_apply = time.perf_counter() - t
with Gallery(sys.argv[1]) as g:
    index = g.build_index()
total = time.perf_counter() - t
print(json.dumps({"verify_apply_seconds": round(verify_apply, 3), "with_index_seconds": round(total, 3),
                  "rss_after_imports_mib": imports, "peak_rss_mib": status("VmHWM"),
                  "ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "persons": result.persons}))
"""


def measure_bundle(persons: int) -> dict[str, Any]:
    """Size, export, publish and apply figures for a ``persons`` x 1 template (dim 192) full bundle.

    The apply runs in a fresh process; its peak is VmHWM (the address space's high-water mark). getrusage's
    ru_maxrss is printed too, but on Linux it keeps the parent's size across fork + exec, so in a child of
    this (large) process it over-reports: run the door-side probe from a small shell to compare.
    """
    work = Path(tempfile.mkdtemp(prefix="facegate-bundle-"))
    broker = Broker()
    try:
        embedder = "0" * 64
        admin = Gallery(work / "admin.db")
        add_random(admin, persons, 0, embedder)
        generate_keypair(work / "k", work / "k.pub", overwrite=True)
        key = load_private_key(work / "k")
        t = time.perf_counter()
        bundle = export_bundle(admin, key)
        export_seconds = time.perf_counter() - t
        (work / "b").write_bytes(bundle.data)
        broker.start()
        t = time.perf_counter()
        info = publish_bundle(bundle.data, MqttTarget("127.0.0.1", broker.port), TOPIC)
        publish_seconds = time.perf_counter() - t
        probe = subprocess.run([sys.executable, "-c", _APPLY_PROBE, str(work / "door.db"), str(work / "b"),
                                public_key_b64(key.public_key()), embedder], capture_output=True, text=True,
                               check=True)
        return {"persons": persons, "templates": bundle.templates, "bytes": len(bundle.data),
                "chunks": info["chunks"], "export_seconds": round(export_seconds, 3),
                "publish_seconds": round(publish_seconds, 3), "apply": json.loads(probe.stdout)}
    finally:
        broker.close()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--persons", type=int, default=10_000)
    parser.add_argument("--fps", type=float, default=8.0, help="replay frame rate of each door (CPU load)")
    parser.add_argument("--chunk-bytes", type=int, default=256 * 1024)
    parser.add_argument("--no-restart", action="store_true", help="do not restart the broker mid-transfer")
    parser.add_argument("--no-delta", action="store_true", help="only the full snapshot")
    parser.add_argument("--work", type=Path, default=None, help="keep the run's files here (default: temporary)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for each wait")
    parser.add_argument("--measure-bundle", action="store_true",
                        help="only measure one bundle of --persons: size, export, publish, apply, peak memory")
    args = parser.parse_args()
    if args.measure_bundle:
        print(json.dumps(measure_bundle(args.persons), indent=2))
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        summary = run(args.devices, args.persons, fps=args.fps, chunk_bytes=args.chunk_bytes,
                      restart=not args.no_restart, delta=not args.no_delta, work=args.work, timeout=args.timeout)
        print(json.dumps(summary, indent=2))
        return 0
    return 130


if __name__ == "__main__":
    sys.exit(main())
