#!/usr/bin/env python3
"""Attack replay: an independent attack test's findings, replayed against a running door on loopback.

Starts ``facegate run`` as a subprocess (temporary state dir, replayed camera of registry photos, gpiozero mock
pins, a private Mosquitto on a free loopback port, the web console on plain HTTP at 127.0.0.1, signed sync on a
topic, Home Assistant code mode), attacks it through its public interfaces only (HTTP, MQTT, the CLI, the files in
its state dir) and prints one row per attack: attack | expected | observed | PASS/FAIL/ERROR. Rows marked
``extra`` are attacks of this tool's own design, not from the attack test's report.

    python tools/checks/attack.py                    # everything (about 2-3 minutes on a 2-core machine)
    python tools/checks/attack.py --only csrf_origin # one attack (repeatable, comma-separated)
    python tools/checks/attack.py --list             # the attacks' names
    python tools/checks/attack.py --json report.json

Exit 0 only when every attack run passes. An attack whose interface differs from what it expects (a route,
an event, a CLI flag) is reported as ERROR with the reason; the others still run. Every listener and every
connection is on loopback (127.0.0.0/8); request counts and durations are bounded.

Faces: the master-face attack embeds one photo of each of the first people of ``../shared/faces/lfw_dev``
when it is there (at run time only: nothing is stored), else registry photos (scikit-image's astronaut,
matplotlib's Grace Hopper, augmented) topped up with random unit vectors.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import hashlib
import http.client
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]
from tools import ROOT
from tools.mosquitto import Mosquitto
from tools.net import free_port
from tools.wait import wait_for

DEVICE = "attack-door"
SYNC_TOPIC = "facegate/attack/sync"
ADMIN, ADMIN_PASSWORD = "admin", "attack admin password"
VIEWER, VIEWER_PASSWORD = "guard", "attack viewer password"
HA_CODE = "246810"
LFW = ROOT.parent / "shared" / "faces" / "lfw_dev"
BUNDLE_WAIT_SECONDS = 25.0


# ---------------------------------------------------------------------------------------------- small helpers


class AttackError(Exception):
    """The attack could not be carried out as designed (an interface differs): reported as ERROR."""


def facegate_bin() -> str:
    beside = Path(sys.executable).with_name("facegate")
    if beside.exists():
        return str(beside)
    found = shutil.which("facegate")
    if found is None:
        raise SystemExit("attack: the 'facegate' command was not found (run with the project's .venv python)")
    return found


def cli(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``facegate ARGS`` (the door's and the admin's documented command line)."""
    return subprocess.run([facegate_bin(), *args], input=stdin, capture_output=True, text=True, timeout=timeout)


