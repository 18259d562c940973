"""Marking a grant as wrong: "This was not them" (docs/decision.md).

One place for the console's button and ``facegate gallery negative add``: the face behind a grant (kept by
facegate.recognition.grant_embeddings) or faces from photos become negative templates of the person the door
took them for, and the ``false_accept_reported`` event's fields are made here so both say the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facegate.errors import GalleryError
from facegate.gallery.store import Gallery
from facegate.gallery.templates import check_template
from facegate.recognition.grant_embeddings import GrantEmbeddings

__all__ = ["FALSE_ACCEPT_EVENT", "mark_event", "mark_images"]

FALSE_ACCEPT_EVENT = "false_accept_reported"


def mark_event(gallery: Gallery, grants: GrantEmbeddings, event_id: str, embedder_sha256: str, *,
               person_id: str | None = None, dim: int | None = None) -> dict[str, Any]:
    """The grant ``event_id`` was wrong: its face becomes a negative of the person it was granted as.

    ``person_id``, when given, must be that person (a typo must not teach the wrong person). Returns the
    ``false_accept_reported`` fields."""
    kept = grants.get(event_id)
    if person_id is not None and person_id != kept.person_id:
        raise GalleryError(f"event {event_id!r} granted '{kept.person_id}', not '{person_id}'; nothing was marked")
    negative = gallery.add_negative(kept.person_id, kept.embedding, embedder_sha256, source="grant",
                                    event_id=event_id, dim=dim)
    return _fields(gallery, kept.person_id, negative, granted_event_id=event_id)


def mark_images(gallery: Gallery, person_id: str, embeddings: list[tuple[str, np.ndarray]], embedder_sha256: str, *,
                dim: int | None = None) -> dict[str, Any]:
    """Faces from photos (name, embedding) that are NOT ``person_id`` become their negatives, all or none
    checked first (the template gate), then added one by one."""
    if not embeddings:
        raise GalleryError("no face to mark")
    if gallery.person(person_id) is None:
        raise GalleryError(f"no person '{person_id}' in gallery {gallery.path}")
    size = dim if dim is not None else gallery.embedder_dim
    for name, vector in embeddings:  # every face through the gate before the first is stored
        check_template(vector, size, person_id, where=f"the negative template from {name}")
    ids = [gallery.add_negative(person_id, vector, embedder_sha256, source=name, dim=dim)
           for name, vector in embeddings]
    return _fields(gallery, person_id, ids[-1], negative_ids=ids)


def _fields(gallery: Gallery, person_id: str, negative_id: int, **more: Any) -> dict[str, Any]:
    person = gallery.person(person_id) or {}
    return {"person_id": person_id, "name": person.get("name"), "negative_id": negative_id,
            "negatives": len(gallery.negatives(person_id)), "gallery_version": gallery.version, **more}
