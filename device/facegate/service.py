"""The door service: the one place where camera, recognition, gallery, policy, door I/O and events are wired.

Everything else is a part with one job; this module decides how they talk, which thread does what, and
that the relay is released and the outbox flushed on every way out.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from facegate import __version__
from facegate.access.clock import Clock, ClockState, clock_from_config
from facegate.base.private_files import private_dir
from facegate.camera.source import Frame, FrameSource
from facegate.camera.supervisor import CameraSupervisor, make_source
from facegate.config import Config
from facegate.errors import ModelError
from facegate.events.communicator import Command, Communicator
from facegate.events.emitter import format_ts
from facegate.events.status import CHANGE_EVENTS, StatusPublisher
from facegate.gallery.index import EmbeddingIndex
from facegate.liveness.challenge import ChallengeEvent
from facegate.panel.output import wants
from facegate.privacy.keys import sealer_for
from facegate.privacy.store import check_files
from facegate.process.memtrim import release_free_memory
from facegate.process.sdnotify import SystemdNotifier
from facegate.process.signals import StopSignals
from facegate.process.stats import LoopStats, process_age_seconds
from facegate.recognition.decision import Decision, Observation
from facegate.recognition.health import RecognitionHealth
from facegate.recognition.operating_point import DerivedThreshold, door_threshold
from facegate.recognition.segment import frame_digest, signature
from facegate.recognition.zone import to_frame
from facegate.rights.retention import Retention
from facegate.wiring.communicator import build_communicator
from facegate.wiring.console import build_console, configuration_url
from facegate.wiring.door import build_door
from facegate.wiring.events import build_events
from facegate.wiring.recognition import build_pipeline, build_recognition, open_grant_store
from facegate.wiring.sync import build_sync

# MQTT, command verification, the console and fleet sync are imported by their builders only where the config turns
# them on: unused, their libraries (paho + ssl, cryptography, urllib/http) would cost a small Pi ~17 MB resident
# (tools/bench/bench_footprint.py).
if TYPE_CHECKING:
    from facegate.web.console import Console
    from facegate.web.server import ConsoleServer

log = logging.getLogger("facegate.service")

STATUS_INTERVAL_SECONDS = 60.0
# How often the frame loop looks for gallery changes made outside the service (facegate enroll / gallery
# remove on the device): a removed person must stop matching within seconds, not at the next restart.
GALLERY_CHECK_SECONDS = 2.0
SEALING_TIMEOUT_SECONDS = 1800  # the start may take this long while plain files are encrypted (docs/privacy.md)


class Service:
    def __init__(
        self,
        config: Config,
        *,
        source: FrameSource | None = None,
        pin_factory: Any = None,
        communicator: Communicator | None = None,
        clock: Clock | None = None,
    ) -> None:
        """``clock``: the wall clock the access policy judges by (default: ``access.clock_check``'s).

        Built in steps, one builder a subsystem (facegate/wiring), in the order each needs the ones before:
        events and journal (so every later part can report), recognition (every check that stops the start, before
        a pin is touched), door and panel, the event transport, the console, sync. :meth:`run` starts them and
        :meth:`shutdown` stops them, in the orders written there.
        """
        self.config = config
        self.stop_event = threading.Event()
        self.notifier = SystemdNotifier()
        self.stats = LoopStats()
        private_dir(config.state_dir)  # owner-only whatever the umask (facegate/base/private_files.py)
        self._db_lock = threading.Lock()
        # Encryption at rest (facegate/privacy, docs/privacy.md): a missing or wrong key stops the start (exit 78).
        self.sealer = sealer_for(config)
        if check_files([config.state_dir / "outbox.db", config.journal_path, config.gallery_path], self.sealer):
            # Sealed in place now: a full journal takes minutes on a Pi; systemd's start timeout must not kill it.
            self.notifier.notify(f"EXTEND_TIMEOUT_USEC={SEALING_TIMEOUT_SECONDS * 1_000_000}")

        events = build_events(config, self.sealer)
        self.outbox, self.emitter, self.journal = events.outbox, events.emitter, events.journal
        self._journal_open_error = events.journal_open_error
        # Status: built by status(), published on change (coalesced) and every minute (facegate.events.status).
        self.facts, self._last_person = events.facts, events.last_person

        parts = build_recognition(config, self.sealer)
        self.pipeline, self.calibration, self.threshold = parts.pipeline, parts.calibration, parts.threshold
        self.gallery, self.policy = parts.gallery, parts.policy
        self._index_revision, self.index, self._names = parts.index_revision, parts.index, parts.names
        self.liveness, self.engine, self.zone = parts.liveness, parts.engine, parts.zone
        # The threshold follows the gallery's size (recognition.fpir): recomputed whenever the index changes.
        self.thresholds = parts.thresholds
        self._threshold_warning: str | None = None
        self.operating: DerivedThreshold = self._derive_threshold(self.index)
        self._set_threshold(self.operating)
        self.grant_embeddings = open_grant_store(config, self.sealer)  # "This was not them"
        # Judged on the service's clock, and only while it is trusted: a clock far in the future must not delete.
        self.retention = Retention(config.privacy.retention_days_after_validity, config.privacy.retention_purge_journal,
                                   clock=lambda: datetime.fromtimestamp(self.clock.time(), UTC))
        if self.liveness is not None:
            self.liveness.on_challenge = self._liveness_challenge
        # The trusted clock (facegate/access/clock.py): docs/decision.md.
        self.clock = clock or clock_from_config(config.access.clock_check)
        self._clock_untrusted_reported = False  # one clock_untrusted event per untrusted period
        # Held from the policy check to the unlock, and by a lockdown from its flag to its relock: a lockdown
        # either comes first (the check refuses) or ends the release the grant started, never neither.
        self._grant_lock = threading.Lock()
        self._signals: StopSignals | None = None  # set by install_signal_handlers

        self.door, self.credential_outputs = build_door(config, self.emitter.emit, pin_factory)

        # The door's web console URL for Home Assistant's device page; set it before run() when a console runs.
        self.configuration_url: str | None = None
        self.recognition = RecognitionHealth(self.emitter.emit)  # recognition_error / recognition_ok
        self.emitter.add_listener(self._on_event_for_status)
        self._status = StatusPublisher(self.status, lambda status: self.communicator.publish_state("status", status),
                                       interval_seconds=STATUS_INTERVAL_SECONDS)

        self.communicator = communicator or build_communicator(config, self.emitter, lambda: self.configuration_url)
        self.communicator.on_command(self._on_command)
        self.door.on_state(self._on_door_state)
        self.source = source or make_source(config.camera)

        # Web console and door screen: served on their own threads, seeing this service only as a DoorPort.
        self.console: Console | None = None
        self.web: ConsoleServer | None = None
        if config.web.enabled:
            self.configuration_url = configuration_url(config)
            self.console, self.web = build_console(config, self, make_pipeline=lambda: build_pipeline(config))

        self.sync = build_sync(config, self.pipeline.embedder_sha256, self.pipeline.embedder.dim, self.emitter.emit,
                               on_applied=self.swap_index)

    # ------------------------------------------------------------------ callbacks (other threads)

    def _on_door_state(self, name: str, value: str) -> None:
        self.communicator.publish_state(f"{name}/state", value)
        self.publish_status()

    def _on_event_for_status(self, event: dict[str, Any]) -> None:
        self.facts.on_event(event)
        if event.get("type") in CHANGE_EVENTS:
            self.publish_status()

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
            self.set_lockdown(command.action == "lockdown_on")
            self.publish_status()

    def set_lockdown(self, on: bool) -> None:
        """Store the lockdown flag and, turning it on, lock the door, atomically with respect to a grant."""
        with self._grant_lock:
            with self._db_lock:
                self.policy.set_lockdown(on)
            if on:
                self.door.lock(reason="lockdown")

    def swap_index(self, index: EmbeddingIndex, names: dict[str, str | None], revision: int) -> None:
        """Install a new gallery index (the sync receiver's thread after its commit, or the frame loop).

        ``revision`` is the gallery revision ``index`` was built at. An index older than the one installed is
        dropped, so two swaps racing can never leave a stale gallery in place. Reference assignments only: the
        frame loop reads ``self.index`` once per frame, so each frame is matched entirely against the old or the
        new gallery. Names first, so a grant against the new index never lacks its name.
        """
        index = index.calibrated(self.calibration)  # the sync receiver builds raw indexes: score them alike
        operating = self._derive_threshold(index)
        with self._db_lock:
            if revision < self._index_revision:
                return
            self._names = names
            # A stricter threshold goes in before the bigger gallery, a looser one after the smaller: no frame
            # is ever matched against a gallery with a threshold looser than its size needs.
            if operating.similarity >= self.threshold:
                self._set_threshold(operating)
            self.index = index
            self._set_threshold(operating)
            self._index_revision = revision
        release_free_memory()  # the old index and the rebuild's rows (RSS rose at every synced delta without it)
        self.publish_status()

    def _derive_threshold(self, index: EmbeddingIndex) -> DerivedThreshold:
        """The threshold for ``index``'s size; a warning (FPIR not met at a usable TAR) is logged once."""
        derived = door_threshold(self.config.recognition, self.thresholds, index.templates, index.persons)
        if derived.warning and derived.warning != self._threshold_warning:
            log.warning("recognition threshold: %s", derived.warning)
        self._threshold_warning = derived.warning
        return derived

    def _set_threshold(self, operating: DerivedThreshold) -> None:
        self.operating = operating
        self.threshold = operating.similarity
        self.engine.threshold = operating.similarity

    def reload_gallery_if_changed(self) -> bool:
        """Rebuild the index when the gallery changed outside this process's swaps (a local enrol or removal,
        ``facegate gallery apply``); True if it did."""
        with self._db_lock:
            revision = self.gallery.revision
            if revision == self._index_revision:
                return False
            index = self.gallery.build_index(self.calibration)
            names = self.gallery.names()
        log.info("gallery changed on disk (revision %d): index rebuilt, %d templates", revision, index.templates)
        self.swap_index(index, names, revision)
        return True

    # ------------------------------------------------------------------ status (and the console's DoorPort)

    @property
    def last_person(self) -> str | None:
        """Name (or id) of the last person let in; the status topic's ``last_person``."""
        return self._last_person

    @property
    def fps(self) -> float:
        return self.stats.fps

    @property
    def embedder_sha256(self) -> str:
        return self.pipeline.embedder_sha256

    @property
    def embedder_dim(self) -> int:
        return self.pipeline.embedder.dim

    def name_of(self, person_id: str) -> str | None:
        return self._names.get(person_id)

    def models(self) -> list[dict[str, Any]]:
        return [{"name": e.name, "role": e.role, "sha256": e.sha256, "quantization": e.quantization}
                for e in self.pipeline.manifest.entries]

    def sync_state(self) -> dict[str, Any] | None:
        if self.sync is None:
            return None
        state = self.sync.state
        return {"version": state.version, "bundle_sha256": state.bundle_sha256}

    def group_rates(self) -> list[dict[str, Any]]:
        """Each group's measured FMR on the reference set at the door's table points (fairness/report.py);
        empty with a hand-set threshold whose table is for another embedder."""
        from facegate.fairness.report import reference_rates

        if self.thresholds is None:
            return []
        try:
            return reference_rates(self.thresholds, self.operating.operating_point, self.threshold)
        except ModelError:  # a table without worst-group points beside a hand-set threshold
            return []

    def health_checks(self) -> list[dict[str, Any]]:
        from facegate import doctor
        from facegate.privacy.doctor import privacy_state

        checks = [check(self.config).as_dict() for check in (doctor.check_models, doctor.check_gallery,
                                                             doctor.check_broker, doctor.check_clock)]
        privacy = privacy_state(self.config, self.sealer)  # the running door's own key, not a second lookup
        checks.append({"check": "privacy", "ok": privacy.ok, "detail": privacy.detail, "fix": privacy.fix})
        return checks

    def status(self) -> dict[str, Any]:
        with self._db_lock:
            persons, templates = self.gallery.counts()
            version = self.gallery.version
            lockdown = self.policy.lockdown
        ignored = self.zone.ignored_counts()
        clock = self.clock.state()
        models = {role: self.pipeline.manifest.get(role, name).sha256 for role, name in (
            ("detector", self.config.models.detector), ("embedder", self.config.models.embedder))}
        return {
            "device_id": self.config.device_id, "version": __version__,
            "uptime_seconds": round(time.time() - self.stats.started, 1),
            "fps": round(self.stats.fps, 2), "frames": self.stats.frames,
            "gallery": {"version": version, "persons": persons, "templates": templates},
            "gallery_persons": persons, "last_person": self._last_person,
            "models": models, "threshold": round(self.threshold, 4), "far": self.operating.far,
            "operating_point": self.operating.as_dict(),
            "fair_calibration": self.calibration is not None,
            "face_ignored": sum(ignored.values()), "face_ignored_by_reason": ignored,
            "clock": {"trusted": clock.trusted, "detail": clock.detail},
            "lockdown": lockdown, "door": {**self.door.state(), "forced_open": self.facts.forced_open},
            "outbox": {"pending": len(self.outbox), "dropped": self.emitter.dropped},
            "journal": self.journal.status() if self.journal is not None else {
                "enabled": self.config.journal.enabled, "events": 0, "errors": 1 if self._journal_open_error else 0,
                "pending": 0, "last_error": self._journal_open_error},
            "last_access": self.facts.last_access, "camera": self.facts.camera,
            "recognition": self.facts.recognition,
            "panel": {o.channel: o.status() for o in self.credential_outputs},  # OSDP / Wiegand outputs
        }

    def publish_status(self) -> None:
        """Ask for a fresh status: published within a fraction of a second, bursts folded into one."""
        self._status.request()

    # ------------------------------------------------------------------ the frame loop

    def observe(self, frame: Frame) -> list[Observation]:
        """The frame's faces matched against the gallery; only the one face that may decide is returned.

        Detection runs on the door zone's crop; every result is moved back to full-frame pixels. All faces go
        to the console (it blurs strangers and enrols from them), only the deciding one to the engine.
        """
        view, offset = self.zone.view(frame.image)
        results = self.pipeline.process(view)[: self.config.recognition.max_faces]
        for r in results:
            to_frame(r, offset)
        height, width = frame.image.shape[:2]
        deciding = self.zone.select([r.detection.box for r in results], width, height).deciding
        index = self.index  # once per frame: a sync may swap it at any moment
        digest = frame_digest(frame.image) if results else None  # identical frames count once (segment.py)
        observations = []
        for i, r in enumerate(results):
            assert r.embedding is not None
            top = index.search(r.embedding, k=2, negative_margin=self.config.recognition.negative_margin)
            best_id, best = (top[0].person_id, top[0].similarity) if top else (None, -1.0)
            runner_up = top[1].similarity if len(top) > 1 else -1.0
            extra: dict[str, object] = {}
            if self.liveness is not None and i == deciding:
                extra["liveness"] = self.liveness.evidence(frame.image, r, frame.decision_ts, mesh=r.mesh)
            if i == deciding:
                extra["embedding"] = r.embedding  # kept with a grant ("This was not them")
            observations.append(Observation(
                box=r.detection.box, person_id=best_id, similarity=best, runner_up=runner_up,
                quality_ok=not r.failures, frame_ts=frame.ts, frame=frame.name, extra=extra,
                signature=signature(r.embedding), digest=digest,
            ))
        if self.console is not None:
            # Stamped when it reached the console, not with the frame's capture time: the console asks "is the
            # camera feed alive now?", and a replay's frames carry file time (camera/replay.py).
            self.console.slot.put(frame.image, time.time(), results, observations, self.threshold)
        self.stats.tick(len(results))
        return [] if deciding is None else [observations[deciding]]

    def handle(self, decision: Decision) -> None:
        obs = decision.observation
        trace = {"frame_ts": format_ts(obs.frame_ts), "frame": obs.frame, "track_id": decision.track_id}
        if decision.kind == "undecided":  # a visit that ended without a decision (docs/decision.md)
            best = round(decision.similarity, 4) if decision.similarity > -1.0 else None
            self.emitter.emit("visit_undecided", best_similarity=best, frames=decision.frames_used,
                              reason=decision.reason, **trace)
            return
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
        clock: list[ClockState] = []

        def clock_trusted() -> bool:  # asked by the policy only for a person with dates or a schedule
            clock.append(self.clock.state())
            return clock[-1].trusted

        with self._grant_lock:
            with self._db_lock:
                # The service's clock at the decision, never the frame's: a replayed or delayed frame stamped
                # before someone's valid_until must not let them in after it (the frame time stays in the event).
                verdict = self.policy.check(person, datetime.fromtimestamp(self.clock.time(), UTC), clock_trusted)
            if verdict.allowed:
                self._last_person = name or person
                if decision.ts is not None:  # only a grant starts the cooldown: a denied person may come back
                    self.engine.record_grant(person, decision.ts)
                self.door.unlock(reason="face")
                live = {} if decision.liveness_score is None else {
                    "liveness_score": round(decision.liveness_score, 3)}
                granted = self.emitter.emit("access_granted", person_id=person, name=name,
                                            similarity=round(decision.similarity, 4),
                                            frames_used=decision.frames_used, **live, **trace)
                self._keep_grant_embedding(granted, person, obs)
        if clock:
            self._report_clock(clock[-1])
        if not verdict.allowed:
            self.emitter.emit("access_denied", person_id=person, name=name, reason=verdict.reason,
                              similarity=round(decision.similarity, 4), **trace)
        self._send_credentials(person, verdict.allowed)

    def _keep_grant_embedding(self, event: dict[str, Any] | None, person: str, obs: Observation) -> None:
        """Keep the granted face under the event's id (after the unlock: a failure here never holds the door)."""
        embedding = obs.extra.get("embedding")
        if self.grant_embeddings is None or event is None or embedding is None:
            return
        try:
            self.grant_embeddings.put(str(event["event_id"]), person, embedding)  # type: ignore[arg-type]
        except Exception:
            log.exception("could not keep the embedding of grant %s", event.get("event_id"))

    def _liveness_challenge(self, event: ChallengeEvent) -> None:
        """A head-turn challenge asked or settled (facegate/liveness/challenge.py): the door screen shows the
        prompt from this event, Home Assistant and the journal get it like any other."""
        self.emitter.emit("liveness_challenge", direction=event.direction, outcome=event.outcome,
                          seconds=event.seconds, turn=event.turn,
                          timeout_seconds=self.config.liveness.challenge_timeout_seconds,
                          frame_ts=format_ts(event.ts))

    def _report_clock(self, state: ClockState) -> None:
        """One ``clock_untrusted`` event per untrusted period (the frame loop's thread only)."""
        if state.trusted:
            self._clock_untrusted_reported = False
        elif not self._clock_untrusted_reported:
            self._clock_untrusted_reported = True
            self.emitter.emit("clock_untrusted", detail=state.detail, fix=state.fix)

    def _send_credentials(self, person: str, door_allows: bool) -> None:
        """Hand the person's card number to each panel output that wants it (facegate/panel/output.py)."""
        targets = [o for o in self.credential_outputs if wants(o, door_allows)]
        if not targets:
            return
        with self._db_lock:
            card = self.gallery.card_number(person)
        for output in targets:
            if card is None:
                self.emitter.emit("credential_failed", person_id=person, channel=output.channel,
                                  reason="no_card_number", detail="set one with 'facegate gallery card'")
            else:
                output.send_credential(person, card)

    def run(self) -> int:
        """Run until the source ends or a stop signal; returns the process exit code."""
        if self.journal is not None:
            self.journal.start()
        for output in self.credential_outputs:
            output.start()
        self.emitter.emit("service_started", version=__version__)
        self._on_door_state("lock", "LOCKED" if self.door.locked else "UNLOCKED")
        try:
            self._status.publish_now()  # before connecting: the first status on the broker is a complete one
        except Exception:  # the publisher's heartbeat tries again; the door must run regardless
            log.exception("could not build the first status")
        self.communicator.start()
        self._status.start()
        if self.sync is not None:
            self.sync.start()
        if self.web is not None:
            self.web.start()
        self.notifier.ready()
        camera = CameraSupervisor(self.source, self.emitter.emit, self.stop_event,
                                  self.config.camera.reopen_backoff_max_seconds, heartbeat=self.notifier.watchdog)
        next_gallery_check = time.monotonic() + GALLERY_CHECK_SECONDS
        first_frame = True
        try:
            for frame in camera.frames():
                self.notifier.watchdog()
                if first_frame:  # start-up cost, for tools/bench/bench_footprint.py and the journal
                    first_frame = False
                    cpu = os.times()
                    log.info("first frame %.2f s after the process started (%.2f s of CPU)", process_age_seconds(),
                             cpu.user + cpu.system)
                # Nothing inside one step may end the loop: a dead service is a door that no one can open, or,
                # fail-safe (maglock), one that anyone can. Each failure is logged and the next frame goes on.
                try:
                    # Frame time, never a clock read here: the same frames give the same decisions.
                    observations = self.observe(frame)
                    decisions = self.engine.update(observations, frame.decision_ts)
                except Exception as exc:  # reported once per episode, not per frame (recognition/health.py)
                    log.exception("frame %s failed", frame.name or frame.index)
                    self.recognition.failed(exc, frame.name)
                    continue
                self.recognition.succeeded(len(observations))
                for decision in decisions:
                    try:
                        self.handle(decision)
                    except Exception:  # raised before the unlock: access is simply not given
                        log.exception("decision for track %d failed; no access given", decision.track_id)
                if time.monotonic() >= next_gallery_check:
                    next_gallery_check = time.monotonic() + GALLERY_CHECK_SECONDS
                    try:
                        if self.retention.due() and self.clock.state().trusted:
                            self.retention.run(self.gallery, self.journal.journal if self.journal else None,
                                               self.emitter.emit, self._db_lock)
                        self.reload_gallery_if_changed()
                    except Exception:
                        log.exception("could not reload the gallery; keeping the one in memory")
        finally:
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        self.notifier.stopping()
        for output in self.credential_outputs:  # before the door: the OSDP reader drives its LED and relay
            try:
                output.close()
            except Exception:
                log.exception("could not close the %s output", output.channel)
        self.door.close()
        # The atexit hook (wiring/door.py) is for ways out that never reach here; once the relay is released it
        # would only keep this service, its models and files alive until the process ends.
        atexit.unregister(self.door.close)
        if self.web is not None and self.console is not None:
            self.web.stop()
            self.console.close()
        if self._signals is not None:  # a signal's relay release: its door_locked comes before service_stopped
            self._signals.settle()
        if self.sync is not None:
            self.sync.stop()
        self.emitter.emit("service_stopped")
        self._status.stop()
        try:
            self._status.publish_now()  # the final status goes out before "offline"
        except Exception:
            log.exception("could not build the final status")
        pending = self.communicator.stop(self.config.outbox.flush_timeout_seconds)
        if pending and not self.config.mqtt.enabled:  # nothing to deliver to: not a failure to warn about
            log.info("MQTT is off: %d events are kept in the outbox%s, no delivery expected", pending,
                     " and the journal" if self.journal is not None else "")
        elif pending:
            log.warning("%d events not yet delivered; they stay in the outbox for the next start", pending)
        if self.journal is not None:
            # The writer's own bound, not the outbox's: flush_timeout_seconds is how long to wait for a broker
            # (0 = not at all), while the journal is a local file whose last events (service_stopped) must be written.
            self.journal.stop()
        self.gallery.close()
        if self.grant_embeddings is not None:
            self.grant_embeddings.close()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT release the relay, then stop the service (from a watcher thread: facegate/process/signals.py
        says why the handler itself may take no lock)."""
        self._signals = StopSignals(release=self.door.close, stop=self.stop_event.set)
        self._signals.install()