def cli_ok(*args: str, stdin: str | None = None, timeout: float = 120) -> str:
    proc = cli(*args, stdin=stdin, timeout=timeout)
    if proc.returncode != 0:
        raise AttackError(f"facegate {' '.join(args[:3])} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return proc.stdout


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def write_toml(path: Path, doc: dict[str, Any]) -> None:
    lines = [f"{k} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for section, body in doc.items():
        if isinstance(body, dict):
            lines.append(f"\n[{section}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in body.items()]
    path.write_text("\n".join(lines) + "\n")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AttackError(f"no VmRSS for pid {pid}")


# ---------------------------------------------------------------------------------------------- the broker


class Broker(Mosquitto):
    """The private broker (tools/mosquitto.py) logging every PUBLISH it sends, so the chunk downloads of a door can
    be counted from outside the door."""

    def __init__(self) -> None:
        # stdout (the launcher's log file): mosquitto run as root writes its own log files as another user
        super().__init__(settings="persistence false\nlog_dest stdout\nlog_type all\n")

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def sent_chunks(self, since_offset: int, client: str) -> tuple[int, int]:
        """(messages, bytes) on ``.../chunk/N`` topics the broker sent to ``client`` since a log offset."""
        with self.log_path.open("rb") as fh:
            fh.seek(since_offset)
            text = fh.read().decode("utf-8", "replace")
        pattern = re.compile(rf"Sending PUBLISH to {re.escape(client)} \(.*'[^']*/chunk/\d+'.*\((\d+) bytes\)\)")
        found = [int(m.group(1)) for m in pattern.finditer(text)]
        return len(found), sum(found)

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        self.publish_many([(topic, payload.encode() if isinstance(payload, str) else payload, retain)])

    def publish_many(self, messages: list[tuple[str, bytes, bool]]) -> None:
        """QoS 1, each acknowledged by the broker before this returns."""
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"attack-publisher-{secrets.token_hex(4)}")
        client.connect("127.0.0.1", self.port, keepalive=10)
        client.loop_start()
        try:
            for info in [client.publish(t, p, qos=1, retain=r) for t, p, r in messages]:
                info.wait_for_publish(10)
        finally:
            client.disconnect()
            client.loop_stop()


class Watcher:
    """A subscriber to the door's topics: availability (is the door on MQTT?) and everything else, timestamped."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[float, str, bytes]] = []
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"attack-watcher-{os.getpid()}")
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = lambda c, *_: c.subscribe(f"facegate/{DEVICE}/#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((time.monotonic(), msg.topic, bytes(msg.payload)))

    def online_since(self, t: float) -> bool:
        with self._lock:
            return any(at >= t and topic.endswith("/availability") and payload == b"online"
                       for at, topic, payload in self.messages)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# ---------------------------------------------------------------------------------------------- the door


@dataclass
class LogLine:
    at: float
    text: str
    record: dict[str, Any] | None


class Door:
    """``facegate run --config FILE`` as a subprocess; its JSON log lines (events included) are kept."""

    def __init__(self, name: str, config_path: Path, config: dict[str, Any]) -> None:
        self.name, self.config_path, self.config = name, config_path, config
        self.state_dir = Path(config["state_dir"])
        self.port = int(config["web"]["port"])
        self.tls = "tls_cert_file" in config["web"]
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[LogLine] = []
        self._lock = threading.Lock()
        write_toml(config_path, config)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise AttackError(f"door {self.name} is not running")
        return self.proc.pid

    def start(self, watcher: Watcher | None = None, timeout: float = 90) -> None:
        started = time.monotonic()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([facegate_bin(), "run", "--config", str(self.config_path)], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     text=True, errors="replace")
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()

        def ready() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                raise AttackError(f"door {self.name} exited at start: {self.tail()}")
            try:
                status, _, _ = request(self, "GET", "/login", timeout=2)
            except OSError:
                return False
            return status == 200 and (watcher is None or watcher.online_since(started))

        if not wait_for(ready, timeout, interval=0.25, fail=False):
            raise AttackError(f"door {self.name} not ready after {timeout:.0f} s: {self.tail()}")
        if not self.wait_event(lambda e: e["type"] in ("access_granted", "unknown_face", "frame_rejected"),
                               since=started, timeout=timeout):
            raise AttackError(f"door {self.name}: no frame processed after {timeout:.0f} s")

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for text in proc.stdout:
            try:
                record = json.loads(text)
                if not isinstance(record, dict):
                    record = None
            except ValueError:
                record = None
            with self._lock:
                self.lines.append(LogLine(time.monotonic(), text.rstrip("\n"), record))
                with (self.config_path.parent / f"{self.name}.log").open("a", encoding="utf-8") as log:
                    log.write(text)  # kept with --keep: what the door said during the attacks

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def tail(self, n: int = 8) -> str:
        with self._lock:
            return " | ".join(line.text[:300] for line in self.lines[-n:])

    def events(self, since: float = 0.0) -> list[dict[str, Any]]:
        with self._lock:
            return [line.record["event"] for line in self.lines if line.at >= since and line.record
                    and isinstance(line.record.get("event"), dict)]

    def wait_event(self, predicate: Callable[[dict[str, Any]], bool], since: float,
                   timeout: float) -> dict[str, Any] | None:
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [e for e in self.events(since) if predicate(e)]
            return bool(found)

        wait_for(seen, timeout, interval=0.1, fail=False)
        return found[0] if found else None

    def tracebacks(self, since: float) -> list[str]:
        with self._lock:
            return [line.text[:200] for line in self.lines if line.at >= since and (
                "Traceback" in line.text or (line.record is not None and "exc" in line.record))]


def request(door: Door, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            source: str | None = None, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    conn = connection(door, source, timeout)
    try:
        conn.request(method, path, body, headers or {})
        res = conn.getresponse()
        return res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()
    finally:
        conn.close()


def connection(door: Door, source: str | None = None, timeout: float = 10) -> http.client.HTTPConnection:
    address = (source, 0) if source else None
    if door.tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return http.client.HTTPSConnection("127.0.0.1", door.port, timeout=timeout, source_address=address,
                                           context=context)
    return http.client.HTTPConnection("127.0.0.1", door.port, timeout=timeout, source_address=address)


class Session:
    """A console login: the session cookie and CSRF token, from one loopback source address."""

    def __init__(self, door: Door, source: str = "127.0.0.1") -> None:
        self.door, self.source = door, source
        self.cookie = ""
        self.csrf = ""

    def login(self, user: str, password: str) -> int:
        status, headers, body = request(self.door, "POST", "/api/login",
                                        json.dumps({"user": user, "password": password}).encode(),
                                        {"Content-Type": "application/json"}, self.source, timeout=30)
        if status == 200:
            self.cookie = headers.get("set-cookie", "").split(";")[0]
            self.csrf = json.loads(body)["csrf"]
        return status

    def get(self, path: str, timeout: float = 10) -> tuple[int, bytes]:
        status, _, body = request(self.door, "GET", path, None, {"Cookie": self.cookie}, self.source, timeout)
        return status, body

    def post(self, path: str, obj: Any = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        h = {"Cookie": self.cookie, "X-CSRF-Token": self.csrf, "Content-Type": "application/json",
             "Origin": f"http://127.0.0.1:{self.door.port}", "Host": f"127.0.0.1:{self.door.port}", **(headers or {})}
        status, _, body = request(self.door, "POST", path, json.dumps(obj or {}).encode(), h, self.source)
        return status, body


class Stream(threading.Thread):
    """A streaming GET (SSE or MJPEG) read on a raw socket until the server closes it."""

    def __init__(self, door: Door, path: str, cookie: str, source: str = "127.0.0.1") -> None:
        super().__init__(daemon=True)
        self.door, self.path, self.cookie, self.source = door, path, cookie, source
        self.status: int | None = None
        self.bytes = 0
        self.closed_at: float | None = None
        self.headers_seen = threading.Event()
        self.stop = threading.Event()
        self.sock: socket.socket | None = None

    def run(self) -> None:
        try:
            raw = socket.create_connection(("127.0.0.1", self.door.port), timeout=30, source_address=(self.source, 0))
            sock: socket.socket = raw
            if self.door.tls:
                context = ssl.create_default_context()
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
                sock = context.wrap_socket(raw)
            self.sock = sock
            sock.sendall(f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.door.port}\r\n"
                         f"Cookie: {self.cookie}\r\n\r\n".encode())
            sock.settimeout(0.5)
            head = b""
            while not self.stop.is_set():
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                if self.status is None:
                    head += data
                    if b"\r\n" in head:
                        with contextlib.suppress(ValueError, IndexError):
                            self.status = int(head.split(b" ", 2)[1])
                        self.headers_seen.set()
                self.bytes += len(data)
        except OSError:
            pass
        finally:
            self.closed_at = time.monotonic()
            self.headers_seen.set()
            if self.sock is not None:
                with contextlib.suppress(OSError):
                    self.sock.close()


# ---------------------------------------------------------------------------------------------- bundles


def key_id(public_raw: bytes) -> bytes:
    return hashlib.sha256(public_raw).digest()[:8]


def template_b64(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def person(pid: str, templates: list[str], name: str | None = None) -> dict[str, Any]:
    now = time.time()
    return {"id": pid, "name": name, "metadata": {}, "created_at": now, "updated_at": now, "card_number": None,
            "policy": None, "templates": [{"embedding": t, "quality": {}, "source": "attack", "created_at": now}
                                          for t in templates]}


def make_bundle(private_key: Any, version: int, embedder: str, persons: list[dict[str, Any]],
                dim: int | None = None) -> bytes:
    """A signed full bundle exactly as docs/sync.md lays it out, built here (not with facegate's own builder):
    these are the bytes a holder of the admin key (or a compromised admin machine) can sign."""
    from cryptography.hazmat.primitives import serialization

    raw = json.dumps({"persons": persons, "deletes": []}, separators=(",", ":")).encode()
    payload = zlib.compress(raw, 6)
    public = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    kid = key_id(public)
    sizes = {len(base64.b64decode(t["embedding"])) // 4 for p in persons for t in p["templates"]}
    header = {"format": "facegate-gallery-bundle", "format_version": 1, "compression": "zlib", "kind": "full",
              "version": version, "base_version": None,
              "created": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
              "embedder_sha256": embedder, "persons": len(persons), "deletes": 0,
              "templates": sum(len(p["templates"]) for p in persons),
              "dim": dim if dim is not None else (max(sizes) if sizes else 0),
              "payload_sha256": hashlib.sha256(payload).hexdigest(), "payload_bytes": len(raw), "key_id": kid.hex()}
    head = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    signed = struct.pack(">6sH8sIQ", b"FGSYNC", 1, kid, len(head), len(payload)) + head + payload
    return bytes(signed + private_key.sign(signed))


# ---------------------------------------------------------------------------------------------- the context


@dataclass
class Outcome:
    passed: bool
    observed: str
    details: dict[str, Any] = field(default_factory=dict)


class Context:
    """What the attacks share: the broker, the keys, the admin files and the door (each made on first use)."""

    def __init__(self, workdir: Path) -> None:
        self.work = workdir
        self.broker = Broker()
        self.broker.start()
        self.watcher = Watcher(self.broker.port)
        self.frames = workdir / "frames"
        self.photos = workdir / "photos"
        self._door: Door | None = None
        self._door_error: str | None = None
        self._tls_door: Door | None = None
        self._version = 100
        self._astro: dict[str, Any] | None = None
        self._faces: tuple[np.ndarray, str] | None = None
        self.face_images: list[Path] = []
        self._key: Any = None
        self.public_b64 = ""

    # ---- artefacts

    def scene(self) -> None:
        """The demo's replay (empty door, the enrolled astronaut, a corrupt frame, Grace Hopper as a stranger)
        and the photos enrolment and the attacks use."""
        if self.frames.exists():
            return
        import cv2

        from tools.demo import augment, build_frames, shipped_photos

        build_frames(self.frames)
        astronaut, hopper, _ = shipped_photos()
        self.photos.mkdir()
        for name, image in (("astronaut.png", astronaut), ("astronaut2.png", augment(astronaut, 4, 1.1, True, 0.9)),
                            ("hopper.png", hopper)):
            cv2.imwrite(str(self.photos / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))

    def key(self) -> Any:
        if self._key is None:
            from cryptography.hazmat.primitives import serialization

            private, public = self.work / "admin.key", self.work / "admin.pub"
            cli_ok("gallery", "keygen", "--private", str(private), "--public", str(public))
            self._key = serialization.load_pem_private_key(private.read_bytes(), None)
            self.public_b64 = public.read_text().strip()
        return self._key

    def next_version(self) -> int:
        self._version += 10
        return self._version

    # ---- the shared door

    def door(self) -> Door:
        if self._door is not None:
            return self._door
        if self._door_error is not None:
            raise AttackError(f"the door could not be set up: {self._door_error}")
        try:
            return self._make_door()
        except Exception as exc:
            self._door_error = f"{type(exc).__name__}: {exc}"
            raise

    def _make_door(self) -> Door:
        self.scene()
        self.key()
        state = self.work / "state"
        code_hash = json.loads(cli_ok("code", "hash", stdin=HA_CODE + "\n"))["hash"]
        config = {
            "device_id": DEVICE, "state_dir": str(state),
            "camera": {"source": f"replay:{self.frames}", "fps": 10, "loop": True},
            "door": {"pin_factory": "mock", "relay_pin": 17, "unlock_seconds": 0.5},
            "mqtt": {"host": "127.0.0.1", "port": self.broker.port},
            "outbox": {"flush_timeout_seconds": 2},
            "recognition": {"cooldown_seconds": 1},
            "liveness": {"enabled": False},  # the visitors are photographs pasted into frames
            "web": {"enabled": True, "port": free_port()},
            "sync": {"public_keys": [self.public_b64], "topic": SYNC_TOPIC},
            "commands": {"home_assistant_codes": [code_hash]},
        }
        # What systemd's StateDirectory= makes (mode 0755 by default); the files in it are the door's own.
        state.mkdir(mode=0o755)
        door = Door("main", self.work / "door.toml", config)
        # The door's own enrolment and accounts, made with the documented commands (under umask 022).
        cli_ok("enroll", "--gallery", str(state / "gallery.db"), "--id", "astronaut", "--name", "Eileen Collins",
               str(self.photos / "astronaut.png"), str(self.photos / "astronaut2.png"))
        for user, role, password in ((ADMIN, "admin", ADMIN_PASSWORD), (VIEWER, "viewer", VIEWER_PASSWORD)):
            cli_ok("user", "add", user, "--role", role, "--config", str(door.config_path), "--password-stdin",
                   stdin=password + "\n")
        door.start(self.watcher)
        self._door = door
        return door

    def restart_door(self) -> Door:
        door = self.door()
        door.stop()
        door.start(self.watcher)
        return door

    def tls_door(self) -> Door:
        """A second door with the console on TLS (self-signed, made here with ``cryptography``), MQTT off."""
        if self._tls_door is not None:
            return self._tls_door
        self.scene()
        cert, key = self.work / "web.crt", self.work / "web.key"
        write_self_signed(cert, key)
        state = self.work / "state-tls"
        state.mkdir(mode=0o755)
        config: dict[str, Any] = {
            "device_id": "attack-tls", "state_dir": str(state),
            "camera": {"source": f"replay:{self.frames}", "fps": 5, "loop": True},
            "door": {"pin_factory": "mock", "relay_pin": 17},
            "mqtt": {"enabled": False}, "liveness": {"enabled": False},
            "web": {"enabled": True, "port": free_port(), "tls_cert_file": str(cert), "tls_key_file": str(key)},
        }
        door = Door("tls", self.work / "door-tls.toml", config)
        door.start()
        self._tls_door = door
        return door

    def astronaut_templates(self) -> dict[str, Any]:
        """The door's enrolment of the astronaut, as ``gallery export-templates`` writes it (door enrolment)."""
        if self._astro is None:
            door = self.door()
            out = self.work / "astronaut.json"
            cli_ok("gallery", "export-templates", "--gallery", str(door.state_dir / "gallery.db"), "--id",
                   "astronaut", "--out", str(out))
            self._astro = json.loads(out.read_text())
        return self._astro

    def faces(self) -> tuple[np.ndarray, str]:
        """Unit embeddings of many different people (and where they came from), for the master-face attack."""
        if self._faces is not None:
            return self._faces
        self.scene()
        images: list[Path] = []
        source = "random unit vectors"
        if LFW.is_dir():
            for folder in sorted(LFW.iterdir())[:40]:
                first = next(iter(sorted(folder.glob("*.jpg"))), None)
                if first is not None:
                    images.append(first)
            source = f"{len(images)} LFW people (first photo each)"
        else:
            images = [self.photos / "astronaut.png", self.photos / "astronaut2.png", self.photos / "hopper.png"]
            source = "registry photos + random unit vectors"
        vectors: list[np.ndarray] = []
        if images:
            proc = cli("embed", *map(str, images), timeout=300)
            for line in proc.stdout.splitlines():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    vectors.append(np.asarray(json.loads(line)["embedding"], dtype=np.float32))
        rng = np.random.default_rng(7)
        dim = vectors[0].size if vectors else 192
        while len(vectors) < 16:
            v = rng.standard_normal(dim).astype(np.float32)
            vectors.append(v / np.linalg.norm(v))
        stacked = np.stack(vectors)
        self._faces = (stacked / np.linalg.norm(stacked, axis=1, keepdims=True), source)
        self.face_images = images
        return self._faces

    # ---- sync

    def publish_bundle(self, data: bytes, name: str) -> str:
        path = self.work / f"{name}.bundle"
        path.write_bytes(data)
        cli_ok("gallery", "publish", str(path), "--host", "127.0.0.1", "--port", str(self.broker.port),
               "--topic", SYNC_TOPIC, "--timeout", "20")
        return hashlib.sha256(data).hexdigest()

    def bundle_verdict(self, sha: str, since: float, timeout: float = BUNDLE_WAIT_SECONDS) -> dict[str, Any] | None:
        """The door's answer to a bundle: ``gallery_updated`` or a refusal (``gallery_rejected``/``sync_rejected``)."""
        return self.door().wait_event(
            lambda e: e.get("bundle") == sha and e["type"] in ("gallery_updated", "gallery_rejected", "sync_rejected"),
            since, timeout)

    def restore_gallery(self) -> None:
        """A good full bundle (the astronaut's own templates), after an attack bundle was applied."""
        astro = self.astronaut_templates()
        data = make_bundle(self.key(), self.next_version(), astro["embedder_sha256"],
                           [person("astronaut", [t["embedding"] for t in astro["templates"]], "Eileen Collins")])
        since = time.monotonic()
        sha = self.publish_bundle(data, "restore")
        answer = self.bundle_verdict(sha, since)
        if answer is None or answer["type"] != "gallery_updated":
            raise AttackError(f"the tool's own good bundle was not applied: {answer}")

    def close(self) -> None:
        for door in (self._door, self._tls_door):
            if door is not None:
                door.stop()
        with contextlib.suppress(Exception):
            self.watcher.stop()
        self.broker.close()


def write_self_signed(cert_path: Path, key_path: Path) -> None:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)


# ---------------------------------------------------------------------------------------------- attacks


def templates_file(astro: dict[str, Any], pid: str, vectors: list[np.ndarray]) -> dict[str, Any]:
    return {"format": "facegate-templates", "format_version": 1, "person_id": pid, "name": None, "metadata": {},
            "embedder_sha256": astro["embedder_sha256"], "exported": "2026-12-02T00:00:00Z",
            "templates": [{"embedding": template_b64(v), "quality": {}, "source": "attack", "created_at": time.time()}
                          for v in vectors]}


def import_templates(ctx: Context, gallery: Path, doc: dict[str, Any], name: str) -> subprocess.CompletedProcess[str]:
    path = ctx.work / f"{name}.json"
    path.write_text(json.dumps(doc))
    return cli("gallery", "import-templates", "--gallery", str(gallery), str(path))


def admin_gallery(ctx: Context) -> Path:
    """An admin gallery holding people whose embeddings make the centroid (bulk-enrolled from their photos, or
    imported as vectors when there are no photos), plus the astronaut imported from the door's
    ``export-templates`` file (the documented door-enrolment path)."""
    gallery = ctx.work / "admin.db"
    if gallery.exists():
        return gallery
    faces, _ = ctx.faces()
    astro = ctx.astronaut_templates()
    photos = [p for p in ctx.face_images if p.parent.parent == LFW][:20]
    if photos:
        staff = ctx.work / "staff"
        for photo in photos:
            (staff / photo.parent.name).mkdir(parents=True)
            (staff / photo.parent.name / photo.name).symlink_to(photo)
        proc = cli("enroll", "--gallery", str(gallery), "--folder", str(staff), "--quiet", timeout=300)
        with contextlib.suppress(ValueError):
            if json.loads(proc.stdout).get("persons_enrolled", 0) < len(photos) // 2:
                raise AttackError(f"bulk enrolment of the admin gallery failed: {proc.stdout[-300:]}")
    else:
        for i, vector in enumerate(faces[:8]):
            proc = import_templates(ctx, gallery, templates_file(astro, f"person-{i:02d}", [vector]), f"p{i:02d}")
            if proc.returncode != 0:
                raise AttackError(f"importing genuine person-{i:02d} failed: {proc.stderr.strip()[-300:]}")
    proc = import_templates(ctx, gallery, astro, "astronaut-import")
    if proc.returncode != 0:
        raise AttackError(f"importing the astronaut's genuine templates failed: {proc.stderr.strip()[-300:]}")
    return gallery


def attack_master_face_import(ctx: Context) -> Outcome:
    faces, source = ctx.faces()
    astro = ctx.astronaut_templates()
    gallery = admin_gallery(ctx)
    centroid = faces.mean(axis=0)
    scaled = centroid / np.linalg.norm(centroid) * 100.0
    genuine = faces[min(len(ctx.face_images), len(faces)) - 1]  # the last photo's embedding: a real new person
    control = import_templates(ctx, gallery, templates_file(astro, "control-person", [genuine]), "control")
    big = import_templates(ctx, gallery, templates_file(astro, "master-scaled", [scaled]), "master-scaled")
    observed = f"norm-100 centroid: exit {big.returncode}; genuine control: exit {control.returncode} ({source})"
    return Outcome(big.returncode != 0 and control.returncode == 0, observed,
                   {"scaled_stderr": big.stderr.strip()[-300:], "control_stderr": control.stderr.strip()[-300:],
                    "faces": source})


def attack_unit_centroid_import(ctx: Context) -> Outcome:
    """The reported master face re-normalised: a unit vector, so only the admin-side crowding rule can see it."""
    faces, source = ctx.faces()
    astro = ctx.astronaut_templates()
    centroid = faces.mean(axis=0)
    unit = centroid / np.linalg.norm(centroid)
    small = import_templates(ctx, admin_gallery(ctx), templates_file(astro, "master-unit", [unit]), "master-unit")
    return Outcome(small.returncode != 0, f"unit centroid: exit {small.returncode} ({source})",
                   {"unit_stderr": small.stderr.strip()[-300:], "faces": source})


def attack_master_face_bundle(ctx: Context) -> Outcome:
    faces, source = ctx.faces()
    astro = ctx.astronaut_templates()
    door = ctx.door()
    centroid = faces.mean(axis=0)
    scaled = centroid / np.linalg.norm(centroid) * 100.0
    data = make_bundle(ctx.key(), ctx.next_version(), astro["embedder_sha256"], [
        person("astronaut", [t["embedding"] for t in astro["templates"]], "Eileen Collins"),
        person("master-face", [template_b64(scaled)], "Master Face")])
    since = time.monotonic()
    sha = ctx.publish_bundle(data, "master-face")
    answer = ctx.bundle_verdict(sha, since)
    # Grace Hopper (not enrolled) comes by every loop of the replay (about 5 s): watch two loops.
    granted = door.wait_event(lambda e: e["type"] == "access_granted" and e.get("person_id") == "master-face",
                              since, 12)
    if answer is not None and answer["type"] == "gallery_updated":
        ctx.restore_gallery()
    reason = None if answer is None else answer.get("reason")
    observed = (f"door answer: {answer['type'] if answer else 'none'}"
                + (f" ({reason})" if reason else "")
                + ("; a stranger was GRANTED as master-face" if granted else "; no grant to master-face"))
    passed = answer is not None and answer["type"] != "gallery_updated" and reason == "bad_template" and not granted
    return Outcome(passed, observed, {"answer": answer, "grant": granted, "faces": source})


def attack_short_templates(ctx: Context) -> Outcome:
    astro = ctx.astronaut_templates()
    door = ctx.door()
    four = template_b64(np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32))
    data = make_bundle(ctx.key(), ctx.next_version(), astro["embedder_sha256"], [person("tiny", [four], "Tiny")])
    since = time.monotonic()
    sha = ctx.publish_bundle(data, "short-templates")
    answer = ctx.bundle_verdict(sha, since)
    after = time.monotonic()
    granted = door.wait_event(lambda e: e["type"] == "access_granted" and e.get("person_id") == "astronaut",
                              after, 15)
    crashed = door.proc is None or door.proc.poll() is not None
    if answer is not None and answer["type"] == "gallery_updated":
        ctx.restore_gallery()
    observed = (f"door answer: {answer['type'] if answer else 'none'}"
                + (f" ({answer.get('reason')})" if answer and answer.get("reason") else "")
                + ("; astronaut granted after it" if granted else "; astronaut NOT granted after it")
                + ("; the service died" if crashed else ""))
    passed = answer is not None and answer["type"] != "gallery_updated" and granted is not None and not crashed
    return Outcome(passed, observed, {"answer": answer, "tracebacks": door.tracebacks(since)[:3]})


def _login_burst(door: Door, sources: list[str], per_source: int, password: str = "wrong password!") -> list[int]:
    """``len(sources) * per_source`` wrong logins released at once; the HTTP statuses (0: connection failed)."""
    jobs = [s for s in sources for _ in range(per_source)]
    barrier = threading.Barrier(len(jobs))

    def one(source: str) -> int:
        try:
            barrier.wait(10)
            return Session(door, source).login(ADMIN, password)
        except (OSError, threading.BrokenBarrierError, http.client.HTTPException):
            return 0

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(one, jobs))


