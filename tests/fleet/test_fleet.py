"""The fleet server's store (SQLite and a real PostgreSQL), its MQTT ingest (a real Mosquitto) and bad input."""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from facegate.events.ids import uuid7
from facegate.events.mqtt_client import MqttTarget
from facegate.fleet.doors import BadMessage, DoorRegistry, parse_event, parse_status
from facegate.fleet.ingest import Ingest
from facegate.fleet.store import EventQuery, EventRow, FleetStore, PostgresStore, SqliteStore
from paho.mqtt.enums import CallbackAPIVersion
from support import ROOT
from support.broker import Mosquitto, broker, find_mosquitto  # noqa: F401 (fixture)

from tools import fleet_sim
from tools.wait import wait_for

PG_URL = os.environ.get("FACEGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _postgres() -> Iterator[FleetStore]:
    try:
        import psycopg
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'facegate[fleet]')")
    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        pytest.skip(f"no PostgreSQL at {PG_URL} (set FACEGATE_TEST_POSTGRES): {str(exc).strip()[:200]}")
    schema = f"fleet_test_{uuid.uuid4().hex[:12]}"
    store = PostgresStore(PG_URL, schema=schema)
    try:
        yield store
    finally:
        store.close()
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FleetStore]:
    if request.param == "sqlite":
        s = SqliteStore(tmp_path / "fleet.db")
        yield s
        s.close()
    else:
        yield from _postgres()


def event(door: str, kind: str = "access_granted", seq: int = 1, ts: str = "2026-05-01T12:00:00.000Z",
          **fields: object) -> dict[str, object]:
    return {"event_id": uuid7(), "seq": seq, "ts": ts, "device_id": door, "type": kind, **fields}


def row(door: str, **kw: object) -> EventRow:
    return parse_event(door, json.dumps(event(door, **kw)).encode())  # type: ignore[arg-type]


def test_store_dedups_queries_purges_and_keeps_audit(store: FleetStore) -> None:
    a = row("front", person_id="p1", name="Ada", ts="2026-05-01T08:00:00.000Z")
    b = row("back", kind="access_denied", person_id="p2", name="Bob", ts="2026-05-02T08:00:00.000Z")
    c = row("back", kind="door_forced_open", ts="2026-05-03T08:00:00.000Z")
    assert store.insert_new_events([a, b, a]) == [True, True, False]  # a duplicate within one batch
    assert store.insert_events([a, b, c]) == 1  # redelivered ones skipped by event_id
    assert store.count_events() == 3
    assert [e["event_id"] for e in store.query_events(EventQuery())] == [c.event_id, b.event_id, a.event_id]
    assert [e["event_id"] for e in store.query_events(EventQuery(door="back"))] == [c.event_id, b.event_id]
    assert [e["event_id"] for e in store.query_events(EventQuery(person="Ada"))] == [a.event_id]
    assert [e["event_id"] for e in store.query_events(EventQuery(person="p2"))] == [b.event_id]
    assert [e["type"] for e in store.query_events(EventQuery(type="door_forced_open"))] == ["door_forced_open"]
    assert [e["event_id"] for e in store.query_events(EventQuery(since=b.ts, until=c.ts))] == [b.event_id]
    assert store.event(a.event_id) == json.loads(a.body)
    assert store.purge_events(b.ts) == 1 and store.count_events() == 2
    store.audit("ann", "person_added", person_id="p1", name="Robert'); DROP TABLE events;--")
    assert store.audit_log()[0]["detail"]["name"] == "Robert'); DROP TABLE events;--"
    assert store.count_events() == 2
    store.add_alert("back", "forced_open", "door_forced_open", c.event_id)
    alert = store.alerts(open_only=True)[0]
    assert store.acknowledge_alert(alert["id"], "ann") and store.alerts(open_only=True) == []
    store.touch_door("front", online=1)
    store.update_sync("front", published_version=3, published_kind="delta")
    assert store.sync_state("front")["published_version"] == 3  # type: ignore[index]
    assert store.door("front")["online"] == 1  # type: ignore[index]


