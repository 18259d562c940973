#!/usr/bin/env python3
"""Soak: the real door service for a long time under faults, with figures (issue 13). A benchmark, not a test.

The real ``Service`` runs in this process on a looped 30 fps replay (each 12 s loop: the enrolled astronaut
walks up, leaves, a stranger walks up, leaves) against a gallery of ``--persons`` random people plus the
astronaut, synced from an admin gallery as a signed full bundle. A real Mosquitto, started here on a free
loopback port (persistence on, as a site broker runs), is stopped and restarted every
``--broker-restart-minutes``; signed and bogus commands arrive every ``--command-seconds``; a signed gallery
delta (one more person, enrolled, exported and published by child processes as an admin would) is published
every ``--delta-minutes``. A collector with a persistent session counts
every event on ``facegate/soak/events``. Every ``--sample-seconds`` it samples RSS, open fds, threads, outbox
size, frame rate and decision latency (first frame of the visit → relay on).

Pass (printed and in the JSON): RSS growth over the last 80% of the run ≤ 5%, no growth in fds or threads,
every stored event delivered (deduplicated by event_id: none missing, no id delivered with two contents),
every replayed visit decided (a grant and an unknown_face per loop), no bogus command accepted.

    python tools/checks/soak.py --minutes 60 --out reports/soak            # the default run: 60 min
    python tools/checks/soak.py --minutes 15 --broker-restart-minutes 2    # shorter

``--console`` turns the service's own web console on (loopback, plain HTTP, a free port), creates an admin
account in the soak's state dir, and a client signs in (POST /api/login) and streams ``/api/live.mjpg`` and
``/api/events`` for the whole run, signing in again and reconnecting after any drop; frames, events, longest
silence per stream and errors go into the report's ``console`` field (and one more pass criterion: both
streams flowed, no silence over ``--console-max-gap-seconds``). ``--console-url URL`` is the older generic hook:
it streams any URL without signing in and counts bytes (``console.url_hook``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]
import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from facegate.camera.replay import ReplaySource
from facegate.camera.source import Frame
from facegate.config import parse_config
from facegate.events.commands import sign_command
from facegate.gallery.store import Gallery, NewTemplate
from facegate.service import Service
from facegate.sync.apply import apply_bundle
from facegate.sync.bundle import verify_bundle
from facegate.sync.export import export_bundle
from facegate.sync.keys import generate_keypair, key_id, public_key_b64
from facegate.vision.pipeline import FacePipeline
from facegate.web.accounts import UserStore
from gpiozero.pins.mock import MockFactory

from tools import ROOT
from tools.demo import augment, in_scene, shipped_photos
from tools.galleryfill import add_random_persons
from tools.net import free_port

DEVICE = "soak"
HMAC_KEY = os.urandom(32)
SYNC_TOPIC = "facegate/sync/soak"
# One loop of the replay, in frames at 30 fps (12 s of file time, longer than the 10 s cooldown).
PLAN = [("bg", 45), ("astro", 30), ("bg", 45), ("hopper", 30), ("bg", 210)]
LOOP_FRAMES = sum(n for _, n in PLAN)


# ------------------------------------------------------------------ the broker


class Broker:
    """A Mosquitto of our own on loopback, with persistence (a restart keeps sessions and retained messages)."""

    def __init__(self, work: Path) -> None:
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.port = free_port()
        self.dir = work / "broker"
        self.dir.mkdir()
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                             f"persistence_location {self.dir}/\nautosave_interval 30\n"
                             "max_queued_messages 100000\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def start(self) -> None:
        log = (self.dir / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)  # mosquitto saves its persistence file on SIGTERM
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    @property
    def up(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


# ------------------------------------------------------------------ the event collector (a dashboard)


class Collector:
    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.events: dict[str, list[str]] = {}  # event_id -> payloads received (to dedupe and compare)
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="soak-collector", clean_session=False,
                                  protocol=paho.MQTTv311)
        self.client.on_connect = lambda c, *_a: c.subscribe(f"facegate/{DEVICE}/events", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 2)
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        text = msg.payload.decode("utf-8", "replace")
        try:
            event_id = json.loads(text)["event_id"]
        except (ValueError, KeyError, TypeError):
            return
        with self.lock:
            self.events.setdefault(event_id, []).append(text)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# ------------------------------------------------------------------ the console hook


class ConsoleStream:
    """HOOK for the web console (another developer's work): streams ``url`` and counts what arrives.

    It depends on nothing of the console's code: any HTTP endpoint that streams (MJPEG, SSE, chunked JSON) works.
    """

    def __init__(self, url: str, stop: threading.Event) -> None:
        self.url, self.stop = url, stop
        self.bytes = 0
        self.connects = 0
        self.errors: Counter[str] = Counter()
        self.thread = threading.Thread(target=self._run, name="soak-console", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=10) as response:
                    self.connects += 1
                    while not self.stop.is_set() and (chunk := response.read(65536)):
                        self.bytes += len(chunk)
            except Exception as exc:  # any failure is a figure for the report, never the end of the soak
                self.errors[type(exc).__name__] += 1
            self.stop.wait(2.0)

    def report(self) -> dict[str, Any]:
        return {"url": self.url, "bytes": self.bytes, "connects": self.connects, "errors": dict(self.errors)}


class ConsoleClient:
    """A signed-in console user (``--console``): streams ``/api/live.mjpg`` and ``/api/events`` for the whole run.

    Each stream has its own thread and connection, counts whole JPEG frames (checked SOI/EOI) and SSE events
    (``data:`` lines; their event_ids are kept to compare with what the outbox stored), reconnects after any
    drop and signs in again when the server answers 401 (session expired, or lost). The longest silence on each
    stream is a figure: the run's console criterion is that both streams kept flowing.
    """

    def __init__(self, port: int, user: str, password: str, stop: threading.Event) -> None:
        self.port, self.user, self.password, self.stop = port, user, password, stop
        self.cookie: str | None = None
        self.cookie_lock = threading.Lock()
        self.logins = 0
        self.live: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.event_ids: set[str] = set()
        self.longest_gap: dict[str, float] = {"live": 0.0, "events": 0.0}
        self.threads = [threading.Thread(target=self._loop, args=(name, reader), name=f"soak-console-{name}",
                                         daemon=True)
                        for name, reader in [("live", self._read_mjpeg), ("events", self._read_sse)]]
        for thread in self.threads:
            thread.start()

    def _connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def _login(self) -> str:
        """POST /api/login with JSON, as the console's page does; returns the session cookie."""
        conn = self._connection()
        try:
            conn.request("POST", "/api/login", json.dumps({"user": self.user, "password": self.password}),
                         {"Content-Type": "application/json"})
            res = conn.getresponse()
            res.read()
            if res.status != 200:
                raise RuntimeError(f"login answered {res.status}")
            self.logins += 1
            return (res.getheader("Set-Cookie") or "").split(";")[0]
        finally:
            conn.close()

    def _loop(self, name: str, reader: Any) -> None:
        path = {"live": "/api/live.mjpg", "events": "/api/events"}[name]
        last: float | None = None  # the first item starts the clock (model loading is not a gap)
        while not self.stop.is_set():
            try:
                with self.cookie_lock:
                    if self.cookie is None:
                        self.cookie = self._login()
                    cookie = self.cookie
                conn = self._connection()
                try:
                    conn.request("GET", path, headers={"Cookie": cookie})
                    res = conn.getresponse()
                    if res.status == 401:
                        with self.cookie_lock:
                            if self.cookie == cookie:
                                self.cookie = None
                        self.errors[f"{name}_401"] += 1
                        continue
                    if res.status != 200:
                        raise RuntimeError(f"{path} answered {res.status}")
                    counts = self.live if name == "live" else self.events
                    counts["connects"] += 1
                    for _ in reader(res):
                        now = time.monotonic()
                        if last is not None:
                            self.longest_gap[name] = max(self.longest_gap[name], now - last)
                        last = now
                        if self.stop.is_set():
                            break
                finally:
                    conn.close()
            except Exception as exc:  # any failure is a figure for the report, never the end of the soak
                self.errors[f"{name}_{type(exc).__name__}"] += 1
            self.stop.wait(1.0)

    def _read_mjpeg(self, res: http.client.HTTPResponse) -> Iterator[None]:
        while line := res.readline():
            if line.strip() != b"--frame":
                continue
            length = 0
            while (header := res.readline().strip()) and header:
                key, _, value = header.partition(b":")
                if key.strip().lower() == b"content-length":
                    length = int(value)
            jpeg = res.read(length)
            whole = len(jpeg) == length > 0 and jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
            self.live["frames" if whole else "bad_frames"] += 1
            self.live["bytes"] += len(jpeg)
            yield None

    def _read_sse(self, res: http.client.HTTPResponse) -> Iterator[None]:
        while line := res.readline():
            if line.startswith(b": "):
                self.events["keepalives"] += 1
                yield None
            elif line.startswith(b"data: "):
                try:
                    event = json.loads(line[6:])
                    self.event_ids.add(str(event["event_id"]))
                    self.events["received"] += 1
                except (ValueError, KeyError, TypeError):
                    self.events["unparsable"] += 1
                yield None

    def report(self, stored: dict[str, str]) -> dict[str, Any]:
        """``stored``: event_id -> type of every event the outbox accepted (SSE has no replay: events before
        the stream connected, or while it was reconnecting, are not seen there, and that is no loss)."""
        unseen = Counter(kind for event_id, kind in stored.items() if event_id not in self.event_ids)
        return {"port": self.port, "logins": self.logins, "live": dict(self.live), "events": dict(self.events),
                "stored_events": len(stored), "stored_events_seen_on_sse": len(stored) - unseen.total(),
                "stored_not_seen_on_sse_by_type": dict(unseen),
                "longest_gap_seconds": {k: round(v, 1) for k, v in self.longest_gap.items()},
                "errors": dict(self.errors)}


# ------------------------------------------------------------------ the replay and galleries


class TimedSource(ReplaySource):
    """The looped replay, remembering when (wall, perf_counter) each frame name was last handed over."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delivered: dict[str, float] = {}
        self.frames = 0

    def read(self) -> Frame | None:
        frame = super().read()
        self.frames = self._index
        if frame is not None and frame.name:
            self.delivered[frame.name] = time.perf_counter()
        return frame


def build_frames(folder: Path) -> str:
    """The loop's frames; returns the name of the astronaut's first frame (where latency starts)."""
    import cv2

    astronaut, hopper, background = shipped_photos()
    folder.mkdir(parents=True)
    n, first_face = 0, ""
    for what, count in PLAN:
        for i in range(count):
            if what == "bg":
                frame = background
            else:
                photo = astronaut if what == "astro" else hopper
                frame = in_scene(augment(photo, 2 - 0.1 * i, 0.9, False), background, 480 + 3 * i, 80, 0)
                if what == "astro" and i == 0:
                    first_face = f"{n:04d}.jpg"
            cv2.imwrite(str(folder / f"{n:04d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            n += 1
    return first_face


def build_galleries(work: Path, persons: int, key: Ed25519PrivateKey) -> tuple[Path, Path, str, int]:
    """Admin gallery (astronaut + random persons) and the door's, made from the admin's signed full bundle."""
    pipeline = FacePipeline.from_models_dir()
    astronaut = shipped_photos()[0]
    best = pipeline.process(astronaut, largest_only=True)[0]
    admin = work / "admin.db"
    with Gallery(admin) as g:
        g.enroll("astronaut", [NewTemplate(best.embedding, {})], pipeline.embedder_sha256, name="Eileen Collins")
        add_random_persons(g, persons, pipeline.embedder_sha256, pipeline.embedder.dim)
        full = export_bundle(g, key)
    public = key.public_key()
    door = work / "state" / "gallery.db"
    door.parent.mkdir(parents=True)
    with Gallery(door) as d:
        apply_bundle(d, verify_bundle(full.data, {key_id(public): public}, 1 << 30), pipeline.embedder_sha256)
    return admin, door, pipeline.embedder_sha256, full.version


def publish_delta(work: Path, admin_db: Path, embedder: str, base: int, port: int, n: int) -> int:
    """The admin side, in child processes (so its memory is not in the door's figures): enrol one more
    person, export a signed delta against ``base`` and publish it; returns the new version."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "device")}
    enrol = ("import sys, numpy as np; from facegate.gallery.store import Gallery, NewTemplate; "
             "from facegate.vision.embedder import l2_normalise; "
             "v = l2_normalise(np.random.default_rng(int(sys.argv[3])).normal(size=(1, 192)).astype(np.float32))[0]; "
             "g = Gallery(sys.argv[1]); g.enroll(f'new{sys.argv[3]}', [NewTemplate(v, {})], sys.argv[2]); g.close()")
    subprocess.run([sys.executable, "-c", enrol, str(admin_db), embedder, str(n)], env=env, check=True,
                   capture_output=True, text=True)
    out = work / "delta.bundle"
    cli = [sys.executable, "-m", "facegate.cli", "gallery"]
    done = subprocess.run([*cli, "export", "--gallery", str(admin_db), "--key", str(work / "admin.key"), "--out",
                           str(out), "--base", str(base)], env=env, check=True, capture_output=True, text=True)
    version = int(json.loads(done.stdout)["version"])
    subprocess.run([*cli, "publish", str(out), "--host", "127.0.0.1", "--port", str(port), "--topic", SYNC_TOPIC],
                   env=env, check=True, capture_output=True, text=True, timeout=120)
    return version


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def os_threads() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


# ------------------------------------------------------------------ the run


def bogus_commands(rng: random.Random) -> list[tuple[bytes, bool]]:
    """(payload, retained) pairs an attacker or a broken client sends."""
    good = sign_command("unlock", DEVICE, hmac_key=HMAC_KEY)
    forged = dict(sign_command("unlock", DEVICE, hmac_key=os.urandom(32)))
    other_door = sign_command("unlock", "another-door", hmac_key=HMAC_KEY)
    stale = sign_command("unlock", DEVICE, hmac_key=HMAC_KEY, ts=int(time.time()) - 3600)
    return [
        (json.dumps(forged).encode(), False),
        (json.dumps(other_door).encode(), False),
        (json.dumps(stale).encode(), False),
        (json.dumps(good).encode(), True),  # genuine but retained: never obeyed
        (b"UNLOCK", False),
        (bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 3000))), False),
        (b"[" * 5000, False),
    ]