def attack_login_memory(ctx: Context) -> Outcome:
    door = ctx.door()
    Session(door, "127.0.0.10").login(ADMIN, "warm-up wrong password")  # scrypt's first use, not counted
    time.sleep(1.0)
    idle = sorted(rss_kb(door.pid) for _ in range(5))[2]
    peak = [idle]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            with contextlib.suppress(OSError, AttackError):
                peak[0] = max(peak[0], rss_kb(door.pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        statuses = _login_burst(door, [f"127.0.0.{i}" for i in range(2, 10)], 8)
    finally:
        time.sleep(0.5)
        done.set()
        sampler.join()
    grown = (peak[0] - idle) / 1024
    counts = {s: statuses.count(s) for s in sorted(set(statuses))}
    return Outcome(grown <= 30, f"idle {idle / 1024:.0f} MB, peak {peak[0] / 1024:.0f} MB (+{grown:.0f} MB); "
                   f"statuses {counts}", {"idle_kb": idle, "peak_kb": peak[0], "statuses": counts})


class Flood(threading.Thread):
    """Idle TCP connections from one loopback address, re-opened whenever the server drops one."""

    def __init__(self, port: int, source: str, count: int) -> None:
        super().__init__(daemon=True)
        self.port, self.source, self.count = port, source, count
        self.stop = threading.Event()
        self.opened = 0
        self.held = 0

    def run(self) -> None:
        import select

        socks: list[socket.socket] = []
        try:
            while not self.stop.is_set():
                while len(socks) < self.count and not self.stop.is_set():
                    try:
                        socks.append(socket.create_connection(("127.0.0.1", self.port), timeout=1,
                                                              source_address=(self.source, 0)))
                        self.opened += 1
                    except OSError:
                        break
                self.held = max(self.held, len(socks))
                readable, _, _ = select.select(socks, [], [], 0.05) if socks else ([], [], [])
                for s in readable:  # readable on an idle connection = closed (or refused) by the server
                    with contextlib.suppress(OSError):
                        s.close()
                    socks.remove(s)
                if readable:
                    time.sleep(0.2)  # idle connections, not a connect storm: re-open at a bounded pace
        finally:
            for s in socks:
                with contextlib.suppress(OSError):
                    s.close()


def _flood_and_poll(door: Door, seconds: float = 8.0) -> Outcome:
    floods = [Flood(door.port, f"127.0.0.{40 + i}", 16) for i in range(8)]
    for f in floods:
        f.start()
    time.sleep(1.0)
    answered, failed = 0, []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            status, _, body = request(door, "GET", "/terminal/state", headers={"Host": "127.0.0.1"}, timeout=5)
            if status == 200 and "message" in json.loads(body):
                answered += 1
            else:
                failed.append(f"HTTP {status}")
        except (OSError, ValueError, http.client.HTTPException) as exc:
            failed.append(type(exc).__name__)
        time.sleep(0.25)
    held = sum(f.held for f in floods)
    opened = sum(f.opened for f in floods)
    for f in floods:
        f.stop.set()
    for f in floods:
        f.join(5)
    polls = answered + len(failed)
    kinds = {k: failed.count(k) for k in sorted(set(failed))}
    return Outcome(polls > 0 and not failed,
                   f"{answered}/{polls} door-screen polls answered while 8 addresses held {held} idle connections "
                   f"({opened} opened){'; failures ' + json.dumps(kinds) if failed else ''}",
                   {"answered": answered, "failed": kinds, "held": held, "opened": opened})


def attack_connection_flood(ctx: Context) -> Outcome:
    return _flood_and_poll(ctx.door())


def attack_connection_flood_tls(ctx: Context) -> Outcome:
    return _flood_and_poll(ctx.tls_door())


def attack_deep_json(ctx: Context) -> Outcome:
    """The reported body (60,000 '[') and one as deep that fits the login body cap (3,000 '[')."""
    door = ctx.door()
    since = time.monotonic()
    headers = {"Content-Type": "application/json", "Host": f"127.0.0.1:{door.port}"}
    big, _, body = request(door, "POST", "/api/login", b"[" * 60_000, headers, "127.0.0.11")
    deep, _, _ = request(door, "POST", "/api/login", b"[" * 3_000, headers, "127.0.0.11")
    time.sleep(1.0)
    traces = door.tracebacks(since)
    # 413 (over the login body cap) or 400 (malformed) are both refusals; 500 and a traceback are the bug
    return Outcome(big in (400, 413) and deep == 400 and not traces,
                   f"60,000 '[': HTTP {big}; 3,000 '[': HTTP {deep}; {len(traces)} traceback line(s) in the log",
                   {"body": body[:200].decode("utf-8", "replace"), "tracebacks": traces[:3]})


def attack_parallel_passwords(ctx: Context) -> Outcome:
    from_limit = 9  # README: the 10th wrong password within 60 s is refused with 429 (LOGIN_MAX_FAILURES)
    statuses = _login_burst(ctx.door(), ["127.0.0.20"], 16)
    checked = statuses.count(401)
    counts = {s: statuses.count(s) for s in sorted(set(statuses))}
    # 0 = the connection was refused by the per-client connection cap: not checked either
    return Outcome(checked <= from_limit and not any(s >= 500 for s in statuses),
                   f"{checked} of 16 wrong passwords were checked (401), limit {from_limit}; statuses {counts}",
                   {"statuses": counts})


def attack_logout_streams(ctx: Context) -> Outcome:
    door = ctx.door()
    admin = Session(door, "127.0.0.12")
    if admin.login(ADMIN, ADMIN_PASSWORD) != 200:
        raise AttackError("admin login failed")
    events = Stream(door, "/api/events", admin.cookie, "127.0.0.12")
    camera = Stream(door, "/api/live.mjpg", admin.cookie, "127.0.0.12")
    for s in (events, camera):
        s.start()
        s.headers_seen.wait(10)
    if events.status != 200 or camera.status != 200:
        events.stop.set()
        camera.stop.set()
        raise AttackError(f"streams did not open: events HTTP {events.status}, camera HTTP {camera.status}")
    time.sleep(1.0)
    status, _ = admin.post("/api/logout")
    logged_out = time.monotonic()
    wait_for(lambda: events.closed_at is not None and camera.closed_at is not None, 20, interval=0.1, fail=False)
    for s in (events, camera):
        s.stop.set()

    def took(s: Stream) -> float | None:
        return None if s.closed_at is None or s.closed_at > logged_out + 19.5 else s.closed_at - logged_out

    ev, cam = took(events), took(camera)
    def fmt(v: float | None) -> str:
        return "still open after 20 s" if v is None else f"closed after {v:.1f} s"

    return Outcome(status == 200 and ev is not None and cam is not None and ev <= 1.5 and cam <= 1.5,
                   f"logout HTTP {status}; event stream {fmt(ev)}, camera stream {fmt(cam)}",
                   {"events_seconds": ev, "camera_seconds": cam})


def attack_session_eviction(ctx: Context) -> Outcome:
    door = ctx.door()
    admin = Session(door, "127.0.0.13")
    if admin.login(ADMIN, ADMIN_PASSWORD) != 200:
        raise AttackError("admin login failed")
    sources = [f"127.0.0.{60 + i}" for i in range(4)]

    def viewer(i: int) -> int:
        try:
            return Session(door, sources[i % len(sources)]).login(VIEWER, VIEWER_PASSWORD)
        except (OSError, http.client.HTTPException):
            return 0

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(viewer, range(205)))
    status, _ = admin.get("/api/session")
    counts = {s: statuses.count(s) for s in sorted(set(statuses))}
    return Outcome(status == 200, f"viewer logins {counts}; the admin's session afterwards: HTTP {status}",
                   {"viewer_statuses": counts, "admin_status": status})


def attack_stream_starvation(ctx: Context) -> Outcome:
    door = ctx.door()
    viewer, admin = Session(door, "127.0.0.70"), Session(door, "127.0.0.14")
    if viewer.login(VIEWER, VIEWER_PASSWORD) != 200 or admin.login(ADMIN, ADMIN_PASSWORD) != 200:
        raise AttackError("login failed")
    held = [Stream(door, "/api/events", viewer.cookie, f"127.0.0.{70 + i % 2}") for i in range(16)]
    held += [Stream(door, "/api/live.mjpg", viewer.cookie, f"127.0.0.{72 + i % 2}") for i in range(4)]
    try:
        for s in held:
            s.start()
        for s in held:
            s.headers_seen.wait(10)
        got = sum(1 for s in held if s.status == 200)
        mine = [Stream(door, "/api/events", admin.cookie, "127.0.0.14"),
                Stream(door, "/api/live.mjpg", admin.cookie, "127.0.0.14")]
        for s in mine:
            s.start()
            s.headers_seen.wait(10)
        status, _ = admin.get("/api/status")
        for s in mine:
            s.stop.set()
    finally:
        for s in held:
            s.stop.set()
    ev, cam = mine[0].status, mine[1].status
    observed = (f"viewer holds {got}/20 streams; admin: event stream HTTP {ev}, camera HTTP {cam}, "
                f"/api/status HTTP {status}")
    # Let the server notice the closed streams before the next attack needs its slots.
    wait_for(lambda: _streams_open(admin) == 0, 20, interval=0.5, fail=False)
    return Outcome(ev == 200 and cam == 200 and status == 200, observed, {"viewer_streams": got})


def _streams_open(admin: Session) -> int:
    with contextlib.suppress(OSError, ValueError, KeyError, http.client.HTTPException):
        status, body = admin.get("/api/system", timeout=20)
        if status == 200:
            return int(json.loads(body)["console"]["streams"])
    return -1


def attack_ha_brake_restart(ctx: Context) -> Outcome:
    door = ctx.door()

    def guess(code: str) -> str | None:
        nonce = secrets.token_hex(8)
        since = time.monotonic()
        ctx.broker.publish(f"facegate/{DEVICE}/lock/set", json.dumps(
            {"via": "home_assistant", "action": "unlock", "code": code, "ts": time.time(), "nonce": nonce}))
        # "retained" refusals are of messages that clear a retained command, not of these guesses.
        event = door.wait_event(lambda e: e["type"] == "command_rejected" and e.get("reason") != "retained",
                                since, 10)
        return None if event is None else str(event.get("reason"))

    before = [guess(f"{100000 + i}") for i in range(6)]
    if before[-1] != "too_many_attempts":
        raise AttackError(f"the brake did not engage before the restart: {before}")
    ctx.restart_door()
    after = guess("999999")
    return Outcome(after == "too_many_attempts",
                   f"before restart {before}; first wrong code after restart: {after}",
                   {"before": before, "after": after})


def _forged_manifest(size_chunks: int = 64, chunk_bytes: int = 1024) -> tuple[str, bytes, list[bytes]]:
    bundle = secrets.token_hex(32)
    size = size_chunks * chunk_bytes
    manifest = json.dumps({"format": "facegate-sync-manifest", "format_version": 1, "bundle": bundle, "size": size,
                           "chunks": size_chunks, "chunk_bytes": chunk_bytes, "version": 10**6, "kind": "full",
                           "base_version": None, "created": "2026-12-02T00:00:00Z"}, separators=(",", ":")).encode()
    chunks = []
    for i in range(size_chunks):
        junk = os.urandom(chunk_bytes)
        head = {"bundle": bundle, "index": i, "count": size_chunks, "size": size, "offset": i * chunk_bytes,
                "sha256": hashlib.sha256(junk).hexdigest()}
        chunks.append(json.dumps(head, separators=(",", ":")).encode() + b"\n" + junk)
    return bundle, manifest, chunks


def attack_forged_chunks(ctx: Context) -> Outcome:
    door = ctx.door()
    client = f"facegate-{DEVICE}-sync"
    bundle, manifest, chunks = _forged_manifest()
    since = time.monotonic()
    start = ctx.broker.log_size()
    ctx.broker.publish_many([(f"{SYNC_TOPIC}/chunk/{i}", c, True) for i, c in enumerate(chunks)]
                            + [(f"{SYNC_TOPIC}/manifest", manifest, True)])
    failed = door.wait_event(lambda e: e.get("bundle") == bundle, since, BUNDLE_WAIT_SECONDS)
    if failed is None:
        raise AttackError("the door never reported the forged bundle")
    first, first_bytes = ctx.broker.sent_chunks(start, client)
    mark = ctx.broker.log_size()
    time.sleep(10)
    later, later_bytes = ctx.broker.sent_chunks(mark, client)
    mark = ctx.broker.log_size()
    ctx.broker.publish(f"{SYNC_TOPIC}/manifest", manifest, retain=True)
    time.sleep(4)
    again, again_bytes = ctx.broker.sent_chunks(mark, client)
    # Leave no forged retained message behind for the next attacks.
    ctx.broker.publish_many([(f"{SYNC_TOPIC}/chunk/{i}", b"", True) for i in range(len(chunks))]
                            + [(f"{SYNC_TOPIC}/manifest", b"", True)])
    observed = (f"first download {first} chunks ({first_bytes} B), reported {failed['type']} "
                f"({failed.get('reason')}); next 10 s: {later} chunks ({later_bytes} B); "
                f"after the same manifest again: {again} chunks ({again_bytes} B)")
    return Outcome(again == 0 and later <= len(chunks), observed,
                   {"first": first, "later": later, "again": again, "event": failed})


def attack_csrf_origin(ctx: Context) -> Outcome:
    door = ctx.door()
    admin = Session(door, "127.0.0.1")
    if admin.login(ADMIN, ADMIN_PASSWORD) != 200:
        raise AttackError("admin login failed")
    good, _ = admin.post("/api/door/lock")
    evil, _ = admin.post("/api/door/lock", headers={"Host": "evil.example", "Origin": "http://evil.example"})
    return Outcome(evil == 403 and good == 200,
                   f"Host: evil.example + Origin: http://evil.example -> HTTP {evil} (same-origin control: {good})")


def _raw_http(door: Door, data: bytes) -> tuple[int, dict[str, str]]:
    with socket.create_connection(("127.0.0.1", door.port), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    head = got.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    if not head or len(head[0].split(" ")) < 2:
        raise AttackError(f"no HTTP response: {got[:100]!r}")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
    return int(head[0].split(" ")[1]), headers


def attack_error_headers(ctx: Context) -> Outcome:
    door = ctx.door()
    bad = _raw_http(door, b"GET / junk HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # four words: 400
    big = _raw_http(door, b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 40_000 + b"\r\n\r\n")
    wanted = ("x-content-type-options", "content-security-policy", "x-frame-options")
    missing = {str(status): [h for h in wanted if h not in headers] for status, headers in (bad, big)}
    ok = bad[0] == 400 and big[0] == 431 and not any(missing.values())
    return Outcome(ok, f"HTTP {bad[0]} and {big[0]}; missing headers {json.dumps(missing)}", {"missing": missing})


def attack_file_modes(ctx: Context) -> Outcome:
    door = ctx.door()
    admin_db = admin_gallery(ctx) if (ctx.work / "admin.db").exists() else None
    if admin_db is None:
        admin_db = ctx.work / "admin-modes.db"
        proc = import_templates(ctx, admin_db, ctx.astronaut_templates(), "modes-import")
        if proc.returncode != 0:
            raise AttackError(f"import-templates failed: {proc.stderr.strip()[-200:]}")
    bundle = ctx.work / "exported.bundle"
    cli_ok("gallery", "export", "--gallery", str(admin_db), "--key", str(ctx.work / "admin.key"), "--out",
           str(bundle))
    state = door.state_dir
    paths = [state / n for n in ("gallery.db", "gallery.db-wal", "outbox.db", "outbox.db-wal", "command_nonces.db",
                                 "command_nonces.db-wal")]
    paths += [state / "sync", *sorted((state / "sync").rglob("*"))] if (state / "sync").exists() else [state / "sync"]
    paths.append(bundle)
    modes: dict[str, str] = {}
    bad: list[str] = []
    for p in paths:
        if not p.exists():
            if p.name in ("gallery.db", "outbox.db", "command_nonces.db", "sync"):
                modes[str(p.relative_to(ctx.work))] = "missing"
            continue
        mode = p.stat().st_mode & 0o777
        modes[str(p.relative_to(ctx.work))] = oct(mode)
        if mode & 0o077:
            bad.append(f"{p.name} {oct(mode)}")
    return Outcome(not bad, "all owner-only" if not bad else "group/other access: " + ", ".join(bad[:8]),
                   {"modes": modes, "umask": "022"})


def attack_purge_traces(ctx: Context) -> Outcome:
    door = ctx.door()
    pid, name = "purge-target-q7", "Quentin Purgeworthy"
    admin = Session(door, "127.0.0.1")
    if admin.login(ADMIN, ADMIN_PASSWORD) != 200:
        raise AttackError("admin login failed")
    status, body = admin.post("/api/people", {"id": pid, "name": name})
    if status != 200:
        raise AttackError(f"could not add the person through the console: HTTP {status} {body[:200]!r}")
    time.sleep(3)  # the console_action event reaches the outbox, the broker and the journal
    proc = cli("gallery", "remove", "--gallery", str(door.state_dir / "gallery.db"), pid, "--purge-events",
               "--config", str(door.config_path))
    if proc.returncode != 0:
        raise AttackError(f"gallery remove --purge-events exited {proc.returncode}: {proc.stderr.strip()[-200:]}")
    time.sleep(3)
    found: dict[str, list[str]] = {}
    for stem in ("gallery.db", "outbox.db", "journal.db"):
        for suffix in ("", "-wal"):
            path = door.state_dir / (stem + suffix)
            if path.exists():
                data = path.read_bytes()
                hits = [what for what in (pid, name) if what.encode() in data]
                if hits:
                    found[path.name] = hits
    return Outcome(not found, "no trace" if not found else "traces: " + json.dumps(found), {"found": found})


def attack_csv_injection(ctx: Context) -> Outcome:
    door = ctx.door()
    pid, name = "csv-inject", ' =HYPERLINK("http://evil.example/","open me")'
    gallery = str(door.state_dir / "gallery.db")
    since = time.monotonic()
    cli_ok("enroll", "--gallery", gallery, "--id", pid, "--name", name, "--largest", str(ctx.photos / "hopper.png"))
    try:
        granted = door.wait_event(lambda e: e["type"] == "access_granted" and e.get("person_id") == pid, since, 30)
    finally:
        cli("gallery", "remove", "--gallery", gallery, pid)
    if granted is None:
        raise AttackError("the person with the injected name was never granted (no journal row to export)")
    time.sleep(2)  # the journal writes on its own thread
    admin = Session(door, "127.0.0.1")
    if admin.login(ADMIN, ADMIN_PASSWORD) != 200:
        raise AttackError("admin login failed")
    status, console_csv = admin.get(f"/api/journal.csv?person={pid}&since=1h")
    cli_csv = cli_ok("events", "--config", str(door.config_path), "--person", pid, "--csv")
    dangerous: list[str] = []
    for origin, text in (("console", console_csv.decode("utf-8", "replace")), ("cli", cli_csv)):
        for row in csv.reader(io.StringIO(text)):
            for cell in row:
                if "HYPERLINK" in cell and cell[:1] != "'" and cell.lstrip(" \t\r\n")[:1] in ("=", "+", "-", "@"):
                    dangerous.append(f"{origin}: {cell[:30]!r}")
    return Outcome(status == 200 and not dangerous,
                   "neutralised in both exports" if not dangerous else "formula cells: " + ", ".join(dangerous[:4]),
                   {"console_status": status})


# ---- extra attacks (this tool's own design, not in the attack test's report)


def _bundle_refused(ctx: Context, persons: list[dict[str, Any]], name: str, dim: int | None = None,
                    version: int | None = None) -> tuple[dict[str, Any] | None, str]:
    astro = ctx.astronaut_templates()
    ctx.door()
    data = make_bundle(ctx.key(), version or ctx.next_version(), astro["embedder_sha256"], persons, dim)
    since = time.monotonic()
    sha = ctx.publish_bundle(data, name)
    answer = ctx.bundle_verdict(sha, since)
    if answer is not None and answer["type"] == "gallery_updated":
        ctx.restore_gallery()
    text = "none" if answer is None else answer["type"] + (f" ({answer['reason']})" if answer.get("reason") else "")
    return answer, text


def attack_nan_template(ctx: Context) -> Outcome:
    astro = ctx.astronaut_templates()
    vector = np.frombuffer(base64.b64decode(astro["templates"][0]["embedding"]), dtype="<f4").copy()
    vector[7] = np.nan
    answer, text = _bundle_refused(ctx, [
        person("astronaut", [t["embedding"] for t in astro["templates"]], "Eileen Collins"),
        person("nan-person", [template_b64(vector)], "Not A Number")], "nan-template")
    return Outcome(answer is not None and answer["type"] != "gallery_updated", f"door answer: {text}")


def attack_duplicate_person(ctx: Context) -> Outcome:
    astro = ctx.astronaut_templates()
    real = [t["embedding"] for t in astro["templates"]]
    answer, text = _bundle_refused(ctx, [person("astronaut", real, "Eileen Collins"),
                                         person("astronaut", real[:1], "Someone Else")], "duplicate-person")
    return Outcome(answer is not None and answer["type"] != "gallery_updated", f"door answer: {text}")


def attack_bundle_rollback(ctx: Context) -> Outcome:
    astro = ctx.astronaut_templates()
    ctx.restore_gallery()  # a known applied version
    older = ctx._version - 5
    answer, text = _bundle_refused(ctx, [
        person("astronaut", [t["embedding"] for t in astro["templates"]], "Eileen Collins"),
        person("ghost", [astro["templates"][0]["embedding"]], "Rolled Back")], "rollback", version=older)
    return Outcome(answer is not None and answer.get("reason") == "rollback", f"door answer: {text}")


def attack_huge_content_length(ctx: Context) -> Outcome:
    door = ctx.door()
    results: list[tuple[str, int | str, float]] = []
    for length in ("1000000000000", "-1"):
        started = time.monotonic()
        status: int | str
        try:
            status, _ = _raw_http(door, f"POST /api/login HTTP/1.1\r\nHost: 127.0.0.1:{door.port}\r\n"
                                        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n".encode())
        except OSError as exc:  # no answer at all
            status = type(exc).__name__
        results.append((length, status, time.monotonic() - started))
    ok = all(isinstance(s, int) and 400 <= s < 500 and t < 5 for _, s, t in results)
    return Outcome(ok, "; ".join(f"Content-Length {n}: {s} in {t:.1f} s" for n, s, t in results))


def attack_retained_unlock(ctx: Context) -> Outcome:
    door = ctx.door()
    since = time.monotonic()
    topic = f"facegate/{DEVICE}/lock/set"
    ctx.broker.publish(topic, json.dumps({"via": "home_assistant", "action": "unlock", "code": HA_CODE,
                                          "ts": time.time(), "nonce": secrets.token_hex(8)}), retain=True)
    try:
        rejected = door.wait_event(lambda e: e["type"] == "command_rejected", since, 10)
        time.sleep(1)
        # Faces are granted all along (reason "face"); a command's unlock has another reason.
        opened = [e for e in door.events(since) if e["type"] in ("door_unlocked", "command_accepted")
                  and e.get("reason") != "face"]
    finally:
        ctx.broker.publish(topic, b"", retain=True)  # clears it (the door refuses the empty message too)
        time.sleep(1)
    return Outcome(rejected is not None and not opened,
                   f"{'command_rejected (' + str(rejected.get('reason')) + ')' if rejected else 'no refusal'}; "
                   f"{len(opened)} command unlock(s)", {"unlocks": opened})


@dataclass(frozen=True)
class Attack:
    name: str
    finding: str  # "1" .. "11" from the report, or "extra"
    expected: str
    run: Callable[[Context], Outcome]


ATTACKS: list[Attack] = [
    Attack("master_face_import", "1", "import-templates of a norm-100 centroid refused (exit != 0); a genuine "
           "import accepted", attack_master_face_import),
    Attack("unit_centroid_import", "extra", "import-templates of the same centroid normalised to unit length "
           "refused", attack_unit_centroid_import),
    Attack("master_face_bundle", "1", "signed bundle with a norm-100 centroid: refused (bad_template); the "
           "stranger not granted", attack_master_face_bundle),
    Attack("short_templates", "2", "signed bundle of 4-value templates refused; astronaut still granted",
           attack_short_templates),
    Attack("nan_template", "extra", "signed bundle with a NaN in a template refused", attack_nan_template),
    Attack("duplicate_person", "extra", "signed bundle naming one person twice refused", attack_duplicate_person),
    Attack("bundle_rollback", "extra", "older signed bundle refused (rollback)", attack_bundle_rollback),
    Attack("forged_chunks", "10", "junk chunks of a 64-chunk manifest not fetched again on the same manifest",
           attack_forged_chunks),
    Attack("deep_json", "5", "60,000 '[' to /api/login: 400/413, 3,000 '[': 400; no traceback", attack_deep_json),
    Attack("parallel_passwords", "6", "16 parallel wrong passwords: at most 9 checked (401), the rest 429",
           attack_parallel_passwords),
    Attack("login_memory", "3", "64 parallel wrong logins from 8 addresses: peak RSS within 30 MB of idle",
           attack_login_memory),
    Attack("csrf_origin", "11", "Host: evil + Origin: http://evil with a valid session and token: 403",
           attack_csrf_origin),
    Attack("error_headers", "11", "stdlib 400/431 pages carry nosniff, CSP, X-Frame-Options",
           attack_error_headers),
    Attack("file_modes", "11", "gallery.db, outbox.db, command_nonces.db, sync/, exported bundle: 0600/0700 "
           "under umask 022", attack_file_modes),
    Attack("purge_traces", "11", "after gallery remove --purge-events: id and name in no db/-wal byte",
           attack_purge_traces),
    Attack("csv_injection", "11", "a name ' =HYPERLINK(...)' is neutralised in both journal CSV exports",
           attack_csv_injection),
    Attack("logout_streams", "7", "after logout the event and camera streams close within 1.5 s",
           attack_logout_streams),
    Attack("session_eviction", "8", "205 viewer logins leave the admin's session alive", attack_session_eviction),
    Attack("stream_starvation", "8", "a viewer with 16 event + 4 camera streams: the admin still gets 200",
           attack_stream_starvation),
    Attack("connection_flood", "4", "128 idle connections from 8 addresses: every /terminal/state poll answered",
           attack_connection_flood),
    Attack("connection_flood_tls", "4", "the same with idle pre-TLS connections on a TLS console",
           attack_connection_flood_tls),
    Attack("huge_content_length", "extra", "Content-Length 10^12 / -1 on /api/login: 4xx at once",
           attack_huge_content_length),
    Attack("retained_unlock", "extra", "a retained HA unlock with the right code refused, no unlock",
           attack_retained_unlock),
    Attack("ha_brake_restart", "9", "HA code brake engaged before a restart is still engaged after it",
           attack_ha_brake_restart),
]


# ---------------------------------------------------------------------------------------------- main


@dataclass
class Row:
    attack: str
    finding: str
    expected: str
    observed: str
    verdict: str
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


def run(selected: list[Attack], workdir: Path) -> list[Row]:
    rows: list[Row] = []
    ctx = Context(workdir)
    try:
        for attack in selected:
            started = time.monotonic()
            print(f"attack: {attack.name} ...", file=sys.stderr, flush=True)
            try:
                out = attack.run(ctx)
                row = Row(attack.name, attack.finding, attack.expected, out.observed,
                          "PASS" if out.passed else "FAIL", 0.0, out.details)
            except Exception as exc:  # an interface differs: report it and go on
                row = Row(attack.name, attack.finding, attack.expected, f"{type(exc).__name__}: {exc}"[:400],
                          "ERROR", 0.0)
            row.seconds = round(time.monotonic() - started, 1)
            print(f"attack: {attack.name}: {row.verdict} ({row.seconds} s) {row.observed}", file=sys.stderr,
                  flush=True)
            rows.append(row)
    finally:
        ctx.close()
    return rows


def table(rows: list[Row]) -> str:
    def wrap(text: str, width: int) -> list[str]:
        out, line = [], ""
        for word in text.split():
            if line and len(line) + 1 + len(word) > width:
                out.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        return [*out, line] if line else out or [""]

    widths = (22, 6, 44, 60, 7)
    head = ("attack", "find.", "expected", "observed", "verdict")
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)),
             "-+-".join("-" * w for w in widths)]
    for r in rows:
        cols = [wrap(r.attack, widths[0]), [r.finding], wrap(r.expected, widths[2]), wrap(r.observed, widths[3]),
                [r.verdict]]
        for i in range(max(map(len, cols))):
            lines.append(" | ".join((c[i] if i < len(c) else "").ljust(w) for c, w in zip(cols, widths, strict=True)))
    return "\n".join(lines)


def git_commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", default=[], metavar="NAME",
                    help="run only these attacks (repeatable or comma-separated); see --list")
    ap.add_argument("--list", action="store_true", help="print the attacks' names and exit")
    ap.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write a JSON report")
    ap.add_argument("--keep", action="store_true", help="keep the temporary working folder (printed)")
    args = ap.parse_args(argv)
    if args.list:
        for a in ATTACKS:
            print(f"{a.name:<22} {a.finding:<6} {a.expected}")
        return 0
    wanted = {n.strip() for item in args.only for n in item.split(",") if n.strip()}
    unknown = wanted - {a.name for a in ATTACKS}
    if unknown:
        ap.error(f"unknown attack(s): {', '.join(sorted(unknown))} (see --list)")
    selected = [a for a in ATTACKS if not wanted or a.name in wanted]
    os.umask(0o022)  # the service and the CLI are started as an administrator's shell would start them
    workdir = Path(tempfile.mkdtemp(prefix="facegate-attack-"))
    started = time.monotonic()
    try:
        rows = run(selected, workdir)
    finally:
        if args.keep:
            print(f"attack: working folder kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table(rows))
    passed = sum(r.verdict == "PASS" for r in rows)
    print(f"\n{passed}/{len(rows)} passed in {time.monotonic() - started:.0f} s "
          f"({sum(r.verdict == 'FAIL' for r in rows)} failed, {sum(r.verdict == 'ERROR' for r in rows)} errors)")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "commit": git_commit(), "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - started, 1), "passed": passed, "total": len(rows),
            "rows": [asdict(r) for r in rows]}, indent=2, default=str) + "\n")
    return 0 if rows and passed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
