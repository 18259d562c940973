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

import numpy as np

from facegate.access.policy import AccessPolicy, PolicyError
from facegate.base.imageio import decode_image
from facegate.errors import FacegateError, GalleryError, ImageError
from facegate.gallery.store import Gallery
from facegate.sync.bundle import PersonRecord
from facegate.vision.pipeline import FacePipeline
from facegate.web.console import PERSON_ID

__all__ = ["ALL_DOORS", "PeopleEditor", "PeopleError", "allowed_at", "person_doors"]

ALL_DOORS = "*"
MAX_NAME_CHARS = 200
DOOR_REF = re.compile(r"^(\*|[A-Za-z0-9_-]{1,64})$")
MAX_DOOR_REFS = 256


class PeopleError(FacegateError):
    """A change the console refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


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
        q = query.strip().lower()
        out = []
        with self.lock:
            for p in self.gallery.persons():
                if q and q not in p["id"].lower() and q not in (p["name"] or "").lower():
                    continue
                pol = self.policy.get_person(p["id"])
                out.append({
                    "id": p["id"], "name": p["name"], "templates": p["templates"],
                    "doors": person_doors(p["metadata"]), "groups": list(pol.groups) if pol else [],
                    "valid_from": pol.valid_from.isoformat() if pol and pol.valid_from else None,
                    "valid_until": pol.valid_until.isoformat() if pol and pol.valid_until else None,
                    "schedule": pol.schedule if pol else None,
                })
        return out

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
            exists = self.gallery.person(pid) is not None
            if creating and exists:
                raise PeopleError(f"a person with id {pid!r} exists", 409)
            if not creating and not exists:
                raise PeopleError(f"no person {pid!r}", 404)
            try:
                self.gallery.enroll(pid, [], embedder, name=name, metadata={"doors": doors})
                self.policy.set_person(pid, valid_from=body.get("valid_from") or None,
                                       valid_until=body.get("valid_until") or None,
                                       groups=body.get("groups") or None, schedule=body.get("schedule") or None)
            except (PolicyError, GalleryError) as exc:
                if creating:
                    self.gallery.remove(pid)
                raise PeopleError(str(exc)) from None
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
        from facegate.enrolment.sources import MAX_IMAGE_PIXELS, check_photo_bytes

        with self.lock:
            if self.gallery.person(person_id) is None:
                raise PeopleError(f"no person {person_id!r}", 404)
        problem = check_photo_bytes(data)
        if problem is not None:
            raise PeopleError(f"{filename}: {problem}", 413 if "megapixels" in problem or "MiB" in problem else 400)
        try:
            rgb = np.ascontiguousarray(decode_image(data, filename, max_pixels=MAX_IMAGE_PIXELS))
        except ImageError as exc:
            raise PeopleError(str(exc)) from None
        pipeline = self.pipeline()
        with self._pipeline_lock:
            template, reason = assess(pipeline, rgb, filename)
        if template is None:
            return {"id": person_id, "accepted": False, "reason": reason}
        with self.lock:
            try:
                self.gallery.enroll(person_id, [template], pipeline.embedder_sha256, dim=pipeline.embedder.dim)
            except GalleryError as exc:
                raise PeopleError(str(exc)) from None
            count = next((p["templates"] for p in self.gallery.persons() if p["id"] == person_id), 0)
        self._changed()
        return {"id": person_id, "accepted": True, "reason": "accepted", "templates": count,
                "quality": template.quality}
