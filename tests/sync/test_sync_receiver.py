"""The door's sync receiver over a real Mosquitto (chunks, restarts, bad input) and over HTTP (ETag polling)."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.publish as mqtt_publish
import pytest
from facegate.config import Config, parse_config
from facegate.events.ratelimit import ReportLimiter
from facegate.gallery.index import EmbeddingIndex
from facegate.gallery.store import Gallery
from facegate.sync import receiver as receiver_module
from facegate.sync.bundle import PREFIX_BYTES
from facegate.sync.chunks import ChunkStore, chunk_topic, make_chunks, make_manifest, manifest_topic, parse_chunk
from facegate.sync.export import export_bundle
from facegate.sync.mqtt import MqttTarget, publish_bundle
from facegate.sync.receiver import REMEMBERED, SyncReceiver
from support.broker import Collector, Mosquitto
from support.sync_keys import EMB, add_random_persons, content, keypair, synced_part

from tools.wait import wait_for

TOPIC = "fleet/gallery"
CHUNK = 4096


class Door:
    """A SyncReceiver as a service would run it, recording events and index swaps."""

    def __init__(self, tmp: Path, public: str, *, server: Mosquitto | None = None, url: str | None = None,
                 max_bytes: int = 64 << 20, resubscribe_seconds: float = 30.0, **sync_keys: Any) -> None:
        sync: dict[str, Any] = {"public_keys": [public], "max_bundle_bytes": max_bytes, **sync_keys}
        if server is not None:
            sync["topic"] = TOPIC
        if url is not None:
            sync.update(url=url, poll_seconds=3600)
        self.config: Config = parse_config({
            "device_id": "d1", "state_dir": str(tmp / "state"), "sync": sync,
            "mqtt": {"host": server.host, "port": server.port} if server else {"enabled": False},
        })
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.indexes: list[EmbeddingIndex] = []
        self.revisions: list[int] = []
        self.receiver = SyncReceiver(self.config, EMB, self._emit, self._swap, resubscribe_seconds=resubscribe_seconds)

    def _emit(self, type: str, **fields: Any) -> None:
        self.events.append((type, fields))

    def _swap(self, index: EmbeddingIndex, names: dict[str, str | None], revision: int) -> None:
        assert index.persons == len(names)
        assert revision > (self.revisions[-1] if self.revisions else 0)  # every apply is a newer local revision
        self.indexes.append(index)
        self.revisions.append(revision)

    def of(self, type: str) -> list[dict[str, Any]]:
        return [f for t, f in self.events if t == type]

    def wait_for(self, type: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        assert wait_for(lambda: len(self.of(type)) >= count, timeout=timeout), self.events
        return self.of(type)

    @property
    def gallery(self) -> Path:
        return self.config.gallery_path

    def __enter__(self) -> Door:
        self.receiver.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.receiver.stop()


@pytest.fixture
def admin(tmp_path: Path) -> Gallery:
    g = Gallery(tmp_path / "admin.db")
    add_random_persons(g, 60)
    return g


def target(server: Mosquitto) -> MqttTarget:
    return MqttTarget(host=server.host, port=server.port)


def test_publish_apply_redelivery_delta_and_stale_chunks(tmp_path, broker, admin) -> None:  # type: ignore[no-untyped-def]
    key, _, public = keypair()
    full = export_bundle(admin, key)
    with Door(tmp_path, public, server=broker) as door:
        assert wait_for(lambda: door.receiver.mqtt is not None and door.receiver.mqtt.connected)
        summary = publish_bundle(full.data, target(broker), TOPIC, chunk_bytes=CHUNK)
        assert summary["chunks"] == -(-len(full.data) // CHUNK) > 10
        updated = door.wait_for("gallery_updated")[0]
        assert updated["version"] == full.version and updated["persons"] == 60 and updated["templates"] == 60
        assert updated["bundle"] == full.sha256 and updated["source"] == "mqtt" and updated["seconds"] >= 0
        assert door.indexes[-1].persons == 60
        assert synced_part(content(door.gallery)) == synced_part(content(admin.path))
        # The same bundle again (an admin publishing twice; retained re-delivery on reconnect): nothing happens.
        publish_bundle(full.data, target(broker), TOPIC, chunk_bytes=CHUNK)
        # A delta, published as a single chunk this time.
        admin.remove("p00007")
        delta = export_bundle(admin, key, base=full.version)
        with Collector(broker, f"{TOPIC}/#") as seen:
            publish_bundle(delta.data, target(broker), TOPIC, chunk_bytes=1 << 20)
            door.wait_for("gallery_updated", 2)
            # The delta needs one chunk topic; the older bundle's other chunk topics are cleared (empty retained).
            cleared = seen.wait_for(lambda m: sum(1 for x in m if x.topic.startswith(f"{TOPIC}/chunk/")
                                                  and not x.payload) >= summary["chunks"] - 1)
        assert {m.topic for m in cleared if not m.payload and "/chunk/" in m.topic} == {chunk_topic(TOPIC, i)
                                                              for i in range(1, summary["chunks"])}
    assert [e["version"] for e in door.of("gallery_updated")] == [full.version, delta.version]
    assert door.of("gallery_rejected") == []
    assert content(door.gallery)["version"] == str(delta.version)
    assert not any((door.config.state_dir / "sync" / "chunks").iterdir())  # nothing left behind


def _retain(server: Mosquitto, messages: list[tuple[str, bytes]]) -> None:
    mqtt_publish.multiple([{"topic": t, "payload": p, "qos": 1, "retain": True} for t, p in messages],
                          hostname=server.host, port=server.port)


def test_duplicate_missing_stale_and_out_of_order_chunks(tmp_path, broker, admin) -> None:  # type: ignore[no-untyped-def]
    key, _, public = keypair()
    data = export_bundle(admin, key).data
    manifest = make_manifest(data, {"version": admin.version, "kind": "full"}, CHUNK)
    chunks = make_chunks(data, manifest)
    other = make_chunks(data[::-1], make_manifest(data[::-1], {}, CHUNK))  # chunks of some other bundle
    held_back = {2, len(chunks) - 1}
    order = [i for i in range(len(chunks)) if i not in held_back]
    random.Random(3).shuffle(order)
    messages = [(chunk_topic(TOPIC, i), chunks[i]) for i in order]
    messages += [(chunk_topic(TOPIC, i), chunks[i]) for i in order[:5]]  # duplicates
    messages += [(chunk_topic(TOPIC, 2), other[2])]  # a stale chunk where a missing one should be
    _retain(broker, [*messages, (manifest_topic(TOPIC), manifest.to_bytes())])
    with Door(tmp_path, public, server=broker) as door:
        store = door.receiver.mqtt._store  # type: ignore[union-attr]
        assert wait_for(lambda: store.manifest is not None and len(store.missing()) == 2, timeout=10)
        assert sorted(store.missing()) == sorted(held_back) and door.events == []
        mqtt_publish.single(chunk_topic(TOPIC, 0), b"garbage without a header", qos=1, hostname=broker.host,
                            port=broker.port)
        # The held-back chunks arrive late (the door is subscribed to exactly those topics now).
        _retain(broker, [(chunk_topic(TOPIC, i), chunks[i]) for i in held_back])
        door.wait_for("gallery_updated")
    assert door.of("gallery_rejected") == []


def test_resume_after_restart_fetches_only_missing_chunks(tmp_path, broker, admin, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    key, _, public = keypair()
    data = export_bundle(admin, key).data
    manifest = make_manifest(data, {"version": admin.version}, CHUNK)
    chunks = make_chunks(data, manifest)
    half = len(chunks) // 2
    _retain(broker, [(manifest_topic(TOPIC), manifest.to_bytes())]
            + [(chunk_topic(TOPIC, i), chunks[i]) for i in range(half)])
    with Door(tmp_path, public, server=broker) as first:
        store = first.receiver.mqtt._store  # type: ignore[union-attr]
        assert wait_for(lambda: store.manifest is not None and len(store.missing()) == len(chunks) - half)
    # Stopped (as by a power cut between chunks). The rest is published while the door is down.
    _retain(broker, [(chunk_topic(TOPIC, i), chunks[i]) for i in range(half, len(chunks))])
    assert ChunkStore(tmp_path / "state" / "sync" / "chunks").missing() == list(range(half, len(chunks)))
    received: list[int] = []

    def counting(payload: bytes) -> Any:
        chunk = parse_chunk(payload)
        received.append(chunk.index)
        return chunk

    monkeypatch.setattr(receiver_module, "parse_chunk", counting)
    with Door(tmp_path, public, server=broker) as second:
        second.wait_for("gallery_updated")
    assert sorted(received) == list(range(half, len(chunks)))  # the first half was not downloaded again


def test_bad_input_over_mqtt_is_reported_and_changes_nothing(tmp_path, broker, admin) -> None:  # type: ignore[no-untyped-def]
    key, _, public = keypair()
    good = export_bundle(admin, key)
    stranger_key, _, _ = keypair()
    with Door(tmp_path, public, server=broker, max_bytes=len(good.data) + 10) as door:
        assert wait_for(lambda: door.receiver.mqtt is not None and door.receiver.mqtt.connected)
        publish_bundle(good.data, target(broker), TOPIC, chunk_bytes=CHUNK)
        door.wait_for("gallery_updated")
        before = content(door.gallery)

        _retain(broker, [(manifest_topic(TOPIC), b'{"format": "nonsense"')])
        assert door.wait_for("gallery_rejected")[-1]["reason"] == "malformed"

        forged = bytearray(export_bundle(admin, key, version=good.version + 1).data)
        forged[PREFIX_BYTES + 30] ^= 1
        publish_bundle(bytes(forged), target(broker), TOPIC, chunk_bytes=CHUNK)
        assert door.wait_for("gallery_rejected", 2)[-1]["reason"] == "bad_signature"

        publish_bundle(export_bundle(admin, stranger_key).data, target(broker), TOPIC, chunk_bytes=CHUNK)
        assert door.wait_for("gallery_rejected", 3)[-1]["reason"] == "unknown_key"

        add_random_persons(admin, 100, start=1000, seed=9)
        big = export_bundle(admin, key)
        publish_bundle(big.data, target(broker), TOPIC, chunk_bytes=CHUNK)
        rejected = door.wait_for("gallery_rejected", 4)[-1]
        assert rejected["reason"] == "too_large" and rejected["bundle"] == big.sha256
        assert door.receiver.mqtt._store.manifest is None  # type: ignore[union-attr]  # nothing was downloaded
        assert content(door.gallery) == before
    reasons = [e["reason"] for e in door.of("gallery_rejected")]
    assert reasons == ["malformed", "bad_signature", "unknown_key", "too_large"]
    assert all("version" not in e for e in door.of("gallery_rejected"))  # none of them was authentic
    assert len(door.of("gallery_updated")) == 1


def test_rollback_over_mqtt(tmp_path, broker, admin) -> None:  # type: ignore[no-untyped-def]
    key, _, public = keypair()
    old = export_bundle(admin, key)
    add_random_persons(admin, 1, start=900, seed=5)
    new = export_bundle(admin, key)
    with Door(tmp_path, public, server=broker) as door:
        assert wait_for(lambda: door.receiver.mqtt is not None and door.receiver.mqtt.connected)
        publish_bundle(new.data, target(broker), TOPIC, chunk_bytes=CHUNK)
        door.wait_for("gallery_updated")
        publish_bundle(old.data, target(broker), TOPIC, chunk_bytes=CHUNK)
        rejected = door.wait_for("gallery_rejected")[0]
    assert rejected["reason"] == "rollback" and rejected["version"] == old.version
    assert content(door.gallery)["version"] == str(new.version)


def _forged_chunk(data: bytes, index: int) -> bytes:
    """What anyone allowed to publish on the topic can retain: a self-consistent chunk of the real bundle id, of
    the right size, with other bytes (chunks carry no signature of their own)."""
    manifest = make_manifest(data, {}, CHUNK)
    junk = b"\0" * len(parse_chunk(make_chunks(data, manifest)[index]).data)
    head = {"bundle": manifest.bundle, "index": index, "count": manifest.chunks, "size": manifest.size,
            "offset": index * CHUNK, "sha256": hashlib.sha256(junk).hexdigest()}
    return json.dumps(head).encode() + b"\n" + junk


def test_a_forged_chunk_does_not_hold_back_the_real_bundle(tmp_path, broker, admin) -> None:  # type: ignore[no-untyped-def]
    key, _, public = keypair()
    full = export_bundle(admin, key)
    publish_bundle(full.data, target(broker), TOPIC, chunk_bytes=CHUNK)
    _retain(broker, [(chunk_topic(TOPIC, 0), _forged_chunk(full.data, 0))])
    with Door(tmp_path, public, server=broker) as door:
        mqtt = door.receiver.mqtt
        assert mqtt is not None
        rejected = door.wait_for("gallery_rejected")[0]
        assert rejected["reason"] == "corrupt" and rejected["bundle"] == full.sha256 and "version" not in rejected
        # The bundle is not refused (its bytes are unknown), only this manifest is remembered as failed:
        assert door.receiver.wants(full.sha256)
        # publishing the same manifest again (what an attacker with publish rights would do) fetches nothing...
        stored: list[int] = []
        real_add = mqtt._store.add
        mqtt._store.add = lambda chunk: stored.append(chunk.index) or real_add(chunk)  # type: ignore[method-assign]
        publish_bundle(full.data, target(broker), TOPIC, chunk_bytes=CHUNK)
        wait_for(lambda: bool(stored), timeout=3, fail=False)  # gives it time to (wrongly) fetch again
        assert stored == []
        # ...and the admin's way out, a new export, has another manifest and is applied.
        newer = export_bundle(admin, key, version=full.version + 1)
        publish_bundle(newer.data, target(broker), TOPIC, chunk_bytes=CHUNK)
        assert door.wait_for("gallery_updated", timeout=15)[0]["bundle"] == newer.sha256
    assert len(door.of("gallery_rejected")) == 1
    assert synced_part(content(door.gallery)) == synced_part(content(admin.path))
    assert not any((door.config.state_dir / "sync" / "chunks").iterdir())


def _junk_bundle(seed: int, chunks: int = 4) -> tuple[bytes, list[tuple[str, bytes]]]:
    """An attacker's manifest and retained chunks: self-consistent junk that can never hash to its bundle id."""
    junk = random.Random(seed).randbytes(chunks * CHUNK)
    manifest = make_manifest(junk, {}, CHUNK)
    manifest = dataclasses.replace(manifest, bundle=hashlib.sha256(b"not %d" % seed).hexdigest())
    messages = []
    for i in range(chunks):
        piece = junk[i * CHUNK:(i + 1) * CHUNK]
        head = {"bundle": manifest.bundle, "index": i, "count": chunks, "size": len(junk), "offset": i * CHUNK,
                "sha256": hashlib.sha256(piece).hexdigest()}
        messages.append((chunk_topic(TOPIC, i), json.dumps(head).encode() + b"\n" + piece))
    return manifest.to_bytes(), messages


