"""Admin side: a signed bundle from the admin gallery, and the unsigned template files of door enrolment.

A full bundle is the whole gallery. A delta against base version B carries every person whose row,
templates or policy changed after B (each as a whole: applying it replaces that person) and the ids of
persons deleted after B, read from the gallery's ``sync_changes`` log (maintained by triggers, see
:mod:`facegate.gallery.store`). Versions are the admin gallery's own change counter, so "base B" always means
"what this gallery was at version B", which is what the doors that applied bundle B hold.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from facegate.errors import GalleryError
from facegate.gallery.masterface import CROWDING_THRESHOLD, TOP_K, crowding
from facegate.gallery.store import NEGATIVES_COLUMN, Gallery, NewTemplate
from facegate.gallery.templates import TemplateError, check_template
from facegate.privacy.seal import OVERHEAD_BYTES
from facegate.sync.bundle import PersonRecord, PolicyRecord, TemplateRecord, build_bundle, bundle_sha256

__all__ = ["ExportResult", "export_bundle", "export_person_templates", "import_person_templates", "read_persons"]

TEMPLATES_FORMAT = "facegate-templates"


@dataclass(frozen=True)
class ExportResult:
    data: bytes
    sha256: str
    kind: Literal["full", "delta"]
    version: int
    base_version: int | None
    persons: int
    deletes: int
    templates: int

    def as_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "bytes": len(self.data), "kind": self.kind, "version": self.version,
                "base_version": self.base_version, "persons": self.persons, "deletes": self.deletes,
                "templates": self.templates}


def read_persons(db: sqlite3.Connection, *, changed_after: int | None = None,
                 person_id: str | None = None, gallery: Gallery | None = None) -> list[PersonRecord]:
    """Persons with their templates and policy, in id order: all, those changed after a version, or one.

    Three ordered scans merged in Python rather than one query per person: 10k persons stay well under a
    second. The caller holds a read transaction so the three scans see one version.
    ``gallery`` opens the values of a sealed gallery (facegate.privacy); without it they are read as stored.
    """
    args: tuple[object, ...] = ()
    join = ""
    if changed_after is not None:
        join, args = "JOIN sync_changes c ON c.person_id = {col} AND c.version > ?", (changed_after,)
    elif person_id is not None:
        join, args = "WHERE {col} = ?", (person_id,)
    persons = db.execute(
        "SELECT p.id, p.name, p.metadata, p.created_at, p.updated_at, p.card_number, p.card_sealed FROM persons p "
        f"{join.format(col='p.id')} ORDER BY p.id", args
    ).fetchall()
    if gallery is not None:
        persons = [(pid, *gallery.open_person(pid, name, meta, card, sealed)[:2], created, updated,
                    gallery.open_person(pid, None, "{}", card, sealed)[2])
                   for pid, name, meta, created, updated, card, sealed in persons]
    else:
        persons = [row[:6] for row in persons]
    templates: dict[str, list[TemplateRecord]] = {}
    for pid, blob, quality, source, created in db.execute(
        "SELECT t.person_id, t.embedding, t.quality, t.source, t.created_at FROM templates t "
        f"{join.format(col='t.person_id')} ORDER BY t.person_id, t.id", args
    ):
        if gallery is not None:
            blob, source = gallery.open_template(pid, blob), gallery.open_source(pid, source)
        templates.setdefault(pid, []).append(TemplateRecord(bytes(blob), json.loads(quality), source, created))
    negatives: dict[str, list[TemplateRecord]] = {}
    for pid, blob, source, created in db.execute(
        "SELECT t.person_id, t.embedding, t.source, t.created_at FROM negatives t "
        f"{join.format(col='t.person_id')} ORDER BY t.person_id, t.id", args
    ):
        if gallery is not None:
            blob = gallery.open_template(pid, blob, NEGATIVES_COLUMN)
            source = gallery.open_source(pid, source, NEGATIVES_COLUMN)
        negatives.setdefault(pid, []).append(TemplateRecord(bytes(blob), {}, source, created))
    policies: dict[str, PolicyRecord] = {}
    for pid, start, until, groups, schedule, updated in db.execute(
        "SELECT t.person_id, t.valid_from, t.valid_until, t.groups, t.schedule, t.updated_at FROM person_policy t "
        f"{join.format(col='t.person_id')}", args
    ):
        policies[pid] = PolicyRecord(start, until, json.loads(groups),
                                     None if schedule is None else json.loads(schedule), updated)
    return [
        PersonRecord(id=pid, name=name, metadata=json.loads(meta), created_at=created, updated_at=updated,
                     policy=policies.get(pid), templates=templates.get(pid, []), card_number=card,
                     negatives=negatives.get(pid, []))
        for pid, name, meta, created, updated, card in persons
    ]


def export_bundle(
    gallery: Gallery,
    private_key: Ed25519PrivateKey,
    *,
    version: int | None = None,
    base: int | None = None,
    created: float | None = None,
    include: Callable[[PersonRecord], bool] | None = None,
) -> ExportResult:
    """A signed full snapshot, or a delta when ``base`` is given.

    ``version`` (at least the gallery's current version) first moves the admin gallery's counter up to it,
    e.g. after restoring an old admin backup, so later deltas keep referring to this gallery's own history.
    ``include`` picks the persons one door may hold (the fleet server's per-door galleries): the others are
    left out of a full snapshot, and a delta deletes those of them that changed since ``base``.
    """
    if version is not None:
        current = gallery.version
        if version < current:
            raise GalleryError(f"--version {version} is below the gallery's version {current}; doors would "
                               "refuse it as a rollback")
        if version > current:
            with gallery.transaction(set_version=version):
                pass
    embedder = gallery.embedder_sha256
    if embedder is None:
        raise GalleryError(f"{gallery.path}: no embedder recorded (enrol someone first)")
    with gallery.snapshot() as db:
        now = int(gallery.meta("version") or 0)
        deletes: list[str] = []
        if base is None:
            persons = read_persons(db, gallery=gallery)
        else:
            since = int(gallery.meta("changes_since") or 0)
            if not since <= base < now:
                raise GalleryError(
                    f"--base {base}: a delta needs {since} <= base < {now} (the gallery's version); "
                    + ("export a full snapshot instead" if base < since else "nothing changed since then")
                )
            persons = read_persons(db, changed_after=base, gallery=gallery)
            deletes = [r[0] for r in db.execute(
                "SELECT person_id FROM sync_changes WHERE version > ? AND deleted = 1 ORDER BY person_id", (base,))]
        if include is not None:
            excluded = [p.id for p in persons if not include(p)]
            persons = [p for p in persons if include(p)]
            if base is not None:
                deletes = sorted(set(deletes) | set(excluded))
        mixed = db.execute("SELECT COUNT(*) FROM templates WHERE embedder_sha256 != ?", (embedder,)).fetchone()[0]
    if mixed:
        raise GalleryError(f"{gallery.path}: {mixed} template(s) were made by another embedder; re-enrol them")
    gallery.check_templates(None)  # a template doors would refuse (bad_template) fails here, not on every door
    kind: Literal["full", "delta"] = "full" if base is None else "delta"
    data = build_bundle(private_key, kind=kind, version=now, base_version=base, embedder_sha256=embedder,
                        persons=persons, deletes=deletes, created=created)
    return ExportResult(data, bundle_sha256(data), kind, now, base, len(persons), len(deletes),
                        sum(len(p.templates) for p in persons))


# ------------------------------------------------------------------ enrolment at a door


def export_person_templates(gallery: Gallery, person_id: str) -> dict[str, Any]:
    """One person's templates as unsigned JSON, to carry from a door to the admin gallery.

    Unsigned on purpose: the admin reviews and imports it, then signs a bundle; doors never accept this file.
    """
    with gallery.snapshot() as db:
        found = read_persons(db, person_id=person_id, gallery=gallery)
    if not found:
        raise GalleryError(f"no person '{person_id}' in gallery {gallery.path}")
    person = found[0]
    return {
        "format": TEMPLATES_FORMAT, "format_version": 1, "person_id": person.id, "name": person.name,
        "metadata": person.metadata, "embedder_sha256": gallery.embedder_sha256,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "templates": [{"embedding": base64.b64encode(t.embedding).decode("ascii"), "quality": t.quality,
                       "source": t.source, "created_at": t.created_at} for t in person.templates],
        "negatives": [{"embedding": base64.b64encode(t.embedding).decode("ascii"), "source": t.source,
                       "created_at": t.created_at} for t in person.negatives],
    }


def import_person_templates(gallery: Gallery, doc: Any, origin: str = "templates file",
                            embedder_dim: int | None = None) -> tuple[str, int]:
    """Add the templates of an :func:`export_person_templates` file to (admin) ``gallery``.

    Returns (person id, templates added). The embedder must match the gallery's: templates of another model
    would never match anyone. The file is unsigned and foreign, so every template must pass the template gate
    as it is (``embedder_dim``: the embedder's dimension, from the manifest; None: the gallery's), and none may
    be a master face (:mod:`facegate.gallery.masterface`): too close to too many of the gallery's other persons.
    """
    def bad(what: str) -> GalleryError:
        return GalleryError(f"{origin}: {what}")

    if not isinstance(doc, dict) or doc.get("format") != TEMPLATES_FORMAT or doc.get("format_version") != 1:
        raise bad(f"not a {TEMPLATES_FORMAT} version 1 file")
    person_id, embedder = doc.get("person_id"), doc.get("embedder_sha256")
    if not isinstance(person_id, str) or not person_id or not isinstance(embedder, str):
        raise bad("person_id and embedder_sha256 must be strings")
    name, metadata = doc.get("name"), doc.get("metadata")
    if name is not None and not isinstance(name, str):
        raise bad("name must be a string or null")
    if metadata is not None and not isinstance(metadata, dict):
        raise bad("metadata must be an object or null")
    items = doc.get("templates")
    if not isinstance(items, list) or not items:
        raise bad("templates must be a non-empty list")
    gallery.check_embedder(embedder)
    known = gallery.embedder_dim
    if embedder_dim is not None and known is not None and embedder_dim != known:
        raise bad(f"the embedder makes {embedder_dim} values, the gallery holds {known}-value templates")
    dim = embedder_dim if embedder_dim is not None else known
    templates: list[NewTemplate] = []
    for i, t in enumerate(items):
        try:
            vector = np.frombuffer(base64.b64decode(t["embedding"], validate=True), dtype="<f4")
            quality = {str(k): float(v) for k, v in dict(t.get("quality") or {}).items()}
            source = t.get("source")
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
            raise bad(f"templates[{i}]: {exc}") from None
        if not all(map(math.isfinite, quality.values())):
            raise bad(f"templates[{i}]: non-finite quality values")
        try:  # refused, never re-normalised: the file is not the embedder's own output
            vector = check_template(vector, dim, person_id, where=f"templates[{i}]")
        except TemplateError as exc:
            raise bad(str(exc)) from None
        if dim is None:
            dim = vector.size
        templates.append(NewTemplate(vector, quality, source if isinstance(source, str) else None))
    negatives: list[tuple[np.ndarray, str | None]] = []
    for i, t in enumerate(_negative_items(doc, bad)):
        try:
            vector = np.frombuffer(base64.b64decode(t["embedding"], validate=True), dtype="<f4")
            source = t.get("source")
            vector = check_template(vector, dim, person_id, where=f"negatives[{i}]")
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
            raise bad(f"negatives[{i}]: {exc}") from None
        except TemplateError as exc:
            raise bad(str(exc)) from None
        negatives.append((vector, source if isinstance(source, str) else None))
    _refuse_master_faces(gallery, person_id, np.stack([t.embedding for t in templates]), bad)
    added = gallery.enroll(person_id, templates, embedder, name=name, metadata=metadata, dim=dim)
    for vector, source in negatives:
        gallery.add_negative(person_id, vector, embedder, source=source, dim=dim)
    return person_id, added


def _negative_items(doc: dict[str, Any], bad: Any) -> list[Any]:
    """The file's negative templates ("This was not them"); files made before them have none."""
    items = doc.get("negatives", [])
    if not isinstance(items, list):
        raise bad("negatives must be a list")
    return items


def _refuse_master_faces(gallery: Gallery, person_id: str, vectors: np.ndarray, bad: Any) -> float | None:
    """Raise ``bad(...)`` when a template is a master face; returns the highest crowding (None: no one to
    compare with, the first person of a gallery)."""
    size = 4 * vectors.shape[1]
    with gallery.snapshot() as db:
        overhead = OVERHEAD_BYTES if gallery.sealer is not None else 0
        rows = [(pid, gallery.open_template(pid, blob)) for pid, blob in db.execute(
            "SELECT person_id, embedding FROM templates WHERE person_id != ? AND length(embedding) = ?",
            (person_id, size + overhead))]
    if not rows:
        return None
    ids = [str(r[0]) for r in rows]
    reference = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), -1)
    scores = crowding(vectors, reference, ids)
    worst = int(np.argmax(scores))
    if scores[worst] > CROWDING_THRESHOLD:
        raise bad(f"person '{person_id}': templates[{worst}] is a master face: its mean similarity to its {TOP_K} "
                  f"closest other persons is {scores[worst]:.3f}, above {CROWDING_THRESHOLD} (real faces stay below "
                  "0.62, docs/master-faces.md); it would match other people. Re-enrol the person from photos")
    return float(scores[worst])
