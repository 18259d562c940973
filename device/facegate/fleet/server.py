"""``facegate fleet serve``: the fleet server's parts wired together (ingest, doors, publisher, web console).

It keeps its state in ``state_dir`` (0700): the admin gallery ``admin.db``, the SQLite journal ``fleet.db``
(unless ``[storage] url`` names PostgreSQL), the accounts, and two Ed25519 private keys made at first start
(0600): ``sync.key`` signs gallery bundles, ``command.key`` signs door commands. Their public halves are written
next to them (``sync.pub``, ``command.pub``) for the doors' ``[sync] public_keys`` and ``[commands]
ed25519_public_keys`` (docs/fleet.md, "Keys and rotation").
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from facegate import __version__
from facegate.events.commands import sign_command
from facegate.events.mqtt_client import MqttTarget
from facegate.fleet.config import FleetConfig
from facegate.fleet.doors import DoorRegistry
from facegate.fleet.ingest import Ingest
from facegate.fleet.people import PeopleEditor
from facegate.fleet.publisher import Publisher
from facegate.fleet.store import FleetStore, open_store
from facegate.fleet.web import FleetApp, FleetServer
from facegate.sync.keys import generate_keypair, load_private_key, public_key_b64
from facegate.vision.models import Manifest
from facegate.vision.pipeline import FacePipeline, PipelineOptions
from facegate.vision.quality import QualityGates

log = logging.getLogger(__name__)

__all__ = ["FleetService", "load_or_create_key"]

MAINTENANCE_SECONDS = 10.0
RETENTION_EVERY_SECONDS = 3600.0


def load_or_create_key(private: Path) -> Ed25519PrivateKey:
    """The key at ``private``, made (0600, with its ``.pub`` beside it) when there is none yet."""
    if not private.exists():
        generate_keypair(private, private.with_suffix(".pub"))
        log.info("made a new key %s (public half in %s)", private, private.with_suffix(".pub"))
    mode = private.stat().st_mode & 0o777
    if mode & 0o077:
        os.chmod(private, 0o600)
        log.warning("%s was mode %o; set to 0600", private, mode)
    return load_private_key(private)


class FleetService:
    def __init__(self, config: FleetConfig, store: FleetStore | None = None) -> None:
        self.config = config
        config.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(config.state_dir, 0o700)
        self.sync_key = load_or_create_key(config.sync_key_path)
        self.command_key = load_or_create_key(config.command_key_path)
        self.store = store or open_store(config.storage_url)
        self.registry = DoorRegistry(self.store, config.doors.stale_seconds, config.doors.allow)
        self.target = MqttTarget.from_config(config.mqtt)
        self.gallery_lock = threading.RLock()
        self.people = PeopleEditor(config.gallery_path, self._pipeline, self.gallery_lock, self._changed)
        self.publisher = Publisher(self.people, self.sync_key, self.target, config.sync.topic_prefix, self.store,
                                   chunk_bytes=config.sync.chunk_bytes, timeout=config.sync.publish_timeout_seconds,
                                   workers=config.sync.publish_workers)
        self.registry.on_sync.append(self.publisher.door_reported)
        self.registry.on_new_door.append(lambda door: self.publisher.changed())
        self.ingest = Ingest(self.target, config.client_id, config.mqtt.topic_prefix, self.store, self.registry)
        self.app = FleetApp(config, self.store, self.registry, self.people, self.send_command,
                            self.publisher.regroup, self.system)
        self.http = FleetServer(self.app)
        self.stop_event = threading.Event()
        self._maintenance = threading.Thread(target=self._maintain, name="facegate-fleet-maintenance", daemon=True)

    def _changed(self) -> None:
        self.publisher.changed()

    def _pipeline(self) -> FacePipeline:
        m = self.config.models
        options = PipelineOptions(threads=m.threads, detector=m.detector, embedder=m.embedder,
                                  five_point=m.five_point, flip_fusion=m.flip_fusion,
                                  gates=QualityGates(**self.config.quality.model_dump()))
        return FacePipeline(Manifest.load(m.dir), options)

    @property
    def url(self) -> str:
        scheme = "https" if self.config.web.tls_cert_file else "http"
        return f"{scheme}://{self.config.web.bind}:{self.http.port}"

    def start(self) -> None:
        self.ingest.start()
        self.publisher.start()
        self.http.start()
        self._maintenance.start()
        self.publisher.changed()
        log.info("fleet console on %s; journal in %s", self.url, self.store.backend)

    def stop(self) -> None:
        self.stop_event.set()
        self.http.stop()
        self.app.close()
        self.publisher.stop()
        self.ingest.stop()
        self._maintenance.join(timeout=5)
        self.people.close()
        self.store.close()

    def run(self) -> None:
        self.start()
        try:
            self.stop_event.wait()
        finally:
            self.stop()

    def _maintain(self) -> None:
        last_purge = 0.0
        while not self.stop_event.wait(MAINTENANCE_SECONDS):
            try:
                self.registry.check_stale()
                if time.monotonic() - last_purge > RETENTION_EVERY_SECONDS:
                    last_purge = time.monotonic()
                    gone = self.store.purge_events(time.time() - self.config.storage.retention_days * 86400)
                    if gone:
                        log.info("journal retention: %d events older than %g days deleted", gone,
                                 self.config.storage.retention_days)
            except Exception:
                log.exception("fleet maintenance failed")

    def send_command(self, door: str, action: str) -> dict[str, Any]:
        """A signed command (the door's Ed25519 format) on the door's ``lock/set``; it answers with events."""
        command = sign_command(action, door, ed25519_private_key=self.command_key)
        topic = f"{self.config.mqtt.topic_prefix}/{door}/lock/set"
        sent = self.ingest.publish(topic, json.dumps(command).encode())
        return {"door_id": door, "action": action, "sent": sent, "nonce": command["nonce"]}

    def system(self) -> dict[str, Any]:
        s = self.ingest.stats
        return {
            "version": __version__, "storage": self.store.backend, "events": self.store.count_events(),
            "sync_public_key": public_key_b64(self.sync_key.public_key()),
            "command_public_key": public_key_b64(self.command_key.public_key()),
            "sync_topic_prefix": self.config.sync.topic_prefix, "mqtt_prefix": self.config.mqtt.topic_prefix,
            "gallery_version": self.people.gallery.version,
            "ingest": {"connected": s.connected, "received": s.received, "stored": s.stored,
                       "duplicates": s.duplicates, "refused": s.refused, "store_errors": s.store_errors,
                       "last_error": s.last_error},
            "publisher": {"published": self.publisher.published, "last_error": self.publisher.last_error},
        }