def _chunk_writes(door: Door) -> int:
    return sum(1 for t, f in door.events if t == "gallery_rejected" and f["reason"] == "corrupt")


def test_a_failed_manifest_is_not_fetched_again_even_after_a_restart(tmp_path, broker) -> None:  # type: ignore[no-untyped-def]
    """Junk chunks behind a retained manifest: fetched once, then never again on reconnection or restart."""
    _, _, public = keypair()
    manifest, chunks = _junk_bundle(1)
    _retain(broker, [*chunks, (manifest_topic(TOPIC), manifest)])
    with Door(tmp_path, public, server=broker, resubscribe_seconds=0.5) as door:
        assert door.wait_for("gallery_rejected")[0]["reason"] == "corrupt"
        mqtt = door.receiver.mqtt
        assert mqtt is not None
        stored: list[int] = []
        mqtt._store.add = lambda chunk: stored.append(chunk.index) or False  # type: ignore[method-assign]
        broker.restart()  # the door reconnects and is sent the retained manifest again
        _retain(broker, [*chunks, (manifest_topic(TOPIC), manifest)])
        assert wait_for(lambda: mqtt.connected, timeout=10)
        wait_for(lambda: bool(stored), timeout=3, fail=False)  # gives it time to (wrongly) fetch again
        assert stored == [] and _chunk_writes(door) == 1
    assert (door.config.state_dir / "sync" / "guard.json").stat().st_mode & 0o777 == 0o600
    again = Door(tmp_path, public, server=broker, resubscribe_seconds=0.5)  # the restarted door
    mqtt = again.receiver.mqtt
    assert mqtt is not None
    stored = []
    mqtt._store.add = lambda chunk: stored.append(chunk.index) or False  # type: ignore[method-assign]
    with again:
        assert wait_for(lambda: mqtt.connected, timeout=10)
        wait_for(lambda: bool(stored), timeout=3, fail=False)
        assert stored == [] and again.events == []


