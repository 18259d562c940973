"""Every change becomes a signed bundle on each door's own gallery topic, published without anyone asking.

Per door D (topic ``<sync.topic_prefix>/<D>``, the door's ``[sync] topic``) the publisher keeps what it
published and what D confirmed (``gallery_updated`` events, or D's status naming the published version). When the
admin gallery's version moves past what D was given, D gets a **delta** from the version it confirmed (the
persons changed since then that D may hold, and deletes for the others), or a **full** snapshot when nothing is
confirmed yet or D refused a delta (``base_mismatch``). Because the base is what the door confirmed, a door that
was offline during several changes gets one delta covering all of them when it returns (the retained manifest
on its topic is always the newest bundle for it).

The bundles are the door's own format, made by :func:`facegate.sync.export.export_bundle` and published by
:func:`facegate.sync.mqtt.publish_bundle` (the ``facegate gallery export`` / ``publish`` code paths), signed with
the fleet's Ed25519 key (0600 in the fleet's state directory).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from facegate.errors import FacegateError
from facegate.fleet.doors import SyncReport
from facegate.fleet.people import PeopleEditor, allowed_at
from facegate.fleet.store import FleetStore
from facegate.sync.bundle import PersonRecord
from facegate.sync.export import ExportResult, export_bundle
from facegate.sync.mqtt import MqttTarget, publish_bundle

log = logging.getLogger(__name__)

__all__ = ["Publisher"]

RETRY_SECONDS = 2.0


@dataclass(frozen=True)
class Job:
    door_id: str
    topic: str
    bundle: ExportResult


class Publisher:
    def __init__(self, people: PeopleEditor, key: Ed25519PrivateKey, target: MqttTarget, topic_prefix: str,
                 store: FleetStore, *, chunk_bytes: int, timeout: float, workers: int) -> None:
        self.people, self.key, self.target, self.prefix, self.store = people, key, target, topic_prefix, store
        self.chunk_bytes, self.timeout = chunk_bytes, timeout
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="facegate-fleet-publish")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="facegate-fleet-publisher", daemon=True)
        self.last_error: str | None = None
        self.published = 0
        self.on_published: list[Callable[[str, ExportResult], None]] = []

    def topic(self, door_id: str) -> str:
        return f"{self.prefix}/{door_id}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def changed(self) -> None:
        """Something in the admin gallery or the doors changed: publish what is due now."""
        self._wake.set()

    def door_reported(self, report: SyncReport) -> None:
        """A door refused a delta it cannot apply: it gets a full snapshot next."""
        if not report.applied and report.reason in ("base_mismatch", "rollback"):
            self.store.update_sync(report.door_id, needs_full=1)
            self.changed()

    def regroup(self, door_id: str) -> None:
        """The door's group changed, so which persons it holds does too: a new version, and a full snapshot for it.

        A full snapshot at the version the door already holds would be refused as a rollback, hence the bump."""
        with self.people.lock, self.people.gallery.transaction():
            pass
        self.store.update_sync(door_id, needs_full=1)
        self.changed()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(RETRY_SECONDS)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.publish_due()
            except Exception as exc:
                self.last_error = str(exc)
                log.exception("fleet publisher failed; retrying")

    # ------------------------------------------------------------------ what is due

    def publish_due(self) -> list[str]:
        """Export and publish a bundle to every door that is behind; returns the doors published to."""
        jobs = self._jobs()
        if not jobs:
            return []
        futures = {job.door_id: self._pool.submit(self._publish, job) for job in jobs}
        done = []
        for door, future in futures.items():
            try:
                future.result()
                done.append(door)
            except FacegateError as exc:
                self.last_error = f"door {door}: {exc}"
                log.warning("publishing to door %s failed: %s (retrying)", door, exc)
        return done

    def _jobs(self) -> list[Job]:
        doors = {d["door_id"]: d["door_group"] for d in self.store.doors()}
        states = self.store.sync_states()
        jobs = []
        with self.people.lock:
            gallery = self.people.gallery
            if gallery.embedder_sha256 is None:  # nobody was ever enrolled: there is nothing a door could apply
                return []
            # A door that holds a newer version than this gallery (an admin backup restored) would refuse
            # everything as a rollback: move this gallery's counter past it first.
            highest = max((s["applied_version"] or 0 for s in states.values()), default=0)
            if highest >= gallery.version and any(
                    s["applied_version"] == highest and (s["applied_bundle"] or "") != (s["published_bundle"] or "")
                    for s in states.values()):
                with gallery.transaction(set_version=highest + 1):
                    pass
            version = gallery.version
            since = int(gallery.meta("changes_since") or 0)
            for door_id, group in doors.items():
                state = states.get(door_id) or {}
                applied, full = state.get("applied_version"), bool(state.get("needs_full"))
                if state.get("published_version") == version and (not full or state.get("published_kind") == "full"):
                    continue
                if applied == version and not full:
                    continue
                base = applied if (not full and applied is not None and since <= applied < version) else None

                def include(person: PersonRecord, door: str = door_id, g: str | None = group) -> bool:
                    return allowed_at(person, door, g)

                bundle = export_bundle(gallery, self.key, base=base, include=include)
                jobs.append(Job(door_id, self.topic(door_id), bundle))
        return jobs

    def _publish(self, job: Job) -> dict[str, Any]:
        result = publish_bundle(job.bundle.data, self.target, job.topic, chunk_bytes=self.chunk_bytes,
                                timeout=self.timeout)
        self.store.update_sync(job.door_id, published_version=job.bundle.version, published_bundle=job.bundle.sha256,
                               published_kind=job.bundle.kind, published_at=time.time())
        self.published += 1
        log.info("door %s: published %s bundle version %d (%d persons, %d deletes, %d bytes)", job.door_id,
                 job.bundle.kind, job.bundle.version, job.bundle.persons, job.bundle.deletes, len(job.bundle.data))
        for fn in self.on_published:
            fn(job.door_id, job.bundle)
        return result
