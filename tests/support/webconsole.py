"""A real door service with the web console on, for the console's HTTP and browser tests.

Replayed camera (registry photos: scikit-image's astronaut walks up, leaves, then comes back beside matplotlib's
Grace Hopper, in a loop), gpiozero MockFactory pins, a real Mosquitto, and the service's own threads, exactly as
``facegate run`` wires them (only the signal handlers are left out).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from facegate.access.clock import UncheckedClock
from facegate.config import parse_config
from facegate.service import Service
from facegate.web.accounts import UserStore
from gpiozero.pins.mock import MockFactory

from support.broker import Mosquitto, find_mosquitto
from tools.demo import augment, in_scene, shipped_photos
from tools.net import free_port

ADMIN, ADMIN_PASSWORD = "admin", "correct horse battery"
VIEWER, VIEWER_PASSWORD = "guard", "viewer password 1"
DEVICE = "web1"
RELAY_PIN = 17
UNLOCK_SECONDS = 0.6


def two_people(astronaut: np.ndarray, hopper: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Both side by side, each face large enough to be detected (so a capture sees two faces and refuses)."""
    frame = in_scene(np.ascontiguousarray(astronaut[0:300, 60:360]), background, 320, 10, 60)
    small = cv2.resize(hopper, (260, round(hopper.shape[0] * 260 / hopper.shape[1])), interpolation=cv2.INTER_AREA)
    h = min(small.shape[0], 480 - 60)
    frame[60:60 + h, 360:620] = small[:h]
    return frame


def write_scene(folder: Path) -> Path:
    """One loop (4.4 s at 15 fps): the astronaut alone, empty door (> track timeout), both people, empty door."""
    astronaut, hopper, background = shipped_photos()
    frames: list[np.ndarray] = []
    frames += [in_scene(augment(astronaut, 2 - 0.2 * i, 0.9, False), background, 440 + 4 * i, 100, 0)
               for i in range(20)]
    frames += [background] * 18
    frames += [two_people(augment(astronaut, 1, 0.95, False), hopper, background)] * 10
    frames += [background] * 18
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:04d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


@dataclass
class Door:
    service: Service
    factory: MockFactory
    broker: Mosquitto
    port: int
    state_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def relay(self) -> Any:
        return self.factory.pin(RELAY_PIN)

    def events(self, type: str | None = None) -> list[dict[str, Any]]:
        """Everything the service emitted so far (the console's own ring is too short for a whole test)."""
        return [e for e in self.emitted if type is None or e["type"] == type]

    emitted: list[dict[str, Any]]


@contextmanager
def running_door(tmp: Path, **web: Any) -> Iterator[Door]:
    if find_mosquitto() is None:
        pytest.skip("mosquitto binary not found: install the 'mosquitto' package")
    server = Mosquitto().start()
    port = free_port()
    config = parse_config({
        "device_id": DEVICE, "state_dir": str(tmp / "state"),
        "camera": {"source": f"replay:{write_scene(tmp / 'frames')}", "fps": 15, "loop": True},
        "door": {"relay_pin": RELAY_PIN, "unlock_seconds": UNLOCK_SECONDS},
        "mqtt": {"host": server.host, "port": server.port},
        "outbox": {"flush_timeout_seconds": 2},
        "recognition": {"cooldown_seconds": 1},
        # The visitors are photographs pasted into frames: the liveness gate would (rightly) refuse them.
        "liveness": {"enabled": False},
        "web": {"enabled": True, "port": port, **web},
    })
    users = UserStore(config.state_dir)
    for name, role, password in [(ADMIN, "admin", ADMIN_PASSWORD), (VIEWER, "viewer", VIEWER_PASSWORD)]:
        if users.get(name) is None:  # a second door on the same state dir (a restart) keeps its accounts
            users.add(name, role, password)
    factory = MockFactory()
    # The people pages give her a schedule: believe this machine's clock even if it is not synchronised.
    service = Service(config, pin_factory=factory, clock=UncheckedClock())
    emitted: list[dict[str, Any]] = []
    service.emitter.add_listener(emitted.append)
    thread = threading.Thread(target=service.run, name="test-service", daemon=True)
    thread.start()
    door = Door(service, factory, server, port, config.state_dir, emitted)
    try:
        yield door
    finally:
        service.stop_event.set()
        thread.join(timeout=20)
        factory.reset()
        server.close()


class Client:
    """A tiny HTTP client keeping the session cookie and CSRF token, for the API-level tests."""

    def __init__(self, door: Door, source: str | None = None) -> None:
        self.door, self.source = door, source
        self.cookie: str | None = None
        self.csrf: str | None = None

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                raw: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.door.port, timeout=10,
                                          source_address=(self.source, 0) if self.source else None)
        h = dict(headers or {})
        if self.cookie:
            h.setdefault("Cookie", self.cookie)
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, data, h)
            res = conn.getresponse()
            return res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()
        finally:
            conn.close()

    def login(self, user: str, password: str) -> int:
        status, headers, body = self.request("POST", "/api/login", {"user": user, "password": password})
        if status == 200:
            self.cookie = headers["set-cookie"].split(";")[0]
            self.csrf = json.loads(body)["csrf"]
        return status

    def post(self, path: str, body: Any = None, csrf: bool = True) -> tuple[int, Any]:
        headers = {"X-CSRF-Token": self.csrf} if csrf and self.csrf else {}
        status, _, data = self.request("POST", path, {} if body is None else body, headers)
        return status, json.loads(data) if data else None

    def get_json(self, path: str) -> tuple[int, Any]:
        status, _, data = self.request("GET", path)
        return status, json.loads(data) if data else None


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A P-256 certificate for 127.0.0.1 and its key (cert.pem, key.pem in ``tmp``), for the console's TLS."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "facegate test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def stream_ends(s: socket.socket, within: float) -> bool:
    """Whether the server ends (or resets) the open response on ``s`` within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if s.recv(65536) == b"":
                return True
        except TimeoutError:
            pass
        except ConnectionResetError:
            return True
    return False
