"""Owner-only state whatever the umask: the state directory 0700, every file in it 0600 (SQLite's -wal/-shm
included), exported bundles and sync chunks 0600. Run under umask 022, the usual one outside systemd's unit."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from facegate.base.private_files import private_sqlite
from facegate.cli import main
from facegate.config import parse_config
from facegate.gallery.store import Gallery
from facegate.service import Service
from facegate.sync.chunks import ChunkStore, make_chunks, make_manifest, parse_chunk
from facegate.sync.export import export_bundle
from facegate.sync.mqtt import MqttTarget, publish_bundle
from gpiozero.pins.mock import MockFactory
from support.broker import Mosquitto
from support.scenes import write_frames
from support.sync_keys import EMB, add_random_persons, keypair

from tools.wait import wait_for


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    """Every entry under ``root`` (itself included) -> its permission bits."""
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        out[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return out


def loose(root: Path) -> dict[str, str]:
    return {name: oct(mode) for name, mode in modes(root).items()
            if mode != (0o700 if (root / name).is_dir() else 0o600)}


def test_a_running_door_keeps_its_state_owner_only_under_umask_022(tmp_path, broker: Mosquitto, photos,  # type: ignore[no-untyped-def]
                                                                   pipeline, umask_022) -> None:
    key, _, public = keypair()
    admin = Gallery(tmp_path / "admin.db")
    add_random_persons(admin, 3, emb=pipeline.embedder_sha256)
    bundle = export_bundle(admin, key)
    admin.close()
    state = tmp_path / "state"
    state.mkdir(mode=0o755)  # left by an older version, or made by hand
    (state / "outbox.db").touch(mode=0o644)
    frames = write_frames(tmp_path / "frames", photos, [("bg", 3)])
    config = parse_config({
        "device_id": "files1", "state_dir": str(state),
        "camera": {"source": f"replay:{frames}", "fps": 10, "loop": True},
        "door": {"relay_pin": 17, "unlock_seconds": 0.3},
        "mqtt": {"host": broker.host, "port": broker.port, "discovery": False},
        "commands": {"hmac_key": "00" * 32},
        "liveness": {"enabled": False},
        "sync": {"public_keys": [public], "topic": "fleet/files"},
    })
    service = Service(config, pin_factory=MockFactory())
    applied: list[dict[str, object]] = []
    service.emitter.add_listener(lambda e: applied.append(e) if e["type"] == "gallery_updated" else None)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: service.sync is not None and service.sync.mqtt is not None
                          and service.sync.mqtt.connected and service.communicator.connected, timeout=20)
        publish_bundle(bundle.data, MqttTarget(broker.host, broker.port), "fleet/files")
        assert wait_for(lambda: bool(applied), timeout=20)
        assert wait_for(lambda: service.stats.frames > 5, timeout=20)
        names = set(modes(state))
        # While running, SQLite's side files exist: they are what leaked names at 0644.
        assert {"outbox.db-wal", "gallery.db-wal", "command_nonces.db-wal", "journal.db-wal", "sync"} <= names
        assert loose(state) == {}
    finally:
        service.stop_event.set()
        thread.join(20)
    assert loose(state) == {}


def test_exported_bundles_and_sync_chunks_are_owner_only_under_umask_022(tmp_path: Path, umask_022) -> None:  # type: ignore[no-untyped-def]
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    assert main(["gallery", "keygen", "--private", str(key_dir / "admin.key"),
                 "--public", str(key_dir / "admin.pub")]) == 0
    with Gallery(tmp_path / "admin.db") as admin:
        add_random_persons(admin, 3, emb=EMB)
    out = tmp_path / "out" / "gallery.bundle"
    out.parent.mkdir()
    assert main(["gallery", "export", "--gallery", str(tmp_path / "admin.db"), "--key", str(key_dir / "admin.key"),
                 "--out", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "admin.db").stat().st_mode) == 0o600

    data = out.read_bytes()
    manifest = make_manifest(data, {"version": 1}, chunk_bytes=1024)
    store = ChunkStore(tmp_path / "sync" / "chunks")
    store.begin(manifest)
    for payload in make_chunks(data, manifest)[:2]:
        store.add(parse_chunk(payload))
    assert loose(tmp_path / "sync") == {".": oct(0o755)}  # made by the test itself; below it all is private


def test_making_an_open_database_private_keeps_this_processs_locks_on_it(tmp_path: Path) -> None:
    """POSIX locks (SQLite's) belong to the process and die with *any* descriptor of the file that it closes:
    private_sqlite on a database another connection here has open must not open and close it."""
    import fcntl

    db = tmp_path / "gallery.db"
    db.write_bytes(b"")
    fd = os.open(db, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH)  # what a reading SQLite connection of this process holds
        private_sqlite(db)
        probe = ("import fcntl, os, sys\n"
                 "fd = os.open(sys.argv[1], os.O_RDWR)\n"
                 "try:\n    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept OSError:\n    sys.exit(0)\n"
                 "sys.exit(1)\n")
        child = subprocess.run([sys.executable, "-c", probe, str(db)], timeout=30)
        assert child.returncode == 0, "another process could lock the file exclusively: our shared lock was lost"
        assert stat.S_IMODE(db.stat().st_mode) == 0o600
    finally:
        os.close(fd)
