"""Subject access (GDPR Art. 15): everything the door holds about one person, as one JSON document.

The record (name, metadata, card number, consent), the access policy, the templates as a count with their
dates and sources (the vectors themselves only on request: they are biometric data, and useless to a person
reading their file), and every journal row about them. Opened with the key, so an admin with the key can
answer a request from the door itself.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import numpy as np

from facegate.access.policy import AccessPolicy
from facegate.errors import GalleryError
from facegate.gallery.store import Gallery
from facegate.journal.store import Journal

__all__ = ["subject_export"]


def _iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(float(ts), dt.UTC).isoformat().replace("+00:00", "Z")


def subject_export(gallery: Gallery, person_id: str, journal: Journal | None = None, *,
                   with_vectors: bool = False) -> dict[str, Any]:
    """The person's data; raises :class:`GalleryError` when neither the gallery nor the journal knows them."""
    person = gallery.person(person_id)
    rows = [] if journal is None else journal.query(person=person_id, limit=None, newest_first=False)
    rows = [r for r in rows if r.get("person_id") == person_id]  # the filter also matches names: ids only
    if person is None and not rows:
        raise GalleryError(f"no person '{person_id}' in gallery {gallery.path}"
                           + ("" if journal is None else f" nor in journal {journal.path}"))
    out: dict[str, Any] = {"person_id": person_id, "exported_at": _iso(dt.datetime.now(dt.UTC).timestamp()),
                           "gallery": str(gallery.path), "record": None, "policy": None, "templates": None}
    if person is not None:
        record = {k: v for k, v in person.items() if k != "templates"}
        record["created_at"], record["updated_at"] = _iso(person["created_at"]), _iso(person["updated_at"])
        record["consent"] = (person.get("metadata") or {}).get("consent")
        out["record"] = record
        with AccessPolicy(gallery) as policy:
            found = policy.get_person(person_id)
        if found is not None:
            out["policy"] = {"valid_from": None if found.valid_from is None else found.valid_from.isoformat(),
                             "valid_until": None if found.valid_until is None else found.valid_until.isoformat(),
                             "groups": list(found.groups), "schedule": found.schedule}
        templates = []
        with gallery.snapshot() as db:
            for blob, source, quality, created in db.execute(
                    "SELECT embedding, source, quality, created_at FROM templates WHERE person_id = ? ORDER BY id",
                    (person_id,)):
                item: dict[str, Any] = {"created_at": _iso(created), "source": gallery.open_source(person_id, source),
                                        "quality": json.loads(quality)}
                if with_vectors:
                    vector = np.frombuffer(gallery.open_template(person_id, blob), dtype="<f4")
                    item["vector"] = [round(float(v), 6) for v in vector]
                templates.append(item)
        out["templates"] = {"count": len(templates), "items": templates}
    out["journal"] = None if journal is None else {"path": str(journal.path), "events": rows}
    return out
