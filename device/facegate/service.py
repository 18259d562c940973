"""The door service: the one place where camera, recognition, gallery, policy, door I/O and events are wired.

Everything else is a part with one job; this module decides how they talk, which thread does what, and
that the relay is released and the outbox flushed on every way out.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from gpiozero.exc import GPIOZeroError

from facegate import __version__
from facegate.access.door import Door
from facegate.access.policy import AccessPolicy
from facegate.camera.source import Frame, FrameSource
from facegate.camera.supervisor import CameraSupervisor, make_source
from facegate.config import Config, ConfigError
from facegate.errors import ModelError
from facegate.events.communicator import Command, Communicator, NullCommunicator
from facegate.events.emitter import EventEmitter
from facegate.events.outbox import Outbox
from facegate.gallery.index import EmbeddingIndex
from facegate.gallery.store import Gallery
from facegate.liveness.gate import LivenessGate
from facegate.models import Manifest
from facegate.recognition.decision import Decision, DecisionEngine, Observation
from facegate.sdnotify import SystemdNotifier
from facegate.thresholds import ThresholdTable
from facegate.vision.pipeline import FacePipeline, PipelineOptions
from facegate.vision.quality import QualityGates

# MQTT, command verification and fleet sync are imported where the config turns them on (below): unused, their
# libraries (paho + ssl, cryptography, urllib/http) would cost a small Pi ~17 MB resident (tools/bench_footprint.py).
if TYPE_CHECKING:
    from facegate.sync.receiver import SyncReceiver

log = logging.getLogger("facegate.service")

STATUS_INTERVAL_SECONDS = 60.0
# How often the frame loop looks for gallery changes made outside the service (facegate enroll / gallery
# remove on the device): a removed person must stop matching within seconds, not at the next restart.
GALLERY_CHECK_SECONDS = 2.0


def process_age_seconds() -> float:
    """Seconds since this process started (Linux /proc; 0.0 where that cannot be read)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