def test_manifests_cannot_make_the_door_download_more_than_its_hourly_budget(tmp_path, broker, admin) -> None:  # type: ignore[no-untyped-def]
    """A stream of distinct junk manifests (each a new bundle id) is cut off by sync.max_download_bytes_per_hour;
    the admin's real bundle then waits for the budget instead of being fetched at once."""
    _, _, public = keypair()
    budget = 1024 * 1024
    with Door(tmp_path, public, server=broker, max_download_bytes_per_hour=budget) as door:
        door.receiver._reports = ReportLimiter(burst=10**6)  # count every corrupt transfer
        mqtt = door.receiver.mqtt
        assert mqtt is not None and wait_for(lambda: mqtt.connected, timeout=10)
        for seed in range(100):  # 100 x 16 KiB = 1.6 MiB of junk offered
            manifest, chunks = _junk_bundle(100 + seed)
            _retain(broker, [*chunks, (manifest_topic(TOPIC), manifest)])
            if door.of("sync_download_paused"):
                break
            # a generous bound: it returns as soon as the transfer is done (a loaded machine fsyncs slowly)
            assert wait_for(lambda s=seed: _chunk_writes(door) > s or bool(door.of("sync_download_paused")),
                              timeout=60)
        paused = door.wait_for("sync_download_paused")[0]
        assert paused["max_download_bytes_per_hour"] == budget and paused["resume_in_seconds"] > 0
        assert mqtt.guard.available() < CHUNK
        assert _chunk_writes(door) * 4 * CHUNK <= budget  # never more than the budget was stored


