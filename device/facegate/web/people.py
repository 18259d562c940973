"""People as both consoles list and change them: the door's (facegate.web.console) and the fleet's
(facegate.fleet.people) edit the same Gallery and AccessPolicy stores and must refuse the same things.

One place for a person's list row, for creating or updating a person with their access policy (and removing a
person a refused creation half-made), for an uploaded photo's size gate and decoding (the gate of ``facegate
enroll``), and for adding a template, so the two consoles cannot drift apart on what a person is or which upload
reaches the image decoder. Callers hold their own database lock around the calls that take a gallery.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from facegate.access.policy import AccessPolicy, PolicyError
from facegate.base.imageio import decode_image
from facegate.errors import FacegateError, GalleryError, ImageError
from facegate.gallery.store import Gallery, NewTemplate

__all__ = ["PERSON_ID", "ConsoleError", "add_template", "people_rows", "save_person", "uploaded_image"]

PERSON_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class ConsoleError(FacegateError):
    """A request the console refuses, with the reason shown to the user (HTTP 400 unless ``status``)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def people_rows(gallery: Gallery, policy: AccessPolicy, query: str = "",
                more: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Each person whose id or name contains ``query`` (any case), with their policy; ``more`` adds a console's
    own fields (the fleet's doors) after the template count."""
    q = query.strip().lower()
    out = []
    for p in gallery.persons():
        if q and q not in p["id"].lower() and q not in (p["name"] or "").lower():
            continue
        pol = policy.get_person(p["id"])
        out.append({
            "id": p["id"], "name": p["name"], "templates": p["templates"], **(more(p) if more else {}),
            "groups": list(pol.groups) if pol else [],
            "valid_from": pol.valid_from.isoformat() if pol and pol.valid_from else None,
            "valid_until": pol.valid_until.isoformat() if pol and pol.valid_until else None,
            "schedule": pol.schedule if pol else None,
        })
    return out


def save_person(gallery: Gallery, policy: AccessPolicy, person_id: str, body: dict[str, Any], *, creating: bool,
                embedder_sha256: str, name: str | None, **enrol: Any) -> None:
    """Create (``creating``: the id must be new) or update a person and their access policy from ``body``.

    ``enrol`` goes to :meth:`Gallery.enroll` (the door's consent, the fleet's doors metadata). A creation the
    gallery or the policy refuses leaves no one behind.
    """
    exists = gallery.person(person_id) is not None
    if creating and exists:
        raise ConsoleError(f"a person with id {person_id!r} exists", 409)
    if not creating and not exists:
        raise ConsoleError(f"no person {person_id!r}", 404)
    try:
        gallery.enroll(person_id, [], embedder_sha256, name=name, **enrol)
        policy.set_person(person_id, valid_from=body.get("valid_from") or None,
                          valid_until=body.get("valid_until") or None,
                          groups=body.get("groups") or None, schedule=body.get("schedule") or None)
    except (PolicyError, GalleryError) as exc:
        if creating and gallery.person(person_id) is not None:  # a refused enrol (no consent) left no one
            gallery.remove(person_id)
        raise ConsoleError(str(exc)) from None


def uploaded_image(data: bytes, filename: str) -> np.ndarray:
    """An uploaded photo as RGB, through the size gate of ``facegate enroll`` first: a few KB of PNG/BMP/PGM can
    decode to gigabytes in the console's process, so only images whose size is read and bounded are decoded."""
    from facegate.enrolment.sources import MAX_IMAGE_PIXELS, check_photo_bytes

    problem = check_photo_bytes(data)
    if problem is not None:
        raise ConsoleError(f"{filename}: {problem}", 413 if "megapixels" in problem or "MiB" in problem else 400)
    try:
        return np.ascontiguousarray(decode_image(data, filename, max_pixels=MAX_IMAGE_PIXELS))
    except ImageError as exc:
        raise ConsoleError(str(exc)) from None


def add_template(gallery: Gallery, person_id: str, template: NewTemplate, embedder_sha256: str,
                 dim: int) -> dict[str, Any]:
    """Enrol one accepted template of an existing person; the answer both consoles give for it."""
    if gallery.person(person_id) is None:
        raise ConsoleError(f"no person {person_id!r}", 404)
    try:  # the template gate (facegate.gallery.templates) names what is wrong
        gallery.enroll(person_id, [template], embedder_sha256, dim=dim)
    except GalleryError as exc:
        raise ConsoleError(str(exc)) from None
    count = next((p["templates"] for p in gallery.persons() if p["id"] == person_id), 0)
    return {"id": person_id, "accepted": True, "reason": "accepted", "templates": count,
            "quality": template.quality}
