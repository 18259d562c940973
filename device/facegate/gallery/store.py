"""SQLite gallery: persons with several templates each, versioned, changed only in whole transactions.

SQLite (stdlib) gives atomic multi-row changes and survives power loss in WAL mode, which is what a device
that may lose power mid-update needs. Every change bumps ``version`` so sync and status can say what a door has.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facegate.base.private_files import private_sqlite
from facegate.errors import GalleryError
from facegate.gallery.changelog import change_log_kept, forget_person
from facegate.gallery.index import EmbeddingIndex
from facegate.gallery.migrations import prepare
from facegate.gallery.sealing import ValueSealing
from facegate.gallery.templates import check_template, template_problems
from facegate.privacy.consent import check_consent, consent_of
from facegate.privacy.seal import OVERHEAD_BYTES, Sealer
from facegate.privacy.store import Progress, bind, scrub, seal_in_one_transaction

if TYPE_CHECKING:
    from facegate.recognition.calibration import FairCalibration

MAX_CARD_NUMBER = 2**32 - 1  # what the gallery stores; each output checks its own format's range when sending


def check_card_number(card_number: object) -> int:
    """A card number is a non-negative integer (a bool is not); raises GalleryError naming the value."""
    if isinstance(card_number, bool) or not isinstance(card_number, int) or not 0 <= card_number <= MAX_CARD_NUMBER:
        raise GalleryError(f"card number {card_number!r} must be an integer from 0 to {MAX_CARD_NUMBER}")
    return card_number


@dataclass(frozen=True)
class NewTemplate:
    embedding: np.ndarray
    quality: dict[str, float]
    source: str | None = None


# Where negative templates are sealed: their own associated data, so a negative cannot pass for a template.
NEGATIVES_COLUMN = "negatives.embedding"


class Gallery(ValueSealing):
    """The gallery file. ``sealer``: encrypt everything personal at rest (facegate.privacy, docs/privacy.md).

    A plain gallery opened with a sealer is sealed in place, in one transaction (``progress`` hears each step).
    A sealed gallery opened without one finds its key from the place it recorded; with another key it is
    refused (:class:`~facegate.privacy.keys.PrivacyKeyError`) and nothing changes. What stays plain: person
    ids (the key every table and fleet sync join on: use opaque ids), timestamps, template counts and quality
    figures, the access policy's dates and groups, and the meta and change-log tables.
    """

    def __init__(self, path: Path, sealer: Sealer | None = None, *, progress: Progress | None = None) -> None:
        self.path = Path(path)
        self.sealer: Sealer | None = None
        try:
            private_sqlite(self.path)  # names and biometric templates: owner-only, -wal/-shm included
        except OSError as exc:
            raise GalleryError(f"cannot create gallery {self.path}: {exc}") from None
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            # Privacy: a removed person's embeddings are overwritten on disk, not left in free pages.
            self._db.execute("PRAGMA secure_delete=ON")
            # Fleet sync applies bundles on its own connection while the service reads: wait, don't fail.
            self._db.execute("PRAGMA busy_timeout=5000")
            prepare(self._db)  # tables, and those an older file lacks (facegate.gallery.migrations)
            self.sealer, plain = bind(self._db, self.path, sealer)
            if plain:
                self._seal_all(progress)
            if self.sealer is not None:
                scrub(self._db, progress)
        except sqlite3.DatabaseError as exc:
            raise GalleryError(f"cannot open gallery {self.path}: {exc}") from None
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _seal_all(self, progress: Progress | None) -> None:
        """Seal every personal value of a plain gallery in one transaction, recording the key with it.

        A crash anywhere before COMMIT leaves the plain gallery as it was; after it, the sealed one. The change
        log is restored as it was: sealing changes how values are stored, not what a door holds.
        """
        db = self._db

        def rewrite() -> None:
            with change_log_kept(db):
                seal_rows()

        def seal_rows() -> None:
            # In chunks by key (never a cursor over rows being rewritten): a 10k gallery's rows never all in memory.
            last: str = ""
            while rows := db.execute("SELECT id, name, metadata, card_number FROM persons WHERE id > ? ORDER BY id "
                                     "LIMIT 1000", (last,)).fetchall():
                db.executemany(
                    "UPDATE persons SET name = ?, metadata = ?, card_number = ?, card_sealed = ? WHERE id = ?",
                    [(*self._seal_person_row(pid, name, meta, card), pid) for pid, name, meta, card in rows])
                last = rows[-1][0]
            if progress:
                progress("persons")
            for table, column in (("templates", "templates.embedding"), ("negatives", NEGATIVES_COLUMN)):
                top = 0
                while rows := db.execute(f"SELECT id, person_id, embedding, source FROM {table} WHERE id > ? "
                                         "ORDER BY id LIMIT 1000", (top,)).fetchall():
                    db.executemany(f"UPDATE {table} SET embedding = ?, source = ? WHERE id = ?",
                                   [(*self.seal_template(pid, bytes(blob), source, column), tid)
                                    for tid, pid, blob, source in rows])
                    top = rows[-1][0]
            if progress:
                progress("templates")

        assert self.sealer is not None
        seal_in_one_transaction(db, self.sealer, progress, rewrite)

    @contextmanager
    def transaction(self, *, set_version: int | None = None) -> Iterator[sqlite3.Connection]:
        """One atomic change that bumps the gallery version; nothing is visible until it commits.

        ``set_version`` commits the gallery as exactly that version instead of bumping it: fleet sync makes a
        door's version the version of the bundle it applied, so status and events name the fleet's number.
        """
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            if set_version is None:
                self._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'version'")
            else:
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'version'", (str(int(set_version)),))
            self._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'revision'")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees one committed version (an export must not mix two)."""
        self._db.execute("BEGIN")
        try:
            yield self._db
        finally:
            self._db.execute("COMMIT")

    def meta(self, key: str) -> str | None:
        """A raw ``meta`` value (``version``, ``embedder_sha256``, ``sync_version``, ...) or None."""
        return self._meta(key)

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @property
    def version(self) -> int:
        return int(self._meta("version") or 0)

    @property
    def revision(self) -> int:
        """A local counter that every committed change moves up by one.

        ``version`` can stay the same across a change (a synced bundle sets it to the bundle's number, which a
        local enrolment may already have reached), so whoever caches the gallery (the service's index) compares
        this instead.
        """
        return int(self._meta("revision") or 0)

    @property
    def require_consent(self) -> bool:
        """``[privacy] require_consent`` as the service last recorded it here: every writer (CLI, console, bulk,
        bundles) then refuses a person without consent, whether or not it has read the config."""
        return self._meta("require_consent") == "1"

    def set_require_consent(self, required: bool) -> None:
        """Record the requirement (no version bump: nothing a door holds changes)."""
        self._db.execute("INSERT INTO meta VALUES ('require_consent', ?) ON CONFLICT(key) DO UPDATE SET "
                         "value = excluded.value", ("1" if required else "0",))

    def _check_consent_locked(self, db: sqlite3.Connection, person_id: str) -> None:
        row = db.execute("SELECT metadata FROM persons WHERE id = ?", (person_id,)).fetchone()
        meta = json.loads(self.open_person(person_id, None, row[0], None, None)[1]) if row else {}
        if consent_of(meta) is None:
            raise GalleryError(f"person '{person_id}': no consent recorded, and [privacy] require_consent = true "
                               f"for gallery {self.path}; give it (facegate enroll --consent-how HOW "
                               "--consent-notice VERSION, or the console's consent fields); nothing was enrolled")

    @property
    def embedder_sha256(self) -> str | None:
        return self._meta("embedder_sha256")

    @property
    def embedder_dim(self) -> int | None:
        """The number of values of this gallery's templates: recorded at enrolment or sync, else the size of a
        stored template, None for a gallery without either."""
        recorded = self._meta("embedder_dim")
        if recorded is not None:
            return int(recorded)
        row = self._db.execute("SELECT length(embedding) FROM templates LIMIT 1").fetchone()
        overhead = OVERHEAD_BYTES if self.sealer is not None else 0
        return None if row is None else (int(row[0]) - overhead) // 4

    def template_problems(self, dim: int | None) -> dict[str, str]:
        """person id -> what is wrong with one of their templates (the template gate), for every such person.

        ``dim`` is the loaded embedder's dimension (None: the gallery's own, see :attr:`embedder_dim`)."""
        with self.snapshot() as db:
            rows = db.execute("SELECT person_id, embedding, 'templates.embedding' FROM templates UNION ALL "
                              f"SELECT person_id, embedding, '{NEGATIVES_COLUMN}' FROM negatives ORDER BY person_id")
            return template_problems(((pid, self.open_template(pid, blob, column)) for pid, blob, column in rows),
                                     dim if dim is not None else self.embedder_dim)

    def check_templates(self, dim: int | None) -> None:
        """Raise :class:`GalleryError` naming every person (the first few) whose templates fail the gate.

        The door does not start on such a gallery: a template of the wrong length stops all recognition, one
        that is not unit length matches strangers (see facegate.gallery.templates)."""
        problems = self.template_problems(dim)
        if not problems:
            return
        named = "; ".join(f"person '{pid}': template {what}" for pid, what in list(problems.items())[:5])
        more = f" (and {len(problems) - 5} more persons)" if len(problems) > 5 else ""
        first = next(iter(problems))
        raise GalleryError(
            f"gallery {self.path} holds templates that cannot be matched: {named}{more}. The door does not start "
            f"on them. To recover: remove the person ('facegate gallery remove --gallery {self.path} {first}') and "
            "re-enrol them, or re-sync a signed bundle from the admin ('facegate gallery apply BUNDLE')"
        )

    def check_embedder(self, sha256: str) -> None:
        """Templates from another embedder are meaningless to this one: refuse rather than mis-match."""
        stored = self.embedder_sha256
        if stored is not None and stored != sha256:
            raise GalleryError(
                f"gallery {self.path} was enrolled with embedder sha256 {stored[:12]}…, the loaded embedder is "
                f"{sha256[:12]}…; re-enrol or load the matching model"
            )

    def enroll(
        self,
        person_id: str,
        templates: Iterable[NewTemplate],
        embedder_sha256: str,
        name: str | None = None,
        metadata: dict[str, Any] | None = None,
        card_number: int | None = None,
        *,
        dim: int | None = None,
        consent: dict[str, Any] | None = None,
    ) -> int:
        """Create or update the person and add templates, all in one transaction; returns templates added.

        ``card_number`` None keeps the person's current card number (see :meth:`set_card_number`).
        Every template passes the template gate (:mod:`facegate.gallery.templates`) for ``dim``, the
        embedder's dimension; without it, for the dimension this gallery already holds (or, in an empty one,
        the first template's). Callers holding the embedder pass ``dim``; it is then recorded.
        ``consent`` (facegate.privacy.consent) is stored as ``metadata["consent"]``, the rest of the metadata kept;
        with :attr:`require_consent` a person left without a valid consent is refused (nothing changes)."""
        if not person_id:
            raise GalleryError("person id must not be empty")
        if card_number is not None:
            check_card_number(card_number)
        self.check_embedder(embedder_sha256)
        items = list(templates)
        known = self.embedder_dim
        if dim is not None and known is not None and dim != known:
            raise GalleryError(f"gallery {self.path} holds {known}-value templates; this embedder makes {dim}")
        dim = dim if dim is not None else known
        if dim is None and items:
            dim = int(np.asarray(items[0].embedding).size)
        vectors = [check_template(t.embedding, dim, person_id, where=f"the template from {t.source or 'input'}")
                   for t in items]
        if consent is not None:
            consent = check_consent(consent)
            if metadata is None:
                current = self.person(person_id)
                metadata = dict(current["metadata"]) if current else {}
            metadata = {**metadata, "consent": consent}
        now = time.time()
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO meta VALUES ('embedder_sha256', ?)", (embedder_sha256,))
            if dim is not None:
                db.execute("INSERT OR IGNORE INTO meta VALUES ('embedder_dim', ?)", (str(dim),))
            stored_name, stored_meta, _, _ = self._seal_person_row(person_id, name, json.dumps(metadata or {}), None)
            db.execute(
                "INSERT INTO persons (id, name, metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET name = COALESCE(excluded.name, persons.name), "
                "metadata = CASE WHEN ? THEN excluded.metadata ELSE persons.metadata END, "
                "updated_at = excluded.updated_at",
                (person_id, stored_name, stored_meta, now, now, metadata is not None),
            )
            if card_number is not None:
                self._write_card(db, person_id, card_number)
            db.executemany(
                "INSERT INTO templates (person_id, embedding, source, embedder_sha256, quality, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (person_id, *stored, embedder_sha256, json.dumps(t.quality), now)
                    for t, v in zip(items, vectors, strict=True)
                    for stored in (self.seal_template(person_id, v.tobytes(), t.source),)
                ],
            )
            if self.require_consent:
                self._check_consent_locked(db, person_id)
        return len(items)

    def add_negative(self, person_id: str, embedding: np.ndarray, embedder_sha256: str, *,
                     source: str | None = None, event_id: str | None = None, dim: int | None = None) -> int:
        """Store a negative template of ``person_id`` (a face that is NOT them); returns its id.

        The same template gate as a template (a negative of norm 100 would veto everyone it touches). One
        negative per grant event: marking the same event twice changes nothing and returns the first id."""
        self.check_embedder(embedder_sha256)
        known = self.embedder_dim
        if dim is not None and known is not None and dim != known:
            raise GalleryError(f"gallery {self.path} holds {known}-value templates; this embedder makes {dim}")
        vector = check_template(embedding, dim if dim is not None else known, person_id,
                                where=f"the negative template from {source or event_id or 'input'}")
        if event_id is not None:
            row = self._db.execute("SELECT id FROM negatives WHERE person_id = ? AND event_id = ?",
                                   (person_id, event_id)).fetchone()
            if row is not None:
                return int(row[0])
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM persons WHERE id = ?", (person_id,)).fetchone() is None:
                raise GalleryError(f"no person '{person_id}' in gallery {self.path}")
            embedding_stored, source_stored = self.seal_template(person_id, vector.tobytes(), source, NEGATIVES_COLUMN)
            cur = db.execute(
                "INSERT INTO negatives (person_id, embedding, embedder_sha256, source, event_id, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (person_id, embedding_stored, embedder_sha256, source_stored, event_id, time.time()))
            return int(cur.lastrowid or 0)

    def negatives(self, person_id: str | None = None) -> list[dict[str, Any]]:
        """The negative templates (without their vectors), of one person or of all, oldest first."""
        where, args = ("WHERE person_id = ?", (person_id,)) if person_id is not None else ("", ())
        rows = self._db.execute(
            f"SELECT id, person_id, source, event_id, created_at FROM negatives {where} ORDER BY id", args)
        return [{"id": r[0], "person_id": r[1], "source": self.open_source(r[1], r[2], NEGATIVES_COLUMN),
                 "event_id": r[3], "created_at": r[4]} for r in rows]

    def remove_negative(self, negative_id: int) -> str:
        """Delete one negative template; returns whose it was."""
        with self.transaction() as db:
            row = db.execute("SELECT person_id FROM negatives WHERE id = ?", (negative_id,)).fetchone()
            if row is None:
                raise GalleryError(f"no negative template {negative_id} in gallery {self.path}")
            db.execute("DELETE FROM negatives WHERE id = ?", (negative_id,))
        return str(row[0])

    def negative_rows(self) -> list[tuple[str, bytes]]:
        """(person id, embedding) of every negative, in person order (the index and the template gate)."""
        return [(str(r[0]), self.open_template(str(r[0]), r[1], NEGATIVES_COLUMN)) for r in
                self._db.execute("SELECT person_id, embedding FROM negatives ORDER BY person_id, id")]

    def set_card_number(self, person_id: str, card_number: int | None) -> None:
        """Set (or with None, clear) a person's card number, in one transaction."""
        if card_number is not None:
            check_card_number(card_number)
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM persons WHERE id = ?", (person_id,)).fetchone() is None:
                raise GalleryError(f"no person '{person_id}' in gallery {self.path}")
            self._write_card(db, person_id, card_number)

    def _write_card(self, db: sqlite3.Connection, person_id: str, card_number: int | None) -> None:
        key = None if card_number is None else self.card_key(card_number)
        holder = None if key is None else db.execute(
            "SELECT id FROM persons WHERE card_number = ? AND id != ?", (key, person_id)).fetchone()
        if holder is not None:
            raise GalleryError(f"card number {card_number} already belongs to '{holder[0]}' in gallery {self.path}")
        _, _, stored, sealed = self._seal_person_row(person_id, None, "{}", card_number)
        db.execute("UPDATE persons SET card_number = ?, card_sealed = ?, updated_at = ? WHERE id = ?",
                   (stored, sealed, time.time(), person_id))

    def card_number(self, person_id: str) -> int | None:
        row = self._db.execute("SELECT card_number, card_sealed FROM persons WHERE id = ?", (person_id,)).fetchone()
        return None if row is None else self.open_person(person_id, None, "{}", row[0], row[1])[2]

    def remove(self, person_id: str) -> int:
        """Delete a person and every template of theirs (privacy: nothing of them stays); returns templates removed."""
        with self.transaction() as db:
            count = db.execute("SELECT COUNT(*) FROM templates WHERE person_id = ?", (person_id,)).fetchone()[0]
            if db.execute("DELETE FROM persons WHERE id = ?", (person_id,)).rowcount == 0:
                raise GalleryError(f"no person '{person_id}' in gallery {self.path}")
        return int(count)

    def erase_history(self, person_id: str) -> bool:
        """Erasure: forget that ``person_id`` was ever in this gallery; True if the change log named them.

        :meth:`remove` leaves a tombstone in ``sync_changes`` (so a delta can tell doors to delete the person),
        and the WAL keeps old page images with the person's name and templates until a checkpoint. This drops
        the tombstone and checkpoints the WAL to zero bytes (``secure_delete`` already zeroes freed space in the
        file). Without the tombstone a delta from before now could not carry the deletion, so ``changes_since``
        moves up to the current version: such deltas are refused, and a full snapshot (which has no such
        person, so applying it deletes them on every door) is exported instead. No version bump: nothing a
        door holds changes.
        """
        if self._db.execute("SELECT 1 FROM persons WHERE id = ?", (person_id,)).fetchone() is not None:
            raise GalleryError(f"'{person_id}' is still in gallery {self.path}: remove them first")
        named = forget_person(self._db, person_id)
        row = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if row is not None and int(row[0]) != 0:
            raise GalleryError(f"gallery {self.path}: the WAL could not be cleared (another process is reading "
                               "it); run the command again")
        return named

    def persons(self) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT p.id, p.name, p.metadata, p.created_at, p.updated_at, COUNT(t.id), p.card_number, p.card_sealed "
            "FROM persons p LEFT JOIN templates t ON t.person_id = p.id GROUP BY p.id ORDER BY p.id"
        ).fetchall()
        out = []
        for r in rows:
            name, meta, card = self.open_person(r[0], r[1], r[2], r[6], r[7])
            out.append({"id": r[0], "name": name, "metadata": json.loads(meta), "created_at": r[3],
                        "updated_at": r[4], "templates": r[5], "card_number": card})
        return out

    def names(self) -> dict[str, str | None]:
        """person id -> display name, without the metadata persons() parses (the service keeps only this)."""
        return self.names_from(self._db)

    def names_from(self, db: sqlite3.Connection) -> dict[str, str | None]:
        """:meth:`names` read on ``db`` (a snapshot's connection)."""
        rows = db.execute("SELECT id, name FROM persons").fetchall()
        if self.sealer is None:
            return dict(rows)
        return {pid: self.sealer.open_text(name, f"persons.name|{pid}") for pid, name in rows}

    def person(self, person_id: str) -> dict[str, Any] | None:
        return next((p for p in self.persons() if p["id"] == person_id), None)

    def counts(self) -> tuple[int, int]:
        persons = self._db.execute("SELECT COUNT(*) FROM persons").fetchone()[0]
        templates = self._db.execute("SELECT COUNT(*) FROM templates").fetchone()[0]
        return int(persons), int(templates)

    def build_index(self, calibration: FairCalibration | None = None) -> EmbeddingIndex:
        """The search matrix, streamed row by row into one float32 array already in person order.

        No list of all rows and no reordering copy (the person_id index gives the order; a window COUNT would
        make SQLite buffer every row): building a 10k-person index peaks near the matrix itself, which on a
        small Pi is the difference between fitting and not. The count only sizes the array; rows added between
        the two statements grow it.
        """
        count = int(self._db.execute("SELECT COUNT(*) FROM templates").fetchone()[0])
        ids: list[str] = []
        blobs: list[bytes] = []
        matrix: np.ndarray | None = None

        def flush() -> None:  # 1024 rows at a time: one frombuffer per chunk, not per row (start-up time)
            nonlocal matrix
            chunk = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), -1)
            done = len(ids) - len(blobs)
            if matrix is None:
                matrix = np.empty((max(count, len(ids)), chunk.shape[1]), dtype=np.float32)
            elif len(ids) > matrix.shape[0]:
                matrix = np.concatenate([matrix, np.empty((len(ids), matrix.shape[1]), dtype=np.float32)])
            matrix[done:len(ids)] = chunk
            blobs.clear()

        for person_id, blob in self._db.execute("SELECT person_id, embedding FROM templates ORDER BY person_id"):
            ids.append(person_id)
            blobs.append(self.open_template(person_id, blob))
            if len(blobs) == 1024:
                flush()
        if blobs:
            flush()
        negatives = self.negative_rows()
        if matrix is None:
            return EmbeddingIndex([], np.zeros((0, 0), dtype=np.float32), calibration)
        neg = None
        if negatives:
            neg = ([pid for pid, _ in negatives],
                   np.frombuffer(b"".join(b for _, b in negatives), dtype="<f4").reshape(len(negatives), -1))
        return EmbeddingIndex(ids, matrix[: len(ids)], calibration, negatives=neg)