def trend(samples: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Value at the 20% mark (median of the samples around it) vs the end (median of the last 10%)."""
    values = [s[key] for s in samples]
    if len(values) < 5:
        return {"start": values[0] if values else None, "end": values[-1] if values else None, "growth": None}
    at = max(1, len(values) // 5)
    window = max(1, len(values) // 10)
    start = statistics.median(values[max(0, at - window // 2): at + window // 2 + 1])
    end = statistics.median(values[-window:])
    return {"start": start, "end": end, "growth": (end - start) / start if start else None,
            "min": min(values[at:]), "max": max(values[at:])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--persons", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=2, help="models.threads")
    ap.add_argument("--broker-restart-minutes", type=float, default=3.0)
    ap.add_argument("--broker-down-seconds", type=float, default=8.0)
    ap.add_argument("--delta-minutes", type=float, default=10.0)
    ap.add_argument("--command-seconds", type=float, default=20.0)
    ap.add_argument("--sample-seconds", type=float, default=10.0)
    ap.add_argument("--drain-seconds", type=float, default=120.0, help="after the run: time allowed to deliver")
    ap.add_argument("--console-url", default=None,
                    help="HOOK: stream the web console's live view from this URL during the run (optional)")
    ap.add_argument("--console", action="store_true",
                    help="turn the service's web console on (loopback, plain HTTP), sign in as an admin and stream "
                         "the live view and the event stream for the whole run")
    ap.add_argument("--console-max-gap-seconds", type=float, default=30.0,
                    help="--console passes if neither stream was silent longer than this")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "soak")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="facegate-soak-"))
    sync_key = generate_keypair(work / "admin.key", work / "admin.pub")
    public_b64 = public_key_b64(sync_key.public_key())
    print(f"soak: building frames and a {args.persons}-person gallery in {work}", file=sys.stderr)
    first_face = build_frames(work / "frames")
    admin_db, door_db, embedder, version = build_galleries(work, args.persons, sync_key)
    broker = Broker(work)
    broker.start()
    collector = Collector(broker.port)
    web_port = free_port()
    config = parse_config({
        "device_id": DEVICE, "state_dir": str(work / "state"),
        "camera": {"source": f"replay:{work / 'frames'}", "fps": args.fps, "loop": True},
        "gallery": {"path": str(door_db)}, "models": {"threads": args.threads},
        "door": {"relay_pin": 17, "unlock_seconds": 2},
        "mqtt": {"host": "127.0.0.1", "port": broker.port},
        "outbox": {"flush_timeout_seconds": 30},
        "commands": {"hmac_key": HMAC_KEY.hex()},
        "sync": {"public_keys": [public_b64], "topic": SYNC_TOPIC},
        "liveness": {"enabled": False},  # the visitors are photographs pasted into frames
        "web": {"enabled": args.console, "port": web_port},
    })
    console_password = secrets.token_urlsafe(18)
    if args.console:
        UserStore(config.state_dir).add("soak-admin", "admin", console_password)
    source = TimedSource(work / "frames", args.fps, loop=True)
    service = Service(config, source=source, pin_factory=MockFactory())

    stored: dict[str, str] = {}  # every event the outbox accepted: event_id -> type
    decided: dict[int, Counter[str]] = {}  # loop number -> decision events in it
    latencies: list[float] = []
    accepted_nonces: list[str] = []
    signed_nonces: set[str] = set()
    lock = threading.Lock()

    def on_event(event: dict[str, Any]) -> None:
        with lock:
            stored[event["event_id"]] = event["type"]
            if event["type"] in ("access_granted", "unknown_face", "access_denied"):
                loop = (source.frames - 1) // LOOP_FRAMES
                decided.setdefault(loop, Counter())[event["type"]] += 1
            if event["type"] == "command_accepted":
                accepted_nonces.append(str(event.get("nonce")))
            if event["type"] == "access_granted" and first_face in source.delivered:
                latencies.append((time.perf_counter() - source.delivered[first_face]) * 1000)

    service.emitter.add_listener(on_event)
    runner = threading.Thread(target=service.run, name="soak-service")
    started = time.monotonic()
    runner.start()
    stop = threading.Event()
    hook = ConsoleStream(args.console_url, stop) if args.console_url else None
    client = ConsoleClient(web_port, "soak-admin", console_password, stop) if args.console else None

    samples: list[dict[str, Any]] = []
    commands = Counter[str]()
    deltas: list[dict[str, Any]] = []
    faults: list[dict[str, Any]] = []
    duration = args.minutes * 60
    next_sample = next_restart = next_command = next_delta = started
    next_restart += args.broker_restart_minutes * 60
    next_delta += args.delta_minutes * 60
    next_command += args.command_seconds
    publisher = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="soak-commands", protocol=paho.MQTTv5)
    publisher.connect_async("127.0.0.1", broker.port)
    publisher.reconnect_delay_set(0.2, 2)
    publisher.loop_start()
    last_latency_count = 0
    try:
        while (now := time.monotonic()) - started < duration and runner.is_alive():
            if now >= next_sample:
                next_sample += args.sample_seconds
                with lock:
                    new = latencies[last_latency_count:]
                    last_latency_count = len(latencies)
                samples.append({
                    "t": round(now - started, 1), "rss_mb": round(rss_bytes() / 2**20, 1),
                    "fds": len(os.listdir("/proc/self/fd")), "threads": os_threads(),
                    "python_threads": threading.active_count(), "outbox": len(service.outbox),
                    "fps": round(service.stats.fps, 2), "frames": service.stats.frames, "broker_up": broker.up,
                    "latency_ms": round(statistics.median(new), 1) if new else None,
                    "load1": round(os.getloadavg()[0], 2),  # the machine's, to say how shared the CPU was
                })
                print(f"soak: {samples[-1]}", file=sys.stderr, flush=True)
            if now >= next_restart:
                next_restart += args.broker_restart_minutes * 60
                broker.stop()
                down = time.monotonic()
                time.sleep(args.broker_down_seconds)
                broker.start()
                broker.restarts += 1
                faults.append({"t": round(down - started, 1), "fault": "broker_restart",
                               "down_seconds": round(time.monotonic() - down, 1)})
            if now >= next_command and broker.up:
                next_command += args.command_seconds
                signed = sign_command("unlock", DEVICE, hmac_key=HMAC_KEY)
                with lock:
                    signed_nonces.add(signed["nonce"])
                publisher.publish(f"facegate/{DEVICE}/lock/set", json.dumps(signed), qos=1)
                commands["signed_sent"] += 1
                for payload, retained in bogus_commands(rng):
                    publisher.publish(f"facegate/{DEVICE}/lock/set", payload, qos=1, retain=retained)
                    commands["bogus_sent"] += 1
                publisher.publish(f"facegate/{DEVICE}/lock/set", b"", qos=1, retain=True)  # clear the retained one
            if now >= next_delta and broker.up:
                next_delta += args.delta_minutes * 60
                try:
                    new_version = publish_delta(work, admin_db, embedder, version, broker.port, len(deltas))
                    deltas.append({"t": round(now - started, 1), "version": new_version, "base": version})
                    version = new_version
                except subprocess.CalledProcessError as exc:
                    deltas.append({"t": round(now - started, 1), "error": (exc.stderr or "")[-300:]})
            time.sleep(0.2)
    finally:
        stop.set()
        service.stop_event.set()
        runner.join(120)
        publisher.loop_stop()
    ran = time.monotonic() - started
    if not broker.up:
        broker.start()
    deadline = time.monotonic() + args.drain_seconds
    while time.monotonic() < deadline:
        with collector.lock, lock:
            if set(stored) <= set(collector.events):
                break
        time.sleep(0.5)
    with collector.lock, lock:
        delivered = dict(collector.events)
        missing = sorted(set(stored) - set(delivered))
        twice = sum(1 for v in delivered.values() if len(v) > 1)
        conflicting = sum(1 for v in delivered.values() if len(set(v)) > 1)
        kinds = Counter(stored.values())
    collector.close()
    broker.stop()
    undecided = [loop for loop in range(source.frames // LOOP_FRAMES)
                 if decided.get(loop, Counter())["access_granted"] < 1 or decided.get(loop, Counter())[
                     "unknown_face"] < 1]
    rss, fds, threads = trend(samples, "rss_mb"), trend(samples, "fds"), trend(samples, "threads")
    accepted = kinds["command_accepted"]
    forged_accepted = [n for n in accepted_nonces if n not in signed_nonces]
    verdict = {
        "rss_growth_last_80pct_le_5pct": rss["growth"] is not None and rss["growth"] <= 0.05,
        "no_fd_growth": fds["end"] is not None and fds["end"] <= fds["start"],
        "no_thread_growth": threads["end"] is not None and threads["end"] <= threads["start"],
        "every_event_delivered": not missing and conflicting == 0,
        "every_visit_decided": not undecided,
        "no_bogus_command_accepted": not forged_accepted,
    }
    console: dict[str, Any] | None = None
    if client is not None:
        console = client.report(stored)
        gaps = console["longest_gap_seconds"]
        verdict["console_streamed_whole_run"] = (console["live"].get("frames", 0) > 0
                                                 and console["events"].get("received", 0) > 0
                                                 and max(gaps.values()) <= args.console_max_gap_seconds)
    if hook is not None:
        console = {**(console or {}), "url_hook": hook.report()}
    report = {
        "machine": f"{os.cpu_count()}-core x86 VM shared with other jobs (figures are under that load)",
        "load1": trend(samples, "load1"),
        "minutes": round(ran / 60, 1), "fps_target": args.fps, "persons": args.persons + 1,
        "broker": {"restarts": broker.restarts, "restart_every_minutes": args.broker_restart_minutes},
        "events": {"stored": len(stored), "delivered_unique": len(set(stored) & set(delivered)),
                   "missing": len(missing), "delivered_more_than_once": twice, "conflicting_duplicates": conflicting,
                   "by_type": dict(kinds)},
        "visits": {"loops_completed": source.frames // LOOP_FRAMES, "undecided_loops": undecided[:20],
                   "loops_with_decisions": len(decided)},
        "commands": {**commands, "accepted": accepted, "accepted_not_signed_by_us": len(forged_accepted),
                     "rejected_events": kinds["command_rejected"]},
        "gallery_deltas": {"published": deltas, "applied_events": kinds["gallery_updated"]},
        "frames": service.stats.frames, "trend": {"rss_mb": rss, "fds": fds, "threads": threads},
        "latency_ms": {"median": round(statistics.median(latencies), 1) if latencies else None,
                       "p95": round(float(np.percentile(latencies, 95)), 1) if latencies else None,
                       "max": round(max(latencies), 1) if latencies else None, "count": len(latencies)},
        "faults": faults, "console": console,
        "pass": verdict, "passed": all(verdict.values()), "samples": samples,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    (args.out / "soak.json").write_text(json.dumps(report, indent=1))
    plot(samples, args.out / "soak.png", report)
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0 if report["passed"] else 1


def plot(samples: list[dict[str, Any]], path: Path, report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] / 60 for s in samples]
    fig, axes = plt.subplots(3, 2, figsize=(11, 8), sharex=True)
    for ax, key, label in zip(axes.flat, ["rss_mb", "fds", "threads", "outbox", "fps", "latency_ms"],
                              ["RSS (MB)", "open fds", "threads", "outbox pending", "frames/s",
                               "decision latency (ms)"], strict=True):
        ax.plot(t, [s[key] if s[key] is not None else float("nan") for s in samples], lw=1)
        ax.set_ylabel(label)
        for f in report["faults"]:
            ax.axvline(f["t"] / 60, color="red", alpha=0.2, lw=0.8)
    for ax in axes[-1]:
        ax.set_xlabel("minutes (red: broker restarts)")
    fig.suptitle(f"facegate soak: {report['minutes']} min, {report['persons']} persons, "
                 f"pass={report['passed']}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    sys.exit(main())