def test_a_manifest_announcing_too_many_chunks_is_refused(tmp_path, broker) -> None:  # type: ignore[no-untyped-def]
    _, _, public = keypair()
    flood = {"format": "facegate-sync-manifest", "format_version": 1, "bundle": "ab" * 32, "size": 64 << 20,
             "chunks": 65536, "chunk_bytes": 1024}
    with Door(tmp_path, public, server=broker) as door:
        _retain(broker, [(manifest_topic(TOPIC), json.dumps(flood).encode())])
        rejected = door.wait_for("gallery_rejected")[0]
        assert door.receiver.mqtt._store.manifest is None  # type: ignore[union-attr]  # nothing subscribed or stored
    assert rejected["reason"] == "malformed" and "65536 chunks" in rejected["detail"]
    assert "at most 4096 chunks" in rejected["detail"]


def test_refused_bundles_and_bad_manifests_are_remembered_in_bounded_tables(tmp_path, broker) -> None:  # type: ignore[no-untyped-def]
    _, _, public = keypair()
    door = Door(tmp_path, public, server=broker)  # not started: only the bookkeeping is exercised
    door.receiver._reports = ReportLimiter(burst=10**6)  # this test counts every report; the next one the limit
    mqtt = door.receiver.mqtt
    assert mqtt is not None
    bogus = [f'{{"format": "bogus {i}"}}'.encode() for i in range(3 * REMEMBERED)]
    for payload in bogus:
        mqtt._on_manifest(payload)
    assert len(mqtt._bad_manifests) == REMEMBERED and len(door.receiver._decided) == REMEMBERED
    assert len(door.of("gallery_rejected")) == len(bogus)
    mqtt._on_manifest(bogus[-1])  # a recent one is still known: not reported again
    assert len(door.of("gallery_rejected")) == len(bogus)
    mqtt._on_manifest(bogus[0])  # the oldest was forgotten: reported again, the table stays bounded
    assert len(door.of("gallery_rejected")) == len(bogus) + 1
    assert len(mqtt._bad_manifests) == REMEMBERED and len(door.receiver._decided) == REMEMBERED


