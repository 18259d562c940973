"""Door side: apply a verified bundle to the gallery in one SQLite transaction.

Atomicity is SQLite's: every row change and the new version commit together or not at all (WAL journal,
so a power cut or SIGKILL mid-apply leaves the previous gallery; the SIGKILL test repeats that 50 times).
The rollback and base checks run inside the write transaction, so two appliers can not both pass them.

What is synced: persons, templates, negative templates and ``person_policy``. What is not: ``device_local``
(lockdown), which this module never names. Deleting a person deletes their templates, negatives and policy
through the schema's ``ON DELETE CASCADE``; a person in a delta is replaced as a whole (delete, then insert),
which makes applying the same person twice harmless.

Meta keys written with each apply: ``version`` (= the bundle's), ``embedder_sha256``, ``sync_version``
(the last applied bundle version; rollback and base checks compare with it, not with ``version``, which a
local enrolment may have bumped since), ``sync_bundle_sha256`` and ``sync_applied_at``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from facegate.errors import FacegateError
from facegate.gallery.store import NEGATIVES_COLUMN, Gallery
from facegate.gallery.templates import TemplateError, check_blob
from facegate.privacy.consent import consent_of
from facegate.sync.bundle import Bundle, BundleError, verify_bundle
from facegate.sync.keys import public_keys_by_id

__all__ = ["ApplyResult", "SyncState", "apply_bundle", "apply_file", "check_bundle_templates", "sync_state"]


@dataclass(frozen=True)
class SyncState:
    version: int  # last applied bundle version, 0 when none
    bundle_sha256: str | None


@dataclass(frozen=True)
class ApplyResult:
    version: int
    kind: str
    persons: int  # in the gallery after the apply
    templates: int
    upserted: int
    deleted: int
    bundle_sha256: str


def sync_state(gallery: Gallery) -> SyncState:
    return SyncState(int(gallery.meta("sync_version") or 0), gallery.meta("sync_bundle_sha256"))


def check_bundle_templates(bundle: Bundle, embedder_dim: int | None) -> None:
    """Every template of the bundle through the template gate (facegate.gallery.templates), or
    ``BundleError("bad_template")`` naming the person: one bad template refuses the whole bundle, since a
    wrong-length one stops all recognition and one that is not unit length matches strangers."""
    for person in bundle.persons:
        for j, t in enumerate(person.templates):
            try:
                check_blob(t.embedding, embedder_dim, person.id, where=f"templates[{j}]")
            except TemplateError as exc:
                raise BundleError("bad_template", str(exc), bundle.header.version) from None
        for j, t in enumerate(person.negatives):  # a negative of norm 100 would veto everyone it touches
            try:
                check_blob(t.embedding, embedder_dim, person.id, where=f"negatives[{j}]")
            except TemplateError as exc:
                raise BundleError("bad_template", str(exc), bundle.header.version) from None


def apply_bundle(gallery: Gallery, bundle: Bundle, embedder_sha256: str,
                 embedder_dim: int | None = None) -> ApplyResult:
    """Make the gallery the bundle's version, or raise :class:`BundleError` and leave it untouched.

    ``embedder_sha256`` is the door's loaded embedder: templates from another model are meaningless here.
    ``embedder_dim`` is its dimension (None: the gallery's, else the bundle's own); every template must pass
    the template gate for it.
    """
    h = bundle.header
    if h.embedder_sha256 != embedder_sha256:
        raise BundleError("embedder_mismatch", f"bundle templates are from embedder {h.embedder_sha256[:12]}…, "
                          f"this door runs {embedder_sha256[:12]}…", h.version)
    dim = embedder_dim if embedder_dim is not None else (gallery.embedder_dim or h.dim or None)
    check_bundle_templates(bundle, dim)
    if gallery.require_consent:  # [privacy] require_consent: a bundle cannot bring in someone without it
        missing = [p.id for p in bundle.persons if consent_of(p.metadata) is None]
        if missing:
            raise BundleError("apply_failed", f"[privacy] require_consent = true, and {len(missing)} person(s) "
                              f"carry no consent in their metadata (first: {missing[0]})", h.version)
    now = time.time()
    with gallery.transaction(set_version=h.version) as db:
        current = int((db.execute("SELECT value FROM meta WHERE key = 'sync_version'").fetchone() or [0])[0])
        if h.version <= current:
            raise BundleError("rollback", f"bundle version {h.version} is not newer than the applied {current}",
                              h.version)
        if h.kind == "delta" and h.base_version != current:
            raise BundleError("base_mismatch", f"delta from version {h.base_version}, but this door has {current}; "
                              "waiting for a full snapshot", h.version)
        if h.kind == "full":
            db.execute("DELETE FROM persons")  # cascades to templates and person_policy
        else:
            db.executemany("DELETE FROM persons WHERE id = ?",
                           [(pid,) for pid in bundle.deletes] + [(p.id,) for p in bundle.persons])
        try:
            db.executemany(
                "INSERT INTO persons (id, name, metadata, created_at, updated_at, card_number, card_sealed) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(p.id, stored[0], stored[1], p.created_at, p.updated_at, stored[2], stored[3])
                 for p in bundle.persons
                 for stored in (gallery.seal_person(p.id, p.name, json.dumps(p.metadata), p.card_number),)],
            )
        except sqlite3.IntegrityError as exc:  # a card number held by a person this delta does not touch
            raise BundleError("apply_failed", f"card numbers conflict with this door's gallery: {exc}",
                              h.version) from None
        db.executemany(
            "INSERT INTO templates (person_id, embedding, source, embedder_sha256, quality, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(p.id, *gallery.seal_template(p.id, t.embedding, t.source), h.embedder_sha256, json.dumps(t.quality),
              t.created_at)
             for p in bundle.persons for t in p.templates],
        )
        db.executemany(
            "INSERT INTO negatives (person_id, embedding, embedder_sha256, source, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [(p.id, *gallery.seal_template(p.id, t.embedding, t.source, NEGATIVES_COLUMN), h.embedder_sha256,
              t.created_at)
             for p in bundle.persons for t in p.negatives],
        )
        db.executemany(
            "INSERT INTO person_policy (person_id, valid_from, valid_until, groups, schedule, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(p.id, p.policy.valid_from, p.policy.valid_until, json.dumps(p.policy.groups),
              None if p.policy.schedule is None else json.dumps(p.policy.schedule, separators=(",", ":")),
              p.policy.updated_at)
             for p in bundle.persons if p.policy is not None],
        )
        db.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [("embedder_sha256", h.embedder_sha256), ("sync_version", str(h.version)),
             ("sync_bundle_sha256", bundle.sha256), ("sync_applied_at", repr(now))]
            + ([("embedder_dim", str(dim))] if dim is not None else []),
        )
        persons = int(db.execute("SELECT COUNT(*) FROM persons").fetchone()[0])
        templates = int(db.execute("SELECT COUNT(*) FROM templates").fetchone()[0])
    return ApplyResult(h.version, h.kind, persons, templates, len(bundle.persons), len(bundle.deletes), bundle.sha256)


class _Progress(Protocol):
    def send(self, obj: object) -> None: ...


def apply_file(gallery_path: Path | str, bundle_path: Path | str, public_keys: list[str], embedder_sha256: str,
               max_bytes: int, progress: _Progress | None = None, embedder_dim: int | None = None) -> ApplyResult:
    """Verify and apply a bundle file to a gallery file, outside the service (e.g. provisioning a door from
    removable media). The same checks as the receiver. ``progress.send("verified")`` is called between the
    verification and the transaction: the crash tests kill the process after it, during the apply."""
    path = Path(bundle_path)
    try:
        size = path.stat().st_size
        if size > max_bytes:  # before reading: a stray disk image on the stick must not fill the memory
            raise BundleError("too_large", f"{path}: {size} bytes, more than sync.max_bundle_bytes = {max_bytes}")
        data = path.read_bytes()
    except OSError as exc:
        raise FacegateError(f"{path}: cannot read: {exc.strerror}") from None
    bundle = verify_bundle(data, public_keys_by_id(public_keys), max_bytes)
    with Gallery(Path(gallery_path)) as gallery:
        if progress is not None:
            progress.send("verified")
        return apply_bundle(gallery, bundle, embedder_sha256, embedder_dim)
