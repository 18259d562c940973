#!/usr/bin/env python3
"""Fleet server benchmarks on one machine (docs/fleet.md, "Measured"): propagation, ingest soak, journal queries.

``propagate``: a fleet server (``FleetService``, SQLite) and N simulated doors on one Mosquitto. A simulated door
is a light MQTT client that does what a door's sync receiver does with the door's own code: it reads the
retained manifest and chunks of ITS gallery topic, verifies the signed bundle (``verify_bundle``), applies it to
its own SQLite gallery (``apply_bundle``) and publishes ``gallery_updated`` and its status, as a door does. A
person is added with a photo through the fleet console's HTTP API, then removed; each change is timed from
the HTTP request to each door's confirmation being stored in the console (the Doors page shows it).

``soak``: N doors x R events/s for S seconds, each with an outbox (an event is kept until the broker's PUBACK and
re-sent after a reconnection, as a door's outbox does); the broker is restarted (persistence on) at 1/3 and the
fleet server at 2/3 of the run. At the end: events stored == events sent, and no event stored twice.

``query``: the journal's queries at 1M events, SQLite and (if one answers) PostgreSQL.

Usage::

    .venv/bin/python tools/bench/bench_fleet.py propagate --doors 100
    .venv/bin/python tools/bench/bench_fleet.py soak --doors 100 --rate 10 --seconds 600
    .venv/bin/python tools/bench/bench_fleet.py query --events 1000000 [--postgres postgresql://postgres@127.0.0.1/test]

Each prints one JSON object on stdout (progress on stderr). Everything binds to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]

import cv2
import paho.mqtt.client as paho
from facegate.events.ids import uuid7
from facegate.fleet.config import parse_fleet_config
from facegate.fleet.server import FleetService
from facegate.fleet.store import EventQuery, EventRow, FleetStore, PostgresStore, SqliteStore
from facegate.fleet.web import fleet_users
from facegate.gallery.store import Gallery
from facegate.sync.apply import apply_bundle
from facegate.sync.bundle import BundleError, verify_bundle
from facegate.sync.chunks import parse_chunk, parse_manifest
from facegate.sync.keys import key_id
from paho.mqtt.enums import CallbackAPIVersion

from tools.demo import shipped_photos
from tools.fleet_sim import Broker
from tools.net import free_port

PASSWORD = "bench password 1"


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def ts_text(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def fleet(work: Path, port: int, **extra: Any) -> FleetService:
    config = parse_fleet_config({"state_dir": str(work / "fleet"), "mqtt": {"host": "127.0.0.1", "port": port,
                                 "client_id": "facegate-fleet-bench"}, "web": {"port": free_port()}, **extra})
    return FleetService(config)


# ---------------------------------------------------------------------------------------------- propagation


class SimDoor:
    """Verifies and applies its bundles with the door's code; reports like a door (events with ids, status)."""

    def __init__(self, door_id: str, port: int, topic: str, public_key: Any, embedder: str, work: Path) -> None:
        self.id, self.topic, self.embedder = door_id, topic, embedder
        self.keys = {key_id(public_key): public_key}
        self.gallery = Gallery(work / f"{door_id}.db")
        self.chunks: dict[str, dict[int, bytes]] = {}  # bundle id -> index -> data (chunks come before the manifest)
        self.manifest: Any = None
        self.seq = 0
        self.applied: list[int] = []
        self.lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sim-{door_id}")
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_connect(self, c: paho.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
        c.subscribe([(f"{self.topic}/manifest", 1), (f"{self.topic}/chunk/+", 1)])
        self.status()
        c.publish(f"facegate/{self.id}/availability", b"online", qos=1, retain=True)

    def event(self, type: str, **fields: Any) -> None:
        self.seq += 1
        body = {"event_id": uuid7(), "seq": self.seq, "ts": ts_text(time.time()), "device_id": self.id,
                "type": type, **fields}
        self.client.publish(f"facegate/{self.id}/events", json.dumps(body), qos=1)

    def status(self) -> None:
        self.client.publish(f"facegate/{self.id}/status", json.dumps({
            "device_id": self.id, "version": "sim", "gallery": {"version": self.gallery.version},
            "camera": {"ok": True}, "outbox_pending": 0}), qos=1, retain=True)

    def _on_message(self, c: paho.Client, u: Any, msg: paho.MQTTMessage) -> None:
        with self.lock:
            try:
                if msg.topic.endswith("/manifest"):
                    self.manifest = parse_manifest(bytes(msg.payload))
                    self.chunks = {self.manifest.bundle: self.chunks.get(self.manifest.bundle, {})}
                elif msg.payload:
                    chunk = parse_chunk(bytes(msg.payload))
                    self.chunks.setdefault(chunk.bundle, {})[chunk.index] = chunk.data
                self._try_apply()
            except Exception as exc:  # paho would end its thread: say what broke instead
                log(f"{self.id}: {type(exc).__name__}: {exc}")

    def _try_apply(self) -> None:
        m = self.manifest
        have = self.chunks.get(m.bundle, {}) if m is not None else {}
        if m is None or len(have) < m.chunks or (self.applied and m.version == self.applied[-1]):
            return
        data = b"".join(have[i] for i in range(m.chunks))
        started = time.monotonic()
        try:
            bundle = verify_bundle(data, self.keys, 64 * 1024 * 1024)
            result = apply_bundle(self.gallery, bundle, self.embedder)
        except BundleError as exc:
            self.event("gallery_rejected", reason=exc.reason, bundle=m.bundle, source="mqtt", detail=str(exc),
                       suppressed=0)
            return
        self.applied.append(result.version)
        self.event("gallery_updated", version=result.version, persons=result.persons, templates=result.templates,
                   seconds=round(time.monotonic() - started, 4), kind=result.kind, bundle=m.bundle, source="mqtt")
        self.status()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.gallery.close()


class Api:
    def __init__(self, port: int) -> None:
        self.port, self.cookie, self.csrf = port, "", ""

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        h = {"Cookie": self.cookie, "X-CSRF-Token": self.csrf, **(headers or {})}
        data = raw
        if body is not None:
            data, h["Content-Type"] = json.dumps(body).encode(), "application/json"
        conn.request(method, path, data, h)
        res = conn.getresponse()
        out = json.loads(res.read() or b"null")
        if res.status != 200:
            raise RuntimeError(f"{path}: {res.status} {out}")
        if path == "/api/login":
            self.cookie = res.getheader("Set-Cookie", "").split(";")[0]
            self.csrf = out["csrf"]
        return out


def propagate(doors: int, timeout: float) -> dict[str, Any]:
    broker = Broker()
    broker.start()
    work = Path(tempfile.mkdtemp(prefix="facegate-bench-fleet-"))
    service = fleet(work, broker.port)
    fleet_users(service.config.state_dir).add("bench", "admin", PASSWORD)
    service.start()
    sims: list[SimDoor] = []
    try:
        embedder = service.people.pipeline().embedder_sha256
        pub = service.sync_key.public_key()
        sims = [SimDoor(f"sim{i:03d}", broker.port, service.publisher.topic(f"sim{i:03d}"), pub, embedder, work)
                for i in range(doors)]
        deadline = time.monotonic() + 60
        while len(service.store.doors()) < doors and time.monotonic() < deadline:
            time.sleep(0.1)
        log(f"{len(service.store.doors())} doors discovered")
        api = Api(service.http.port)
        api.call("POST", "/api/login", {"user": "bench", "password": PASSWORD})
        photo = cv2.imencode(".jpg", cv2.cvtColor(shipped_photos()[0], cv2.COLOR_RGB2BGR))[1].tobytes()
        out: dict[str, Any] = {"doors": doors}

        def change(name: str, fn: Any) -> None:
            t0 = time.time()
            fn()
            version = service.people.gallery.version
            seen: dict[str, float] = {}
            end = time.monotonic() + timeout
            while len(seen) < doors and time.monotonic() < end:
                for door_id, st in service.store.sync_states().items():
                    if door_id not in seen and (st["applied_version"] or 0) >= version and st["applied_at"]:
                        seen[door_id] = st["applied_at"] - t0
                time.sleep(0.05)
            times = sorted(seen.values())
            out[name] = {"version": version, "confirmed": len(times),
                         "median_seconds": round(statistics.median(times), 2) if times else None,
                         "max_seconds": round(times[-1], 2) if times else None}
            log(f"{name}: {out[name]}")

        def add() -> None:
            api.call("POST", "/api/people", {"id": "astronaut", "name": "Eileen Collins", "doors": ["*"]})
            result = api.call("POST", "/api/people/astronaut/photo", raw=photo,
                              headers={"Content-Type": "application/octet-stream", "X-Filename": "astronaut.jpg"})
            assert result["accepted"], result

        change("add_person_with_photo", add)
        change("remove_person", lambda: api.call("POST", "/api/people/astronaut/remove", {}))
        out["sim_doors_holding_her"] = sum(1 for s in sims if s.gallery.person("astronaut") is not None)
        return out
    finally:
        for s in sims:
            s.close()
        service.stop()
        broker.close()


# ---------------------------------------------------------------------------------------------- ingest soak


class OutboxDoor:
    """Sends events at a rate and keeps each until the broker acknowledged it; re-sends the rest on reconnect."""

    def __init__(self, door_id: str, port: int) -> None:
        self.id = door_id
        self.pending: dict[str, bytes] = {}  # event_id -> payload, until PUBACK
        self.by_mid: dict[int, str] = {}
        self.sent = 0
        self.lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"soak-{door_id}")
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_publish = self._on_publish
        self.client.on_connect = self._on_connect
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()
        self.seq = 0

    def _on_connect(self, c: paho.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
        with self.lock:
            again = list(self.pending.items())
            self.by_mid.clear()
        for event_id, payload in again:  # what was not acknowledged before the connection dropped
            self._publish(event_id, payload)

    def _publish(self, event_id: str, payload: bytes) -> None:
        info = self.client.publish(f"facegate/{self.id}/events", payload, qos=1)
        with self.lock:
            self.by_mid[info.mid] = event_id

    def _on_publish(self, c: paho.Client, u: Any, mid: int, rc: Any, p: Any) -> None:
        with self.lock:
            event_id = self.by_mid.pop(mid, None)
            if event_id is not None:
                self.pending.pop(event_id, None)

    def emit(self) -> None:
        self.seq += 1
        event_id = uuid7()
        payload = json.dumps({"event_id": event_id, "seq": self.seq, "ts": ts_text(time.time()),
                              "device_id": self.id, "type": "access_granted", "person_id": f"p{self.seq % 50}",
                              "name": "Soak Person"}).encode()
        with self.lock:
            self.pending[event_id] = payload
            self.sent += 1
        if self.client.is_connected():
            self._publish(event_id, payload)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def soak(doors: int, rate: float, seconds: float, postgres: str | None) -> dict[str, Any]:
    broker = Broker()
    conf = broker.config_path
    conf.write_text(conf.read_text().replace("max_queued_messages 10000", "max_queued_messages 0")
                    + "max_inflight_messages 100\n")
    broker.start()
    work = Path(tempfile.mkdtemp(prefix="facegate-bench-soak-"))
    extra = {"storage": {"url": postgres}} if postgres else {}
    service = fleet(work, broker.port, **extra)
    service.start()
    service.ingest.connected.wait(10)
    sims = [OutboxDoor(f"soak{i:03d}", broker.port) for i in range(doors)]
    start = time.monotonic()
    tick = 1.0 / rate
    restarted_broker = restarted_server = False
    n = skipped = 0
    try:
        while (elapsed := time.monotonic() - start) < seconds:
            for s in sims:
                s.emit()
            n += 1
            if not restarted_broker and elapsed > seconds / 3:
                log("restarting the broker")
                broker.stop()
                broker.start()
                restarted_broker = True
            if not restarted_server and elapsed > 2 * seconds / 3:
                log("restarting the fleet server")
                skipped += service.ingest.stats.duplicates
                service.stop()
                service = fleet(work, broker.port, **extra)
                service.start()
                restarted_server = True
            time.sleep(max(0.0, start + n * tick - time.monotonic()))
            if n % int(rate * 30) == 0:
                log(f"{elapsed:.0f} s: sent {sum(s.sent for s in sims)}, stored {service.store.count_events()}")
        sent = sum(s.sent for s in sims)
        log(f"sending done: {sent}; draining")
        drain_start = time.monotonic()
        deadline = time.monotonic() + 1200
        while time.monotonic() < deadline and (service.store.count_events() < sent
                                               or any(s.pending for s in sims)):
            time.sleep(1)
        stored = service.store.count_events()
        return {"drain_seconds": round(time.monotonic() - drain_start, 1),
                "doors": doors, "rate_per_door": rate, "seconds": seconds, "sent": sent, "stored": stored,
                "duplicates_stored": 0 if stored <= sent else stored - sent,
                "redelivered_and_skipped": skipped + service.ingest.stats.duplicates,
                "still_pending_at_doors": sum(len(s.pending) for s in sims), "backend": service.store.backend}
    finally:
        for s in sims:
            s.close()
        service.stop()
        broker.close()


# ---------------------------------------------------------------------------------------------- query times


def fill(store: FleetStore, events: int, doors: int = 100) -> None:
    now = time.time()
    batch: list[EventRow] = []
    types = ["access_granted"] * 6 + ["unknown_face", "access_denied", "door_opened", "door_closed"]
    for i in range(events):
        ts = now - (events - i) * (30 * 86400 / events)
        door = f"door{i % doors:03d}"
        kind = types[i % len(types)]
        person = f"p{(i * 7) % 5000:04d}" if kind.startswith("access") else None
        body = json.dumps({"event_id": str(uuid.uuid4()), "seq": i, "ts": ts_text(ts), "device_id": door,
                           "type": kind, "person_id": person, "name": person and f"Person {person}"})
        batch.append(EventRow(json.loads(body)["event_id"], door, i, ts, kind, person, person and f"Person {person}",
                              body))
        if len(batch) == 20_000:
            store.insert_events(batch)
            batch = []
    store.insert_events(batch)


def timed(fn: Any, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return round(best * 1000, 2)


def query_times(store: FleetStore) -> dict[str, float]:
    now = time.time()
    return {
        "latest_100_ms": timed(lambda: store.query_events(EventQuery(limit=100))),
        "door_last_week_100_ms": timed(lambda: store.query_events(EventQuery(door="door042", since=now - 7 * 86400))),
        "person_all_time_ms": timed(lambda: store.query_events(EventQuery(person="p0777", limit=500))),
        "type_forced_or_rare_ms": timed(lambda: store.query_events(EventQuery(type="door_opened", limit=100))),
        "one_day_window_500_ms": timed(lambda: store.query_events(EventQuery(since=now - 10 * 86400,
                                                                             until=now - 9 * 86400, limit=500))),
        "csv_10000_rows_ms": timed(lambda: store.query_events(EventQuery(limit=10_000)), repeat=2),
        "count_ms": timed(store.count_events, repeat=2),
    }


def query(events: int, postgres: str | None, sqlite_too: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"events": events}
    work = Path(tempfile.mkdtemp(prefix="facegate-bench-query-"))
    if sqlite_too:
        sqlite = SqliteStore(work / "fleet.db")
        t = time.monotonic()
        fill(sqlite, events)
        out["sqlite"] = {"fill_seconds": round(time.monotonic() - t, 1), **query_times(sqlite)}
        log(f"sqlite: {out['sqlite']}")
        sqlite.close()
    if postgres:
        import psycopg

        schema = f"bench_{uuid.uuid4().hex[:8]}"
        pg = PostgresStore(postgres, schema=schema)
        try:
            t = time.monotonic()
            fill(pg, events)
            out["postgresql"] = {"fill_seconds": round(time.monotonic() - t, 1), **query_times(pg)}
            log(f"postgresql: {out['postgresql']}")
        finally:
            pg.close()
            with psycopg.connect(postgres, autocommit=True) as admin:
                admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="bench", required=True)
    p = sub.add_parser("propagate")
    p.add_argument("--doors", type=int, default=100)
    p.add_argument("--timeout", type=float, default=120)
    p = sub.add_parser("soak")
    p.add_argument("--doors", type=int, default=100)
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--postgres", default=None)
    p = sub.add_parser("query")
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--postgres", default=None)
    p.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    args = parser.parse_args()
    if args.bench == "propagate":
        result = propagate(args.doors, args.timeout)
    elif args.bench == "soak":
        result = soak(args.doors, args.rate, args.seconds, args.postgres)
    else:
        result = query(args.events, args.postgres, not args.no_sqlite)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
