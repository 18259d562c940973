"""People once, every door: the admin gallery (the door's own Gallery and AccessPolicy stores) edited from the
console, with the enrolment photo gates of ``facegate enroll``.

Which doors a person may use is kept in the person's ``metadata`` as ``doors``: door ids and door-group names,
``"*"`` for every door (the default). The publisher gives each door a gallery holding only the persons allowed
there (facegate.fleet.publisher), so a door never holds the templates of someone it must not admit.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from facegate.access.policy import AccessPolicy
from facegate.errors import GalleryError
from facegate.gallery.store import Gallery
from facegate.sync.bundle import PersonRecord
from facegate.validate.names import DOOR_ID_PATTERN
from facegate.vision.pipeline import FacePipeline
from facegate.web.people import PERSON_ID, ConsoleError, add_template, people_rows, save_person, uploaded_image

__all__ = ["ALL_DOORS", "PeopleEditor", "PeopleError", "allowed_at", "person_doors"]

ALL_DOORS = "*"
MAX_NAME_CHARS = 200
DOOR_REF = re.compile(rf"^(\*|{DOOR_ID_PATTERN})$")
MAX_DOOR_REFS = 256


class PeopleError(ConsoleError):
    """A change the fleet console refuses; ``status`` is the HTTP status to answer with. The people handling it
    shares with the door's console (facegate.web.people) raises the base class."""


def person_doors(metadata: dict[str, Any] | None) -> list[str]:
    doors = (metadata or {}).get("doors")
    if not isinstance(doors, list) or not doors:
        return [ALL_DOORS]
    return [d for d in doors if isinstance(d, str)]


def allowed_at(person: PersonRecord, door_id: str, door_group: str | None) -> bool:
    """May this person use this door (by id, by the door's group, or everywhere)?"""
    doors = person_doors(person.metadata)
    return ALL_DOORS in doors or door_id in doors or (door_group is not None and door_group in doors)


def check_name(value: object) -> str | None:
    """A display name: text of at most 200 characters without control characters (they break CSV and logs)."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_NAME_CHARS:
        raise PeopleError(f"name: must be text of at most {MAX_NAME_CHARS} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co") for c in value):
        raise PeopleError("name: control or format characters are not allowed")
    return value.strip() or None


def check_doors(value: object) -> list[str]:
    if value is None:
        return [ALL_DOORS]
    if not isinstance(value, list) or len(value) > MAX_DOOR_REFS:
        raise PeopleError(f"doors: a list of at most {MAX_DOOR_REFS} door ids or door groups ('*': every door)")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not DOOR_REF.fullmatch(item):
            raise PeopleError(f"doors: {str(item)[:70]!r} is not a door id or door group (A-Z a-z 0-9 _ -) or '*'")
        if item not in out:
            out.append(item)
    return out or [ALL_DOORS]


class PeopleEditor:
    """All use of the admin gallery goes through ``lock`` (the publisher reads it under the same lock)."""

    def __init__(self, gallery_path: Path, make_pipeline: Callable[[], FacePipeline], lock: threading.RLock,
                 changed: Callable[[], None]) -> None:
        self.gallery = Gallery(gallery_path)
        self.policy = AccessPolicy(self.gallery)
        self.lock = lock
        self._make_pipeline = make_pipeline
        self._pipeline: FacePipeline | None = None
        self._pipeline_lock = threading.Lock()
        self._changed = changed

    def close(self) -> None:
        with self.lock:
            self.policy.close()
            self.gallery.close()

    def pipeline(self) -> FacePipeline:
        with self._pipeline_lock:
            if self._pipeline is None:
                self._pipeline = self._make_pipeline()
            return self._pipeline

    def people(self, query: str = "") -> list[dict[str, Any]]:
        with self.lock:
            return people_rows(self.gallery, self.policy, query, lambda p: {"doors": person_doors(p["metadata"])})

    def save(self, body: dict[str, Any], person_id: str | None = None) -> dict[str, Any]:
        """Create (``person_id`` None: the id comes from the body) or update a person, policy and doors."""
        creating = person_id is None
        pid = body.get("id") if creating else person_id
        if not isinstance(pid, str) or not PERSON_ID.fullmatch(pid):
            raise PeopleError("id: use 1-64 letters, digits, '.', '_' or '-'")
        name = check_name(body.get("name"))
        doors = check_doors(body.get("doors"))
        embedder = self.pipeline().embedder_sha256
        with self.lock:
            save_person(self.gallery, self.policy, pid, body, creating=creating, embedder_sha256=embedder, name=name,
                        metadata={"doors": doors})
        self._changed()
        return {"id": pid, "name": name, "doors": doors, "saved": True}

    def remove(self, person_id: str) -> dict[str, Any]:
        with self.lock:
            try:
                removed = self.gallery.remove(person_id)
            except GalleryError as exc:
                raise PeopleError(str(exc), 404) from None
        self._changed()
        return {"id": person_id, "templates_removed": removed}

    def add_photo(self, person_id: str, data: bytes, filename: str) -> dict[str, Any]:
        """One uploaded photo through the gates of ``facegate enroll``: size before decoding, one face, quality."""
        from facegate.enrolment.photo import assess

        with self.lock:
            if self.gallery.person(person_id) is None:
                raise PeopleError(f"no person {person_id!r}", 404)
        rgb = uploaded_image(data, filename)
        pipeline = self.pipeline()
        with self._pipeline_lock:
            template, reason = assess(pipeline, rgb, filename)
        if template is None:
            return {"id": person_id, "accepted": False, "reason": reason}
        with self.lock:
            answer = add_template(self.gallery, person_id, template, pipeline.embedder_sha256, pipeline.embedder.dim)
        self._changed()
        return answer
