"""The door's sync receiver: fetch signed bundles (MQTT and/or HTTP), apply them, swap the index, report.

Threads, none of them the frame loop's:

* the MQTT source runs on its own paho client (id ``facegate-<device_id>-sync``), not on the event
  transport's: multi-megabyte chunk messages must not sit in front of door events, and its subscriptions
  come and go with the bundle being assembled, which the event transport knows nothing about;
* the HTTP source polls on its own thread;
* one worker thread applies bundles handed over by the MQTT source and re-requests missing chunks.

Every bundle goes through :meth:`SyncReceiver.process` under one lock: verify (signature first), apply in
one SQLite transaction, build the new :class:`~facegate.gallery.index.EmbeddingIndex`, hand it to the
service (``on_applied``, a reference swap), then emit ``gallery_updated``. Any failure emits
``gallery_rejected`` with a reason and leaves gallery and index as they were; nothing raises out of here.

A bundle that was already applied, or already refused while the door was at the same version, is skipped
silently, because retained messages are delivered again on every reconnection. Only a bundle whose bytes are
known (they hash to its id) is remembered as refused. MQTT chunks that do not add up to the announced bundle
say nothing about the bundle itself, but they do say the manifest cannot be trusted to lead anywhere: that
manifest is remembered as failed (:mod:`facegate.sync.guard`) and fetched again only when it is published
again live; what manifests can make the door download is capped per hour.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from http.client import HTTPException
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as paho

from facegate import __version__
from facegate.base.private_files import private_dir, write_private
from facegate.config import Config, SyncConfig
from facegate.events.mqtt_client import connect_async
from facegate.events.ratelimit import ReportLimiter
from facegate.gallery.index import EmbeddingIndex
from facegate.gallery.store import Gallery
from facegate.sync.apply import ApplyResult, SyncState, apply_bundle, sync_state
from facegate.sync.bundle import BundleError, Reason, verify_bundle
from facegate.sync.chunks import (
    MAX_CHUNK_HEADER_BYTES,
    Chunk,
    ChunkStore,
    Manifest,
    chunk_topic,
    manifest_topic,
    parse_chunk,
    parse_manifest,
)
from facegate.sync.guard import SyncGuard, manifest_digest
from facegate.sync.keys import public_keys_by_id
from facegate.sync.mqtt import MqttTarget, new_client

__all__ = ["AppliedCallback", "SyncReceiver"]

log = logging.getLogger(__name__)

#: ``on_applied(index, names, revision)``: the new index, person id -> name map and the gallery revision they
#: were read at, right after the commit.
AppliedCallback = Callable[[EmbeddingIndex, dict[str, str | None], int], None]
Emit = Callable[..., object]

_V = TypeVar("_V")

HTTP_TIMEOUT_SECONDS = 30.0
#: How many refused bundles / bad manifests are remembered (not to re-report them on every re-delivery).
#: Bounded because anyone who can publish on the topic can send endless distinct ones; forgetting the oldest
#: only means it would be fetched and reported again if it came back.
REMEMBERED = 64


def _remember(table: OrderedDict[str, _V], key: str, value: _V) -> None:
    """Insert or refresh ``key``, dropping the oldest entries beyond :data:`REMEMBERED`."""
    table[key] = value
    table.move_to_end(key)
    while len(table) > REMEMBERED:
        table.popitem(last=False)


class SyncReceiver:
    def __init__(
        self,
        config: Config,
        embedder_sha256: str,
        emit: Emit,
        on_applied: AppliedCallback | None = None,
        *,
        resubscribe_seconds: float = 30.0,
        embedder_dim: int | None = None,
    ) -> None:
        self.config: SyncConfig = config.sync
        self._device_id = config.device_id
        self._gallery_path = config.gallery_path
        self._embedder = embedder_sha256
        self._embedder_dim = embedder_dim  # every template is checked for it (facegate.gallery.templates)
        self._emit = emit
        self._on_applied = on_applied
        self._keys = public_keys_by_id(self.config.public_keys)
        private_dir(config.state_dir)
        self._dir = private_dir(config.state_dir / "sync")
        self._lock = threading.Lock()  # one bundle at a time; guards _gallery, _state, _decided
        self._gallery: Gallery | None = None
        self._state = SyncState(0, None)
        self._decided: OrderedDict[str, int] = OrderedDict()  # bundle sha -> sync version when it was refused
        self._busy: set[str] = set()  # handed to the worker, not yet decided
        self._reports = ReportLimiter()
        self._jobs: queue.SimpleQueue[tuple[bytes, str, Callable[[], None]] | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.mqtt: MqttSource | None = None
        self.http: HttpSource | None = None
        if self.config.topic is not None:
            self.mqtt = MqttSource(self, MqttTarget.from_config(config.mqtt), f"facegate-{config.device_id}-sync",
                                   self.config.topic, ChunkStore(self._dir / "chunks"), self.config.max_bundle_bytes,
                                   resubscribe_seconds,
                                   guard=SyncGuard(self._dir / "guard.json", self.config.max_download_bytes_per_hour))
        if self.config.url is not None:
            self.http = HttpSource(self, self.config.url, self.config.poll_seconds, self._dir / "http.json")

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._gallery = Gallery(self._gallery_path)
        self._state = sync_state(self._gallery)
        log.info("fleet sync: gallery at sync version %d; sources: %s", self._state.version,
                 ", ".join(s for s, on in (("mqtt", self.mqtt), ("http", self.http)) if on))
        self._spawn(self._run_worker, "facegate-sync-worker")
        if self.mqtt is not None:
            self.mqtt.start()
        if self.http is not None:
            self._spawn(self.http.run, "facegate-sync-http")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop fetching; an apply in progress finishes (or, if the process dies, SQLite rolls it back)."""
        self._stop.set()
        self._jobs.put(None)  # wake the worker now rather than at its next poll
        if self.mqtt is not None:
            self.mqtt.stop()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            if self._gallery is not None:
                self._gallery.close()
                self._gallery = None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early (True) when the receiver stops."""
        return self._stop.wait(seconds)

    @property
    def state(self) -> SyncState:
        return self._state

    # ------------------------------------------------------------------ decisions

    def wants(self, bundle_sha256: str) -> bool:
        """Worth fetching: not applied, not being applied, not refused at the current version."""
        state = self._state
        return (bundle_sha256 != state.bundle_sha256 and bundle_sha256 not in self._busy
                and self._decided.get(bundle_sha256) != state.version)

    def submit(self, data: bytes, source: str, done: Callable[[], None]) -> None:
        """Queue a complete bundle for the worker; ``done()`` is called once it was applied or refused."""
        self._busy.add(hashlib.sha256(data).hexdigest())
        self._jobs.put((data, source, done))

    def process(self, data: bytes, source: str) -> ApplyResult | BundleError | None:
        """Verify and apply one bundle, reporting the outcome as an event; never raises.

        Returns the result, the refusal, or None when the bundle was skipped (already applied, not running).
        """
        started = time.perf_counter()
        sha = hashlib.sha256(data).hexdigest()
        with self._lock:
            gallery = self._gallery
            if gallery is None:
                log.warning("sync receiver is not running; bundle %s ignored", sha[:12])
                return None
            if sha == self._state.bundle_sha256:
                log.debug("bundle %s is already applied", sha[:12])
                return None
            try:
                bundle = verify_bundle(data, self._keys, self.config.max_bundle_bytes)
                result = apply_bundle(gallery, bundle, self._embedder, self._embedder_dim)
            except BundleError as exc:
                self._reject_locked(exc, sha, source)
                return exc
            except Exception as exc:  # e.g. disk full: the transaction rolled back, the door goes on
                log.exception("applying bundle %s failed", sha[:12])
                failure = BundleError("apply_failed", f"{type(exc).__name__}: {exc}")
                self._reject_locked(failure, sha, source)
                return failure
            self._state = sync_state(gallery)
            try:
                with gallery.snapshot() as db:  # index, names and revision of one committed state
                    revision = gallery.revision
                    index = gallery.build_index()
                    names = {str(r[0]): r[1] for r in db.execute("SELECT id, name FROM persons")}
                if self._on_applied is not None:
                    self._on_applied(index, names, revision)
            except Exception:
                log.exception("bundle %s applied but the new index could not be loaded", sha[:12])
        seconds = round(time.perf_counter() - started, 3)
        log.info("gallery version %d applied from %s (%s, %d persons, %d templates) in %.2f s", result.version,
                 source, result.kind, result.persons, result.templates, seconds)
        self._emit("gallery_updated", version=result.version, persons=result.persons, templates=result.templates,
                   seconds=seconds, kind=result.kind, bundle=sha, source=source)
        return result

    def reject(self, reason: Reason, detail: str, bundle_sha256: str, source: str, *, remember: bool = True) -> None:
        """Refuse a bundle before it could be verified (too large per its manifest, malformed manifest, ...).

        ``remember=False`` only reports: the bundle stays wanted (a corrupt transfer is not a verdict on it).
        """
        with self._lock:
            self._reject_locked(BundleError(reason, detail), bundle_sha256, source, remember=remember)

    def _reject_locked(self, exc: BundleError, sha: str, source: str, *, remember: bool = True) -> None:
        if self._decided.get(sha) == self._state.version:
            return
        if remember and exc.reason != "apply_failed":  # a local failure (disk full, ...) is worth another try
            _remember(self._decided, sha, self._state.version)
        held_back = self._reports.admit()  # distinct bogus manifests are cheap to send: report at a bounded rate
        if held_back is None:
            log.debug("gallery bundle %s from %s rejected (not reported: too many refusals): %s", sha[:12], source,
                      exc)
            return
        log.warning("gallery bundle %s from %s rejected: %s", sha[:12], source, exc)
        fields: dict[str, Any] = {"reason": exc.reason, "bundle": sha, "source": source, "detail": exc.detail[:300],
                                  "suppressed": held_back}
        if exc.version is not None:
            fields["version"] = exc.version
        self._emit("gallery_rejected", **fields)

    def report_pause(self, bundle: str, missing_chunks: int, limit: int, resume_seconds: float) -> None:
        """``sync_download_paused``: the hourly download budget is spent (rate-limited like refusals)."""
        if self._reports.admit() is None:
            return
        self._emit("sync_download_paused", bundle=bundle, missing_chunks=missing_chunks,
                   max_download_bytes_per_hour=limit, resume_in_seconds=round(resume_seconds, 1))

    def _run_worker(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._jobs.get(timeout=1.0)
            except queue.Empty:
                job = None
            if job is not None:
                data, source, done = job
                try:
                    self.process(data, source)
                finally:
                    self._busy.discard(hashlib.sha256(data).hexdigest())
                    try:
                        done()
                    except Exception:
                        log.exception("sync clean-up failed")
            if self.mqtt is not None:
                try:
                    self.mqtt.tick(time.monotonic())
                except Exception:
                    log.exception("sync MQTT housekeeping failed")


class MqttSource:
    """Assembles bundles from ``<topic>/manifest`` and ``<topic>/chunk/<i>`` (see :mod:`facegate.sync.chunks`).

    Only the manifest topic is subscribed permanently. When it names a bundle the door wants, the topics of
    the chunks not yet on disk are subscribed (the broker then sends their retained messages) and
    unsubscribed once the bundle is complete, so a reconnection does not download the whole gallery again.
    If no chunk arrives for ``resubscribe_seconds`` the missing ones are subscribed again (which makes the
    broker re-send retained messages): that covers a publisher that was still uploading and a broker restart.
    Chunks that do not hash to the announced bundle are all dropped and the manifest is remembered as failed
    (``guard``): it is never fetched again, retained or published anew.
    Every chunk stored is charged to the guard's hourly budget; when it runs dry the chunk topics are
    unsubscribed until it has refilled enough for the next chunk (``sync_download_paused``).
    """

    def __init__(self, receiver: SyncReceiver, target: MqttTarget, client_id: str, topic: str, store: ChunkStore,
                 max_bytes: int, resubscribe_seconds: float, *,
                 guard: SyncGuard) -> None:
        self._receiver = receiver
        self._target = target
        self._topic = topic
        self._chunk_prefix = f"{topic}/chunk/"
        self._store = store
        self._max_bytes = max_bytes
        self._resubscribe = resubscribe_seconds
        self._lock = threading.Lock()
        self._subscribed: set[str] = set()
        self._last_progress = time.monotonic()
        self._handed_over: str | None = None
        self._connected = False
        self._bad_manifests: OrderedDict[str, None] = OrderedDict()
        self.guard = guard
        self._paused_until: float | None = None  # set while the hourly download budget is spent
        self.client = new_client(target, client_id)
        self.client.reconnect_delay_set(1, 30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_log = lambda c, u, level, msg: log.debug("paho: %s", msg)

    @property
    def connected(self) -> bool:
        return self._connected

    def start(self) -> None:
        with self._lock:
            m = self._store.manifest
            if m is not None and (not self._receiver.wants(m.bundle) or self.guard.failed(manifest_digest(m))):
                self._store.discard()
            elif self._store.complete:  # every chunk arrived before the last stop: apply it now
                self._hand_over()
        # No chunk (or manifest) can be larger than the largest bundle we accept: the broker drops bigger ones.
        connect_async(self.client, self._target, self._max_bytes + MAX_CHUNK_HEADER_BYTES + 4096)  # + framing
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self._connected = False
        self.guard.save()  # the budget spent in this run is not handed out again by a restart

    # -- paho callbacks (network thread): never let an exception escape

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.error("sync: broker refused the connection: %s", reason)
            return
        self._connected = True
        try:
            client.subscribe(manifest_topic(self._topic), qos=1)
            with self._lock:
                self._subscribed.clear()  # clean session: the broker forgot them
                if self._store.manifest is not None and not self._store.complete:
                    self._request_missing()
        except Exception:
            log.exception("sync: subscribing failed")

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self._connected and not self._receiver.stopping:
            log.warning("sync: MQTT connection lost (%s); resuming after reconnecting", reason)
        self._connected = False

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            if message.topic == manifest_topic(self._topic):
                self._on_manifest(bytes(message.payload))
            elif message.topic.startswith(self._chunk_prefix):
                self._on_chunk(bytes(message.payload))
        except Exception:
            log.exception("sync: error handling %s", message.topic)

    def _on_manifest(self, payload: bytes) -> None:
        if not payload:
            return  # retained manifest cleared
        try:
            manifest = parse_manifest(payload)
        except BundleError as exc:
            digest = hashlib.sha256(payload).hexdigest()
            if digest not in self._bad_manifests:
                _remember(self._bad_manifests, digest, None)
                self._receiver.reject(exc.reason, f"manifest: {exc.detail}", digest, "mqtt")
            return
        with self._lock:
            if not self._receiver.wants(manifest.bundle):
                current = self._store.manifest
                if current is not None and current.bundle == manifest.bundle and self._handed_over is None:
                    self._store.discard()
                    self._unsubscribe_all()
                return
            if manifest.size > self._max_bytes:
                self._receiver.reject("too_large", f"manifest announces {manifest.size} bytes, more than "
                                      f"sync.max_bundle_bytes = {self._max_bytes}", manifest.bundle, "mqtt")
                return
            if manifest.chunk_bytes > self.guard.capacity:
                self._receiver.reject("too_large", f"manifest announces chunks of {manifest.chunk_bytes} bytes, more "
                                      f"than sync.max_download_bytes_per_hour = {self.guard.capacity:.0f}",
                                      manifest.bundle, "mqtt")
                return
            if self.guard.failed(manifest_digest(manifest)):  # retained again or re-published: never again
                log.debug("sync: manifest of bundle %s failed before; not fetched again", manifest.bundle[:12])
                return
            new_bundle = self._store.manifest != manifest
            self._store.begin(manifest)
            self._last_progress = time.monotonic()
            log.info("sync: bundle %s (version %s, %d bytes, %d chunks) announced; %d chunk(s) to fetch",
                     manifest.bundle[:12], manifest.version, manifest.size, manifest.chunks,
                     self._store.missing_count)
            if self._store.complete:
                self._unsubscribe_all()
                self._hand_over()
            else:
                # A new bundle re-uses the chunk topics of the old one, whose messages we may have seen (and
                # ignored) while still subscribed: ask again. The same bundle re-announced: only what is new.
                self._request_missing(resend=new_bundle)

    def _on_chunk(self, payload: bytes) -> None:
        if not payload:
            return  # a cleared stale chunk topic
        try:
            chunk = parse_chunk(payload)
        except BundleError as exc:
            log.warning("sync: ignoring a chunk message: %s", exc)
            return
        with self._lock:
            m = self._store.manifest
            if m is None or chunk.bundle != m.bundle or self._handed_over == m.bundle:
                return  # a stale chunk of another bundle, or one we already have
            if self._paused_until is not None or not self._affordable(m, chunk):
                return
            if self._store.add(chunk):
                self.guard.charge(len(chunk.data))
                self._last_progress = time.monotonic()
            if self._store.complete:
                self._unsubscribe_all()
                self._hand_over()

    # -- with self._lock held

    def _affordable(self, m: Manifest, chunk: Chunk) -> bool:
        """True if storing ``chunk`` fits the hourly budget; else pause fetching until it does."""
        if self.guard.available() >= len(chunk.data):
            return True
        wait = self.guard.seconds_until(m.chunk_bytes)
        self._paused_until = time.monotonic() + wait
        self._unsubscribe_all()
        self.guard.save()
        detail = (f"sync.max_download_bytes_per_hour = {self.guard.capacity:.0f} spent; fetching the "
                  f"{self._store.missing_count} missing chunk(s) of bundle {m.bundle[:12]} again in {wait:.0f} s")
        log.warning("sync: %s", detail)
        self._receiver.report_pause(m.bundle, self._store.missing_count, int(self.guard.capacity), wait)
        return False

    def _request_missing(self, resend: bool = True) -> None:
        """Subscribe to the missing chunks' topics. Subscribing again to an already subscribed topic makes the
        broker re-send its retained message (``resend``); otherwise only topics not yet subscribed are added.
        Nothing while the download budget is spent (``tick`` asks again when it has refilled)."""
        if self._paused_until is not None:
            return
        wanted = {chunk_topic(self._topic, i) for i in self._store.missing()}
        gone = sorted(self._subscribed - wanted)
        if gone:
            self.client.unsubscribe(gone)
        ask = sorted(wanted if resend else wanted - self._subscribed)
        if ask:
            self.client.subscribe([(t, 1) for t in ask])
        self._subscribed = wanted

    def _unsubscribe_all(self) -> None:
        if self._subscribed:
            self.client.unsubscribe(sorted(self._subscribed))
            self._subscribed = set()

    def _hand_over(self) -> None:
        m = self._store.manifest
        assert m is not None
        try:
            data = self._store.assemble()
        except (OSError, BundleError) as exc:
            log.warning("sync: could not assemble bundle %s (%s); fetching it again", m.bundle[:12], exc)
            self._store.discard()
            return
        if hashlib.sha256(data).hexdigest() != m.bundle:
            self._corrupt_transfer(m)
            return
        self._handed_over = m.bundle
        self._receiver.submit(data, "mqtt", lambda: self._done(m.bundle))

    def _corrupt_transfer(self, m: Manifest) -> None:
        """The chunks do not add up to the announced bundle: one of them is forged (anyone who can publish on
        the topic can overwrite a retained chunk) or damaged, or the whole bundle is junk. That says nothing
        about the bundle itself, so the bundle is not remembered as refused (a new export of it, with another
        manifest, is fetched), but this manifest is remembered as failed: neither its retained copy, delivered
        again on every reconnection, nor a re-publication makes the door download and fsync the same junk again.
        """
        self._store.discard()
        self._unsubscribe_all()
        self.guard.remember_failed(manifest_digest(m))
        detail = ("assembled chunks do not hash to the manifest's bundle id (a forged or damaged chunk); not "
                  "fetched again; export and publish a new version ('facegate gallery export --version N')")
        self._receiver.reject("corrupt", detail, m.bundle, "mqtt", remember=False)

    def _done(self, bundle: str) -> None:
        with self._lock:
            if self._handed_over == bundle:
                self._handed_over = None
            if self._store.manifest is not None and self._store.manifest.bundle == bundle:
                self._store.discard()

    def tick(self, now: float) -> None:
        """Called about once a second by the worker: ask again for chunks that are overdue, or, once the
        download budget has refilled, for the missing ones."""
        with self._lock:
            if not (self._connected and self._store.manifest is not None and not self._store.complete):
                return
            if self._paused_until is not None:
                if now >= self._paused_until:
                    log.info("sync: download budget refilled; fetching %d missing chunk(s) of bundle %s",
                             self._store.missing_count, self._store.manifest.bundle[:12])
                    self._paused_until = None
                    self._last_progress = now
                    self._request_missing()
            elif now - self._last_progress >= self._resubscribe:
                log.info("sync: no chunk for %.0f s; asking for %d missing chunk(s) again", now - self._last_progress,
                         self._store.missing_count)
                self._last_progress = now
                self._request_missing()


class HttpSource:
    """Polls a bundle URL with ``If-None-Match``; the ETag is kept in ``state_dir/sync/http.json``."""

    def __init__(self, receiver: SyncReceiver, url: str, poll_seconds: float, state_file: Path) -> None:
        self._receiver = receiver
        self.url = url
        self._poll = poll_seconds
        self._state_file = state_file
        self._etag: str | None = None
        self._last_error: str | None = None
        with contextlib.suppress(OSError, ValueError, AttributeError):
            saved = json.loads(state_file.read_text())
            if saved.get("url") == url and isinstance(saved.get("etag"), str):
                self._etag = saved["etag"]

    def run(self) -> None:
        while not self._receiver.stopping:
            try:
                self.poll()
            except Exception:
                log.exception("sync: polling %s failed", self.url)
            self._receiver.wait(self._poll)

    def poll(self) -> None:
        """One conditional GET; a new bundle is applied before this returns."""
        max_bytes = self._receiver.config.max_bundle_bytes
        headers = {"User-Agent": f"facegate/{__version__}"}
        if self._etag:
            headers["If-None-Match"] = self._etag
        request = urllib.request.Request(self.url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:
                etag = response.headers.get("ETag")
                length = response.headers.get("Content-Length")
                too_big = length is not None and length.isdigit() and int(length) > max_bytes
                data = b"" if too_big else response.read(max_bytes + 1)
        except urllib.error.HTTPError as exc:
            if exc.code != 304:
                self._transport_error(f"HTTP {exc.code} {exc.reason}")
            return
        except (urllib.error.URLError, HTTPException, OSError, ValueError) as exc:
            self._transport_error(str(getattr(exc, "reason", exc)))
            return
        self._last_error = None
        if too_big or len(data) > max_bytes:
            tag = hashlib.sha256(f"{self.url} {etag} {length}".encode()).hexdigest()
            self._receiver.reject("too_large", f"{self.url} serves {length or 'more than ' + str(max_bytes)} bytes; "
                                  f"sync.max_bundle_bytes = {max_bytes}", tag, "http")
        elif isinstance(outcome := self._receiver.process(data, "http"), BundleError) and \
                outcome.reason == "apply_failed":
            return  # keep the old ETag: download and try again at the next poll
        if etag and etag != self._etag:
            self._etag = etag
            with contextlib.suppress(OSError):
                write_private(self._state_file, json.dumps({"url": self.url, "etag": etag}).encode(), durable=False)

    def _transport_error(self, message: str) -> None:
        if message != self._last_error:  # once per distinct problem, not every poll
            log.warning("sync: cannot fetch %s: %s", self.url, message)
            self._last_error = message