def iso_ts(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def build_pipeline(config: Config) -> FacePipeline:
    m = config.models
    options = PipelineOptions(
        threads=m.threads, detector=m.detector, embedder=m.embedder, five_point=m.five_point,
        flip_fusion=m.flip_fusion, gates=QualityGates(**config.recognition.quality.model_dump()),
    )
    return FacePipeline(Manifest.load(m.dir), options)


def match_threshold(config: Config, pipeline: FacePipeline) -> float:
    """The configured similarity, else the one that gives the configured FAR for this embedder."""
    if config.recognition.threshold is not None:
        return config.recognition.threshold
    table = ThresholdTable.load(pipeline.manifest.directory / "thresholds.json")
    if table.embedder_sha256 != pipeline.embedder_sha256:
        raise ConfigError(
            "recognition.threshold: models/thresholds.json was measured for another embedder; "
            "set recognition.threshold or re-run tools/evaluate.py --write-thresholds"
        )
    return table.for_far(config.recognition.far)


def new_person_threshold(config: Config, pipeline: FacePipeline) -> float | None:
    """Similarity below which a frame shows someone other than the decided person (``new_person_far``).

    None when the table is not for this embedder (a hand-set threshold): the engine then uses the match
    threshold, so a decided track is handed over more readily, which costs at most an extra event, never a grant.
    """
    try:
        table = ThresholdTable.load(pipeline.manifest.directory / "thresholds.json")
    except ModelError:
        return None
    if table.embedder_sha256 != pipeline.embedder_sha256:
        return None
    return table.for_far(config.recognition.new_person_far)


@dataclass
class Stats:
    started: float = field(default_factory=time.time)
    frames: int = 0
    faces: int = 0
    fps: float = 0.0
    _window_start: float = field(default_factory=time.monotonic)
    _window_frames: int = 0

    def tick(self, faces: int) -> None:
        self.frames += 1
        self.faces += faces
        self._window_frames += 1
        now = time.monotonic()
        if now - self._window_start >= 5.0:
            self.fps = self._window_frames / (now - self._window_start)
            self._window_start, self._window_frames = now, 0


class Service:
    def __init__(
        self,
        config: Config,
        *,
        source: FrameSource | None = None,
        pin_factory: Any = None,
        communicator: Communicator | None = None,
    ) -> None:
        self.config = config
        self.stop_event = threading.Event()
        self.notifier = SystemdNotifier()
        self.stats = Stats()
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self._db_lock = threading.Lock()

        self.outbox = Outbox(config.state_dir / "outbox.db", config.outbox.max_events)
        self.emitter = EventEmitter(config.device_id, self.outbox)
        self.emitter.add_listener(lambda event: log.info("event %s", event["type"], extra={"event": event}))

        self.pipeline = build_pipeline(config)
        self.threshold = match_threshold(config, self.pipeline)
        self.gallery = Gallery(config.gallery_path)
        self.gallery.check_embedder(self.pipeline.embedder_sha256)
        self.policy = AccessPolicy(self.gallery, config.access)
        self._index_revision = self.gallery.revision  # read before the build: never newer than the index
        self.index: EmbeddingIndex = self.gallery.build_index()
        self._names = self.gallery.names()
        self.liveness = LivenessGate.from_config(config.liveness, self.pipeline.manifest,
                                                 own_mesh=self.pipeline.mesh is None)
        self.engine = DecisionEngine(config.recognition, self.threshold,
                                     new_person_below=new_person_threshold(config, self.pipeline),
                                     liveness=self.liveness.new_track if self.liveness else None)
        self._last_person: str | None = None

        try:
            self.door = Door(config.door, self.emitter.emit, pin_factory=pin_factory)
        except GPIOZeroError as exc:  # no pin library, a pin used twice, an invalid pin name
            raise ConfigError(f"door: cannot set up the door pins: {exc} (on a machine without GPIO set "
                              'door.pin_factory = "mock")') from None
        atexit.register(self.door.close)

        if communicator is None:
            if config.mqtt.enabled:
                from facegate.events.commands import CommandVerifier
                from facegate.events.mqtt import MqttCommunicator

                verifier = CommandVerifier(config.commands, config.device_id, config.state_dir / "command_nonces.db")
                communicator = MqttCommunicator(config.mqtt, config.device_id, self.emitter, verifier)
            else:
                communicator = NullCommunicator(self.emitter)
        self.communicator = communicator
        self.communicator.on_command(self._on_command)
        self.door.on_state(self._on_door_state)
        self.source = source or make_source(config.camera)

        # Fleet sync: only signed bundles, only with trusted keys configured (docs/sync.md).
        self.sync: SyncReceiver | None = None
        has_source = config.sync.topic is not None or config.sync.url is not None
        if config.sync.public_keys and has_source:
            from facegate.sync.receiver import SyncReceiver

            self.sync = SyncReceiver(config, self.pipeline.embedder_sha256, self.emitter.emit,
                                     on_applied=self.swap_index)
        elif config.sync.public_keys:
            log.info("sync.public_keys without sync.topic or sync.url: bundles come only by 'facegate gallery apply'")
        elif has_source:
            log.warning("sync.topic/sync.url are set but sync.public_keys is empty: fleet sync is off")

    # ------------------------------------------------------------------ callbacks (other threads)

    def _on_door_state(self, name: str, value: str) -> None:
        self.communicator.publish_state(f"{name}/state", value)

    def _on_command(self, command: Command) -> None:
        """Called from the MQTT thread with a command whose signature, age and nonce were verified.

        The communicator has already emitted command_accepted; this only acts, and quickly (the door
        schedules its relock on its own thread).
        """
        if command.action == "unlock":
            self.door.unlock(reason="remote")
        elif command.action == "lock":
            self.door.lock(reason="remote")
        elif command.action in ("lockdown_on", "lockdown_off"):
            with self._db_lock:
                self.policy.set_lockdown(command.action == "lockdown_on")
            if command.action == "lockdown_on":
                self.door.lock(reason="lockdown")
            self.publish_status()

    def swap_index(self, index: EmbeddingIndex, names: dict[str, str | None], revision: int) -> None:
        """Install a new gallery index (the sync receiver's thread after its commit, or the frame loop).

        ``revision`` is the gallery revision ``index`` was built at. An index older than the one installed is
        dropped, so two swaps racing can never leave a stale gallery in place. Reference assignments only: the
        frame loop reads ``self.index`` once per frame, so each frame is matched entirely against the old or the
        new gallery. Names first, so a grant against the new index never lacks its name.
        """
        with self._db_lock:
            if revision < self._index_revision:
                return
            self._names = names
            self.index = index
            self._index_revision = revision
        self.publish_status()

    def reload_gallery_if_changed(self) -> bool:
        """Rebuild the index when the gallery changed outside this process's swaps (a local enrol or removal,
        ``facegate gallery apply``); True if it did."""
        with self._db_lock:
            revision = self.gallery.revision
            if revision == self._index_revision:
                return False
            index = self.gallery.build_index()
            names = self.gallery.names()
        log.info("gallery changed on disk (revision %d): index rebuilt, %d templates", revision, index.templates)
        self.swap_index(index, names, revision)
        return True

    # ------------------------------------------------------------------ status

    @property
    def last_person(self) -> str | None:
        """Name (or id) of the last person let in; the status topic's ``last_person``."""
        return self._last_person

    def status(self) -> dict[str, Any]:
        with self._db_lock:
            persons, templates = self.gallery.counts()
            version = self.gallery.version
            lockdown = self.policy.lockdown
        models = {role: self.pipeline.manifest.get(role, name).sha256 for role, name in (
            ("detector", self.config.models.detector), ("embedder", self.config.models.embedder))}
        return {
            "device_id": self.config.device_id, "version": __version__,
            "uptime_seconds": round(time.time() - self.stats.started, 1),
            "fps": round(self.stats.fps, 2), "frames": self.stats.frames,
            "gallery": {"version": version, "persons": persons, "templates": templates},
            "gallery_persons": persons, "last_person": self._last_person,
            "models": models, "threshold": round(self.threshold, 4), "far": self.config.recognition.far,
            "lockdown": lockdown, "door": self.door.state(),
            "outbox": {"pending": len(self.outbox), "dropped": self.emitter.dropped},
        }

    def publish_status(self) -> None:
        self.communicator.publish_state("status", self.status())

    # ------------------------------------------------------------------ the frame loop

    def observe(self, frame: Frame) -> list[Observation]:
        results = self.pipeline.process(frame.image)[: self.config.recognition.max_faces]
        index = self.index  # once per frame: a sync may swap it at any moment
        observations = []
        for r in results:
            assert r.embedding is not None
            top = index.search(r.embedding, k=2)
            best_id, best = (top[0].person_id, top[0].similarity) if top else (None, -1.0)
            runner_up = top[1].similarity if len(top) > 1 else -1.0
            extra: dict[str, object] = {}
            if self.liveness is not None:
                extra["liveness"] = self.liveness.evidence(frame.image, r, frame.ts, mesh=r.mesh)
            observations.append(Observation(
                box=r.detection.box, person_id=best_id, similarity=best, runner_up=runner_up,
                quality_ok=not r.failures, frame_ts=frame.ts, frame=frame.name, extra=extra,
            ))
        self.stats.tick(len(results))
        return observations

    def handle(self, decision: Decision) -> None:
        obs = decision.observation
        trace = {"frame_ts": iso_ts(obs.frame_ts), "frame": obs.frame, "track_id": decision.track_id}
        if decision.kind == "unknown":
            # observe() gives -1.0 when there was no one to compare with (empty gallery): say null, not a score
            best = round(decision.similarity, 4) if decision.similarity > -1.0 else None
            self.emitter.emit("unknown_face", best_similarity=best,
                              frames=decision.frames_used, **trace)
            return
        person = decision.person_id
        assert person is not None
        name = self._names.get(person)
        if decision.kind == "spoof":
            live = {"liveness_score": round(decision.liveness_score or 0.0, 3),
                    "liveness_reason": decision.liveness_reason}
            self.emitter.emit("spoof_detected", person_id=person, name=name, **live, **trace)
            self.emitter.emit("access_denied", person_id=person, name=name, reason="liveness",
                              similarity=round(decision.similarity, 4), **live, **trace)
            return
        with self._db_lock:
            verdict = self.policy.check(person, datetime.now(UTC))
        if verdict.allowed:
            self._last_person = name or person
            self.door.unlock(reason="face")
            live = {} if decision.liveness_score is None else {"liveness_score": round(decision.liveness_score, 3)}
            self.emitter.emit("access_granted", person_id=person, name=name,
                              similarity=round(decision.similarity, 4), frames_used=decision.frames_used,
                              **live, **trace)
        else:
            self.emitter.emit("access_denied", person_id=person, name=name, reason=verdict.reason,
                              similarity=round(decision.similarity, 4), **trace)

    def run(self) -> int:
        """Run until the source ends or a stop signal; returns the process exit code."""
        self.communicator.start()
        if self.sync is not None:
            self.sync.start()
        self.emitter.emit("service_started", version=__version__)
        self._on_door_state("lock", "LOCKED" if self.door.locked else "UNLOCKED")
        self.publish_status()
        self.notifier.ready()
        camera = CameraSupervisor(self.source, self.emitter.emit, self.stop_event,
                                  self.config.camera.reopen_backoff_max_seconds, heartbeat=self.notifier.watchdog)
        next_status = time.monotonic() + STATUS_INTERVAL_SECONDS
        next_gallery_check = time.monotonic() + GALLERY_CHECK_SECONDS
        first_frame = True
        try:
            for frame in camera.frames():
                self.notifier.watchdog()
                if first_frame:  # start-up cost, for tools/bench_footprint.py and the journal
                    first_frame = False
                    cpu = os.times()
                    log.info("first frame %.2f s after the process started (%.2f s of CPU)", process_age_seconds(),
                             cpu.user + cpu.system)
                # Nothing inside one step may end the loop: a dead service is a door that no one can open, or,
                # fail-safe (maglock), one that anyone can. Each failure is logged and the next frame goes on.
                try:
                    decisions = self.engine.update(self.observe(frame), frame.ts)
                except Exception:
                    log.exception("frame %s failed", frame.name or frame.index)
                    continue
                for decision in decisions:
                    try:
                        self.handle(decision)
                    except Exception:  # raised before the unlock: access is simply not given
                        log.exception("decision for track %d failed; no access given", decision.track_id)
                if time.monotonic() >= next_gallery_check:
                    next_gallery_check = time.monotonic() + GALLERY_CHECK_SECONDS
                    try:
                        self.reload_gallery_if_changed()
                    except Exception:
                        log.exception("could not reload the gallery; keeping the one in memory")
                if time.monotonic() >= next_status:
                    next_status = time.monotonic() + STATUS_INTERVAL_SECONDS
                    try:
                        self.publish_status()
                    except Exception:
                        log.exception("could not build the status")
        finally:
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        self.notifier.stopping()
        self.door.close()
        if self.sync is not None:
            self.sync.stop()
        self.emitter.emit("service_stopped")
        self.publish_status()
        pending = self.communicator.stop(self.config.outbox.flush_timeout_seconds)
        if pending:
            log.warning("%d events not yet delivered; they stay in the outbox for the next start", pending)
        self.gallery.close()

    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %d: stopping", signum)
            self.door.close()  # release the relay first, whatever happens next
            self.stop_event.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