@pytest.mark.parametrize("payload, problem", [
    (b"\xff\xfe", "not UTF-8 JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"event_id": "x"}', "event_id must be"),
    (b"{" * 100_000, r"bytes \(limit"),
    (json.dumps(event("other")).encode(), "does not match the topic's door"),
    (json.dumps(event("front", ts="yesterday")).encode(), "not an ISO-8601 time"),
    (json.dumps(event("front", seq=-1)).encode(), "seq must be"),
    (json.dumps(event("front", kind="<script>")).encode(), "type must be"),
    (json.dumps({**event("front"), "name": 5}).encode(), "name must be a string"),
    (b'{"event_id": NaN}', "not UTF-8 JSON"),
])
def test_bad_events_are_refused_with_the_reason(payload: bytes, problem: str) -> None:
    with pytest.raises(BadMessage, match=problem):
        parse_event("front", payload)


def test_bad_status_is_refused() -> None:
    with pytest.raises(BadMessage, match="does not match"):
        parse_status("front", json.dumps({"device_id": "back"}).encode())
    with pytest.raises(BadMessage, match=r"gallery\.version"):
        parse_status("front", json.dumps({"device_id": "front", "gallery": {"version": "7"}}).encode())


class Door:
    """A door as the broker sees it: QoS 1 events and a retained status, on the door's own topics."""

    def __init__(self, host: str, port: int, door: str) -> None:
        self.door = door
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"door-{door}-{uuid.uuid4().hex[:6]}")
        self.client.connect(host, port)
        self.client.loop_start()

    def send(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(f"facegate/{self.door}/{topic}", payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_ingest_stores_each_event_once_across_a_server_restart_and_refuses_garbage(
        broker: Mosquitto, tmp_path: Path) -> None:  # noqa: F811
    store = SqliteStore(tmp_path / "fleet.db")
    target = MqttTarget(broker.host, broker.port, protocol="5")

    def ingest() -> Ingest:
        i = Ingest(target, "facegate-fleet-test", "facegate", store, DoorRegistry(store, 180.0))
        i.start()
        assert i.connected.wait(5)
        return i

    server = ingest()
    front, back = Door(broker.host, broker.port, "front"), Door(broker.host, broker.port, "back")
    try:
        sent = [event("front", seq=i, person_id="p1", name="Ada") for i in range(20)]
        for e in sent:
            front.send("events", json.dumps(e).encode())
        for e in sent[:5]:  # an outbox redelivering what the broker already had
            front.send("events", json.dumps(e).encode())
        front.send("status", json.dumps({"device_id": "front", "version": "0.1.0", "gallery": {"version": 1},
                                         "camera": {"ok": False, "error": "no frames"}}).encode(), retain=True)
        front.send("availability", b"online", retain=True)
        forced = event("back", kind="door_forced_open")
        back.send("events", json.dumps(forced).encode())
        assert wait_for(lambda: store.door("back") is not None, timeout=10)
        back.send("events", b"\x00garbage")
        back.send("events", json.dumps(event("front")).encode())  # a forged door id: back speaking for front
        back.send("status", b"[]")
        front.send("availability", b"maybe")
        assert wait_for(lambda: store.count_events() == 21 and len(store.alerts()) == 4, timeout=10), \
            (store.count_events(), server.stats, store.alerts())
        assert server.stats.refused == 4
        assert server.stats.duplicates == 5
        doors = {d["door_id"]: d for d in server.registry.view()}
        assert doors["front"]["problems"] == ["camera: no frames"] and doors["front"]["online"]
        assert doors["back"]["bad_messages"] == 3  # garbage, the forged event, the status
        kinds = [a["kind"] for a in store.alerts()]
        assert "forced_open" in kinds and kinds.count("bad_message") == 3  # one per door and kind
        server.stop()
        # While the fleet server is down the broker queues for its persistent session.
        later = [event("front", seq=100 + i) for i in range(10)]
        for e in later:
            front.send("events", json.dumps(e).encode())
        server = ingest()
        assert wait_for(lambda: store.count_events() == 31, timeout=10), store.count_events()
        front.send("events", json.dumps(later[0]).encode())
        assert wait_for(lambda: server.stats.duplicates == 1, timeout=10)
        assert store.count_events() == 31
    finally:
        server.stop()
        front.close()
        back.close()
        store.close()


def test_ingest_survives_a_broker_restart(tmp_path: Path) -> None:
    """Events a door sends while the fleet server is still reconnecting wait in its persistent session."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto binary not found")
    server = fleet_sim.Broker()  # persistence on, in a folder mosquitto's own user can write
    server.start()
    store = SqliteStore(tmp_path / "fleet.db")
    ingest = Ingest(MqttTarget("127.0.0.1", server.port, protocol="5"), "facegate-fleet-test2", "facegate", store,
                    DoorRegistry(store, 180.0))
    ingest.start()
    door = None
    try:
        assert ingest.connected.wait(5)
        door = Door("127.0.0.1", server.port, "front")
        for i in range(10):
            door.send("events", json.dumps(event("front", seq=i)).encode())
        assert wait_for(lambda: store.count_events() == 10, timeout=10)
        door.close()
        server.stop()
        server.start()
        door = Door("127.0.0.1", server.port, "front")
        for i in range(10, 20):
            door.send("events", json.dumps(event("front", seq=i)).encode())
        assert wait_for(lambda: store.count_events() == 20, timeout=20), store.count_events()
        # The broker may redeliver what it had not seen acknowledged when it stopped: skipped, never stored twice.
        stored = [e["seq"] for e in store.query_events(EventQuery(limit=100))]
        assert sorted(stored) == list(range(20))
    finally:
        ingest.stop()
        if door is not None:
            door.close()
        server.close()
        store.close()


def test_console_refuses_bad_input_and_enforces_roles(broker: Mosquitto, tmp_path: Path) -> None:  # noqa: F811
    from types import SimpleNamespace

    from facegate.fleet.config import parse_fleet_config
    from facegate.fleet.server import FleetService
    from facegate.fleet.web import fleet_users
    from support.webconsole import Client

    from tools.net import free_port

    config = parse_fleet_config({"state_dir": str(tmp_path / "fleet"), "web": {"port": free_port()},
                                 "mqtt": {"host": broker.host, "port": broker.port, "client_id": "fleet-bad"}})
    service = FleetService(config)
    users = fleet_users(config.state_dir)
    for name, role in (("ann", "admin"), ("otto", "operator"), ("vera", "viewer")):
        users.add(name, role, "a long password")
    assert (config.sync_key_path.stat().st_mode & 0o777) == 0o600
    service.start()
    try:
        web = SimpleNamespace(port=service.http.port)
        admin, operator, viewer = Client(web), Client(web), Client(web)  # type: ignore[arg-type]
        assert admin.login("ann", "a long password") == 200
        assert operator.login("otto", "a long password") == 200
        assert viewer.login("vera", "a long password") == 200
        hostile = "<img src=x onerror=alert(1)>'; DROP TABLE persons;--"
        status, body = admin.post("/api/people", {"id": "p1", "name": hostile, "doors": ["front", "lab"]})
        assert status == 200 and body["name"] == hostile  # kept as text; the page shows it with textContent
        assert [p["name"] for p in admin.get_json("/api/people")[1]] == [hostile]
        for bad, problem in [({"id": "p2", "name": "a\x1b[31mred"}, "control"), ({"id": "../etc"}, "id:"),
                             ({"id": "p3", "doors": ["front/#"]}, "doors:"), ({"id": "p4", "name": "x" * 201}, "name:"),
                             ({"id": "p5", "valid_from": "tomorrow"}, "valid_from")]:
            status, body = admin.post("/api/people", bad)
            assert status == 400 and problem in body["error"], (bad, body)
        for photo in (b"\xff\xd8\xff garbage", b"GIF89a" + b"\0" * 64, b""):
            status, _, raw = admin.request("POST", "/api/people/p1/photo", raw=photo,
                                           headers={"X-CSRF-Token": admin.csrf or "", "X-Filename": "bad.jpg"})
            assert status in (400, 413) and json.loads(raw)["error"], raw
        assert viewer.post("/api/people", {"id": "p9"})[0] == 403
        assert operator.post("/api/people", {"id": "p9"})[0] == 403
        assert admin.post("/api/people", {"id": "p9"}, csrf=False)[0] == 403
        assert viewer.get_json("/api/people")[0] == 403 and viewer.get_json("/api/doors")[0] == 200
        assert operator.post("/api/doors/front/command", {"action": "unlock"})[0] == 404  # no such door yet
        assert operator.post("/api/doors/front/command", {"action": "open_sesame"})[0] == 400
        assert viewer.post("/api/doors/front/command", {"action": "unlock"})[0] == 403
        actions = [a["action"] for a in service.store.audit_log()]
        assert actions.count("person_added") == 1 and "console_login" in actions
    finally:
        service.stop()


def test_fleet_cli_adds_accounts_and_prints_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from facegate.cli import main
    from facegate.fleet.web import fleet_users

    toml = tmp_path / "fleet.toml"
    toml.write_text(f'state_dir = "{tmp_path / "state"}"\n')
    monkeypatch.setattr(sys, "stdin", io.StringIO("operator password\n"))
    out = io.StringIO()
    assert main(["fleet", "user", "add", "otto", "--role", "operator", "--config", str(toml), "--password-stdin"],
                out=out) == 0
    assert json.loads(out.getvalue()) == {"user": "otto", "role": "operator", "added": True}
    assert fleet_users(tmp_path / "state").authenticate("otto", "operator password") is not None
    assert not (tmp_path / "state" / "web_users.json").exists()  # the door's accounts are another file
    out = io.StringIO()
    assert main(["fleet", "keys", "--config", str(toml)], out=out) == 0
    keys = json.loads(out.getvalue())
    assert len(keys["sync_public_key"]) == 44 and keys["sync_public_key"] != keys["command_public_key"]
    assert ((tmp_path / "state" / "sync.key").stat().st_mode & 0o777) == 0o600
    toml.write_text('[web]\nbind = "0.0.0.0"\n')
    err = io.StringIO()
    assert main(["fleet", "keys", "--config", str(toml)], out=io.StringIO(), err=err) == 78
    assert "web" in err.getvalue() and "TLS" in err.getvalue()


def test_store_takes_an_empty_batch(store: FleetStore) -> None:
    assert store.insert_new_events([]) == [] and store.count_events() == 0


def test_nothing_on_the_door_side_imports_the_fleet_package() -> None:
    """The door runs without the fleet server's code: only the CLI registers its commands."""
    import ast

    offenders = []
    for path in (ROOT / "device" / "facegate").rglob("*.py"):
        rel = path.relative_to(ROOT / "device" / "facegate").as_posix()
        if rel.startswith("fleet/") or rel == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            offenders += [f"{rel}: {n}" for n in names if n == "facegate.fleet" or n.startswith("facegate.fleet.")]
    assert offenders == []
