"""The console's side of the service: what each page can read and do, independent of HTTP.

Isolation from the frame loop:

* The frame loop only calls :meth:`LiveSlot.put` (facegate.web.live). Everything the console reads of the
  service is a reference read (names, threshold) or a call that takes a lock for microseconds (``door.state``).
* The console writes the gallery and the access policy through its **own** SQLite connections (WAL, so the
  frame loop's reads never wait for them); the service notices the new gallery revision within
  ``GALLERY_CHECK_SECONDS`` and swaps its index, as it does for ``facegate enroll`` on the command line.
* An uploaded photo is analysed by a **second** pipeline, built on first use and serialised by its own lock, so
  the frame loop's interpreters are never shared. A capture from the door camera needs no pipeline at all: it
  reuses the embedding the frame loop computed for that frame.
"""

from __future__ import annotations

import json
import logging
import platform
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from facegate import __version__
from facegate.access.policy import AccessPolicy
from facegate.errors import FacegateError, GalleryError
from facegate.gallery.store import Gallery, NewTemplate
from facegate.web.accounts import UserStore
from facegate.web.hub import EventHub
from facegate.web.live import LiveFace, LiveSlot
from facegate.web.passcheck import PasswordChecker
from facegate.web.people import PERSON_ID, ConsoleError, add_template, people_rows, save_person, uploaded_image
from facegate.web.port import DoorPort
from facegate.web.sessions import FAILURES_FILE, LoginLimiter, SessionStore
from facegate.web.stream import make_encoders
from facegate.web.streamslots import StreamSlots, Ticket
from facegate.web.terminal import terminal_message

if TYPE_CHECKING:
    from facegate.vision.pipeline import FacePipeline

log = logging.getLogger(__name__)

CAPTURE_WAIT_SECONDS = 3.0


def face_template(faces: tuple[LiveFace, ...], source: str) -> tuple[NewTemplate | None, str]:
    """The enrolment gates of ``facegate enroll`` applied to faces the frame loop already analysed."""
    if not faces:
        return None, "no face found"
    if len(faces) > 1:
        return None, f"{len(faces)} faces found (only the person to enrol may be in view)"
    face = faces[0]
    if face.failures:
        return None, "quality: " + ", ".join(face.failures)
    if face.embedding is None:
        return None, "no embedding for this face"
    return NewTemplate(np.asarray(face.embedding, dtype=np.float32), dict(face.quality), source=source), "accepted"


def quality_feedback(faces: tuple[LiveFace, ...]) -> dict[str, Any]:
    template, reason = face_template(faces, "")
    face = faces[0] if faces else None
    return {"faces": len(faces), "ok": template is not None, "reason": reason,
            "quality": face.quality if face else None, "failures": list(face.failures) if face else [],
            "liveness": None if face is None or face.liveness is None else round(face.liveness, 2)}