def test_a_flood_of_bogus_manifests_is_reported_at_a_bounded_rate(tmp_path, broker) -> None:  # type: ignore[no-untyped-def]
    _, _, public = keypair()
    door = Door(tmp_path, public, server=broker)
    now = [0.0]
    door.receiver._reports = ReportLimiter(clock=lambda: now[0])  # the shipped rates: burst 20, 20 a minute
    mqtt = door.receiver.mqtt
    assert mqtt is not None
    for i in range(60):
        mqtt._on_manifest(f'{{"format": "flood {i}"}}'.encode())
    assert len(door.of("gallery_rejected")) == 20
    now[0] = 3.0  # one report's worth of refill
    mqtt._on_manifest(b'{"format": "after the flood"}')
    last = door.of("gallery_rejected")[-1]
    assert len(door.of("gallery_rejected")) == 21 and last["suppressed"] == 40


# ------------------------------------------------------------------ HTTP


class BundleServer:
    """A tiny web server for one bundle file, with strong ETags from its SHA-256 (as an object store does)."""

    def __init__(self) -> None:
        self.body = b""
        self.status = 200
        self.requests: list[dict[str, str]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append(dict(self.headers))
                etag = '"' + hashlib.sha256(owner.body).hexdigest() + '"'
                if owner.status != 200:
                    self.send_error(owner.status)
                elif self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.end_headers()
                else:
                    self.send_response(200)
                    self.send_header("ETag", etag)
                    self.send_header("Content-Length", str(len(owner.body)))
                    self.end_headers()
                    self.wfile.write(owner.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/gallery.bundle"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def web() -> Iterator[BundleServer]:
    server = BundleServer()
    yield server
    server.close()


def test_http_pull_with_etag(tmp_path, web, admin) -> None:  # type: ignore[no-untyped-def]
    key, _, public = keypair()
    full = export_bundle(admin, key)
    web.body = full.data
    door = Door(tmp_path, public, url=web.url, max_bytes=len(full.data) + 4096)
    with door:
        door.wait_for("gallery_updated")  # the first poll happens at start
        http_source = door.receiver.http
        assert http_source is not None
        http_source.poll()
        assert web.requests[-1].get("If-None-Match") == '"' + hashlib.sha256(full.data).hexdigest() + '"'
        admin.remove("p00001")
        web.body = export_bundle(admin, key, base=full.version).data
        http_source.poll()
        assert door.wait_for("gallery_updated", 2)[-1]["kind"] == "delta"
        web.status = 500
        http_source.poll()  # a server error is logged, not reported as a bad bundle
        web.status = 200
        add_random_persons(admin, 10, start=2000, seed=12)
        web.body = export_bundle(admin, key).data
        http_source.poll()
        assert door.wait_for("gallery_rejected")[0]["reason"] == "too_large"
        http_source.poll()  # the same oversized file again: reported once
    assert [t for t, _ in door.events] == ["gallery_updated", "gallery_updated", "gallery_rejected"]
    assert synced_part(content(door.gallery))["persons"] != synced_part(content(admin.path))["persons"]
    # The ETag survives a restart: the next start asks with If-None-Match.
    restarted = Door(tmp_path, public, url=web.url, max_bytes=len(full.data) + 4096)
    with restarted:
        assert wait_for(lambda: len(web.requests) >= 7)
    assert web.requests[-1].get("If-None-Match")


def test_a_failing_apply_changes_nothing_and_is_retried(tmp_path, web, admin) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    key, _, public = keypair()
    full = export_bundle(admin, key)
    web.status = 404  # the poller finds nothing; this test hands the bundle over directly
    door = Door(tmp_path, public, url=web.url)
    with door:
        db = sqlite3.connect(str(door.gallery))
        db.execute("CREATE TRIGGER full_disk BEFORE INSERT ON templates BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        db.commit()
        before = content(door.gallery)
        first = door.receiver.process(full.data, "test")
        assert getattr(first, "reason", None) == "apply_failed"
        assert content(door.gallery) == before and door.indexes == []
        door.receiver.process(full.data, "test")  # not remembered as refused: tried (and reported) again
        assert [e["reason"] for e in door.of("gallery_rejected")] == ["apply_failed", "apply_failed"]
        db.execute("DROP TRIGGER full_disk")
        db.commit()
        db.close()
        assert door.receiver.process(full.data, "test") is not None
        assert door.wait_for("gallery_updated")[0]["version"] == full.version
    assert synced_part(content(door.gallery)) == synced_part(content(admin.path))