class Console:
    def __init__(self, service: DoorPort, make_pipeline: Callable[[], FacePipeline]) -> None:
        """``service``: the running door, seen only through :class:`DoorPort` (facegate/web/port.py);
        ``make_pipeline`` builds the console's own pipeline for uploads."""
        self.service = service
        self._make_pipeline = make_pipeline
        self.config = service.config.web
        self.slot = LiveSlot()
        self.hub = EventHub()
        service.emitter.add_listener(self.hub.on_event)
        self.users = UserStore(service.config.state_dir)
        self.sessions = SessionStore(self.config.session_idle_minutes * 60)
        self.limiter = LoginLimiter(path=service.config.state_dir / FAILURES_FILE)
        self.checker = PasswordChecker(self.users)
        self.encoders = make_encoders(self.slot, self.name_of, self.config.blur_strangers, self.config.stream_fps)
        self._db_lock = threading.Lock()
        self._gallery: Gallery | None = None
        self._policy: AccessPolicy | None = None
        self._pipeline: FacePipeline | None = None
        self._pipeline_lock = threading.Lock()
        self._journal: Any = None
        self.stream_slots = StreamSlots()
        self.stopping = threading.Event()

    # ------------------------------------------------------------------ shared state

    def name_of(self, person_id: str) -> str | None:
        return self.service.name_of(person_id)

    def acquire_stream(self, limit: int, kind: str, user: str | None = None, admin: bool = False) -> Ticket | None:
        """A stream slot (facegate.web.streamslots: per kind, per account, admins before viewers), or None."""
        return self.stream_slots.acquire(kind, limit, user, admin)

    def release_stream(self, ticket: Ticket, dropped: bool = False) -> None:
        self.stream_slots.release(ticket, dropped)

    @property
    def streams(self) -> int:
        return self.stream_slots.count()

    @property
    def dropped_streams(self) -> int:
        return self.stream_slots.dropped

    def _db(self) -> tuple[Gallery, AccessPolicy]:
        """The console's own gallery and policy connections (call with ``_db_lock`` held)."""
        if self._gallery is None:
            self._gallery = Gallery(self.service.config.gallery_path)
            self._policy = AccessPolicy(self._gallery, self.service.config.access)
        assert self._policy is not None
        return self._gallery, self._policy

    def close(self) -> None:
        self.stopping.set()
        self.stream_slots.stop_all()
        self.checker.close()
        self.limiter.close()
        for encoder in self.encoders.values():
            encoder.stop()
        with self._db_lock:
            if self._policy is not None:
                self._policy.close()
            if self._gallery is not None:
                self._gallery.close()
            self._gallery = self._policy = None
        if self._journal is not None:
            self._journal.close()

    def emit(self, user: str, action: str, **fields: Any) -> None:
        """Every change made from the console is an event naming who made it."""
        self.service.emitter.emit("console_action", user=user, action=action, **fields)

    def emit_event(self, event_type: str, **fields: Any) -> None:
        """An event of the console's own (a login, a throttled login) into the door's event stream."""
        self.service.emitter.emit(event_type, **fields)

    # ------------------------------------------------------------------ live

    def lockdown(self) -> bool:
        with self._db_lock:
            return self._db()[1].lockdown

    def live_state(self) -> dict[str, Any]:
        s = self.service
        return {"door": s.door.state(), "lockdown": self.lockdown(), "fps": round(s.fps, 1),
                "last_person": s.last_person, "device_id": s.config.device_id}

    def terminal_state(self) -> dict[str, Any]:
        state = terminal_message(self.service.door.state(), self.lockdown(), self.hub.last_decision,
                                 self.slot.latest(), challenge=self.hub.last_challenge)
        return {**state, "device_id": self.service.config.device_id}

    # ------------------------------------------------------------------ door

    def unlock(self, user: str) -> dict[str, Any]:
        seconds = self.service.config.door.unlock_seconds
        self.emit(user, "unlock", seconds=seconds)
        self.service.door.unlock(reason="console")
        return {"unlocked": True, "seconds": seconds}

    def lock(self, user: str) -> dict[str, Any]:
        self.emit(user, "lock")
        self.service.door.lock(reason="console")
        return {"locked": True}

    def set_lockdown(self, user: str, on: bool) -> dict[str, Any]:
        self.service.set_lockdown(on)  # the flag and the relock, atomic with respect to a face grant
        self.emit(user, "lockdown_on" if on else "lockdown_off")
        try:
            self.service.publish_status()
        except Exception:
            log.exception("could not publish the status after a lockdown change")
        return {"lockdown": on}

    # ------------------------------------------------------------------ people

    def people(self, query: str = "") -> list[dict[str, Any]]:
        with self._db_lock:
            return people_rows(*self._db(), query)

    def save_person(self, user: str, body: dict[str, Any], person_id: str | None = None) -> dict[str, Any]:
        """Create (``person_id`` None: the id comes from the body) or update a person and their policy."""
        creating = person_id is None
        pid = str(body.get("id", "")) if creating else person_id
        assert pid is not None
        if creating and not PERSON_ID.fullmatch(pid):
            raise ConsoleError("id: use 1-64 letters, digits, '.', '_' or '-'")
        name = body.get("name")
        if name is not None and (not isinstance(name, str) or len(name) > 200):
            raise ConsoleError("name: must be text of at most 200 characters")
        name = name.strip() if isinstance(name, str) and name.strip() else None
        consent = body.get("consent") or None  # {"at", "how", "notice_version"}: facegate/privacy/consent.py
        with self._db_lock:
            save_person(*self._db(), pid, body, creating=creating, embedder_sha256=self.service.embedder_sha256,
                        name=name, consent=consent)
        self.emit(user, "person_added" if creating else "person_updated", person_id=pid, name=name)
        return {"id": pid, "saved": True}

    def remove_person(self, user: str, person_id: str, purge_events: bool) -> dict[str, Any]:
        with self._db_lock:
            gallery, _ = self._db()
            try:
                removed = gallery.remove(person_id)
            except GalleryError as exc:
                raise ConsoleError(str(exc), 404) from None
        purged = 0
        if purge_events:
            purged = self._purge_journal(person_id)
            if self.service.grant_embeddings is not None:  # the faces behind their grants go with the events
                self.service.grant_embeddings.purge_person(person_id)
        self.emit(user, "person_removed", person_id=person_id, templates_removed=removed, events_purged=purged)
        return {"id": person_id, "templates_removed": removed, "events_purged": purged}

    def not_them(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        """"This was not them": the grant ``body["event_id"]`` let in someone else; its face becomes a negative
        template of the person it was granted as (docs/decision.md), reported as ``false_accept_reported``."""
        from facegate.gallery.negatives import FALSE_ACCEPT_EVENT, mark_event
        from facegate.recognition.grant_embeddings import GrantEmbeddingsError

        event_id = body.get("event_id")
        if not isinstance(event_id, str) or not 0 < len(event_id) <= 100:
            raise ConsoleError("event_id: the access_granted event's id (text)")
        grants = self.service.grant_embeddings
        if grants is None:
            raise ConsoleError("grant faces are not kept on this door (recognition.keep_grant_embeddings_days = 0)",
                               409)
        with self._db_lock:
            gallery, _ = self._db()
            try:
                fields = mark_event(gallery, grants, event_id, self.service.embedder_sha256,
                                    dim=self.service.embedder_dim)
            except GrantEmbeddingsError as exc:
                raise ConsoleError(str(exc), 404) from None
            except GalleryError as exc:
                raise ConsoleError(str(exc)) from None
        self.service.emitter.emit(FALSE_ACCEPT_EVENT, **fields, source="console", user=user)
        return {**fields, "marked": True}

    def _purge_journal(self, person_id: str) -> int:
        from facegate.journal import Journal

        path = self.service.config.journal_path
        if not path.is_file():
            return 0
        with Journal(path, self.service.config.journal.max_events, self.service.config.journal.retention_days) as j:
            return int(j.purge_person(person_id))

    def _add_template(self, user: str, person_id: str, template: NewTemplate, how: str) -> dict[str, Any]:
        with self._db_lock:
            gallery, _ = self._db()
            answer = add_template(gallery, person_id, template, self.service.embedder_sha256,
                                  self.service.embedder_dim)
        self.emit(user, "photo_enrolled", person_id=person_id, source=how)
        return answer

    def capture(self, user: str, person_id: str) -> dict[str, Any]:
        """Enrol from the door camera: wait up to 3 s for a frame whose single face passes every gate."""
        deadline = time.monotonic() + CAPTURE_WAIT_SECONDS
        seq, reason = 0, "no frame from the camera"
        while (left := deadline - time.monotonic()) > 0:
            frame = self.slot.wait_newer(seq, timeout=left)
            if frame is None:
                break
            seq = frame.seq
            template, reason = face_template(frame.faces, f"camera {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}")
            if template is not None:
                return self._add_template(user, person_id, template, "camera")
        return {"id": person_id, "accepted": False, "reason": reason}

    def capture_quality(self) -> dict[str, Any]:
        frame = self.slot.latest()
        if frame is None or time.time() - frame.ts > 2.0:
            return {"faces": 0, "ok": False, "reason": "no frame from the camera", "quality": None,
                    "failures": [], "liveness": None}
        return quality_feedback(frame.faces)

    def pipeline(self) -> FacePipeline:
        """The console's own pipeline for uploaded photos (built on first use; callers hold ``_pipeline_lock``)."""
        if self._pipeline is None:
            self._pipeline = self._make_pipeline()
        return self._pipeline

    def upload_photo(self, user: str, person_id: str, data: bytes, filename: str) -> dict[str, Any]:
        from facegate.enrolment.photo import assess

        rgb = uploaded_image(data, filename)  # in the door's own process: the size gate before decoding
        with self._pipeline_lock:
            template, reason = assess(self.pipeline(), rgb, filename)
        if template is None:
            return {"id": person_id, "accepted": False, "reason": reason}
        return self._add_template(user, person_id, template, "upload")

    def bulk_zip(self, user: str, data: bytes, filename: str) -> dict[str, Any]:
        """The console's zip upload: ``facegate enroll --folder`` on an archive (facegate.enrolment)."""
        import io

        from facegate.enrolment.bulk import enrol_photos
        from facegate.enrolment.sources import ZipPhotos

        try:
            with ZipPhotos(io.BytesIO(data), name=filename) as photos, self._pipeline_lock, self._db_lock:
                gallery, _ = self._db()
                result = enrol_photos(self.pipeline(), gallery, photos, photos.people).as_dict()
        except FacegateError as exc:
            raise ConsoleError(str(exc)) from None
        self.emit(user, "bulk_enrolled", archive=filename, persons=result["persons_enrolled"],
                  photos_accepted=result["accepted"], photos_refused=result["refused_images"])
        return result

    def subject_export(self, user: str, person_id: str) -> dict[str, Any]:
        """Everything the door holds about one person (facegate/rights/subject.py), as an audited action."""
        from facegate.rights.subject import subject_export

        journal = self.journal() if self.service.config.journal_path.is_file() else None
        with self._db_lock:
            gallery, _ = self._db()
            try:
                data = subject_export(gallery, person_id, journal)
            except GalleryError as exc:
                raise ConsoleError(str(exc), 404) from None
        self.emit(user, "subject_exported", person_id=person_id)
        return data

    # ------------------------------------------------------------------ journal

    def journal(self) -> Any:
        from facegate.journal import Journal

        if self._journal is None:
            path = self.service.config.journal_path
            if not path.is_file():
                raise ConsoleError("no journal yet ([journal] enabled = false, or no event so far)", 404)
            self._journal = Journal(path, readonly=True)
        return self._journal

    # ------------------------------------------------------------------ system

    def system(self) -> dict[str, Any]:
        s = self.service
        checks = s.health_checks()
        frame = self.slot.latest()
        age = None if frame is None else round(time.time() - frame.ts, 1)
        checks.append({"check": "camera", "ok": age is not None and age < 5,
                       "detail": "no frame yet" if age is None else f"last frame {age} s ago",
                       "fix": "" if age is not None and age < 5 else "see 'facegate doctor' with the service stopped"})
        door = s.door.state()
        checks.append({"check": "gpio", "ok": not door["closed"], "detail": f"relay {door['lock']}", "fix": ""})
        versions = {"facegate": __version__, "python": platform.python_version(), "numpy": np.__version__,
                    "opencv": cv2.__version__}
        sync = s.sync_state()
        status = s.status()
        models = s.models()
        return {"checks": checks, "versions": versions, "models": models, "status": status,
                "groups": s.group_rates(),
                "sync": sync or {"enabled": False}, "console": {
                    "sessions": len(self.sessions), "streams": self.streams, "dropped_streams": self.dropped_streams,
                    "event_subscribers": self.hub.subscribers, "dropped_subscribers": self.hub.dropped_subscribers}}


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, default=str).encode()
