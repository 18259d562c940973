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
from facegate.gallery.index import EmbeddingIndex
from facegate.gallery.schema import POLICY_SCHEMA
from facegate.gallery.templates import check_template, template_problems

if TYPE_CHECKING:
    from facegate.recognition.calibration import FairCalibration

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS persons (
    id TEXT PRIMARY KEY,
    name TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS templates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    person_id TEXT NOT NULL REFERENCES persons(id) ON DELETE CASCADE,
    embedding BLOB NOT NULL,
    embedder_sha256 TEXT NOT NULL,
    quality TEXT NOT NULL DEFAULT '{}',
    source TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS templates_person ON templates(person_id);
"""

# Fleet sync's change log: which persons changed (or were deleted) at which gallery version, so an admin
# gallery can export a delta against any earlier version. Triggers rather than code in each write path, so
# every writer (enroll, remove, access policy, a future one) is covered. One row per person id ever seen
# (tombstones included); ``version`` is the version the enclosing transaction commits as (current + 1, because
# every writer bumps the version by one at commit). An upsert, not INSERT OR REPLACE: a trigger's own conflict
# clause is overridden by the firing statement's. ``deleted`` is recomputed from whether the person still
# exists, so the order in which SQLite fires the cascade's triggers does not matter.
_CHANGE_LOG = """
CREATE TABLE IF NOT EXISTS sync_changes (
    person_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    deleted INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sync_changes_version ON sync_changes(version);
""" + "".join(
    f"""
CREATE TRIGGER IF NOT EXISTS sync_log_{table}_{op.lower()} AFTER {op} ON {table} BEGIN
    INSERT INTO sync_changes (person_id, version, deleted) VALUES (
        {row}.{column},
        (SELECT CAST(value AS INTEGER) + 1 FROM meta WHERE key = 'version'),
        NOT EXISTS (SELECT 1 FROM persons WHERE id = {row}.{column}))
    ON CONFLICT(person_id) DO UPDATE SET version = excluded.version, deleted = excluded.deleted;
END;"""
    for table, column in (("persons", "id"), ("templates", "person_id"), ("person_policy", "person_id"))
    for op, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD"))
)


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


class Gallery:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
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
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('version', '0')")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('revision', '0')")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            self._install_change_log()
            self._add_card_number()
        except sqlite3.DatabaseError as exc:
            raise GalleryError(f"cannot open gallery {self.path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _install_change_log(self) -> None:
        """Create the access-policy tables (so their triggers can exist from the start) and the change log.

        The policy schema lives in ``facegate.gallery.schema``, shared with the access policy.
        ``changes_since`` records the version from which the log is complete (0 for a new gallery), so a delta
        against an older base is refused, not guessed.
        """
        self._db.executescript(POLICY_SCHEMA)
        if self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'sync_changes'").fetchone() is None:
            try:  # one script, one transaction: all of the log or none of it
                self._db.executescript(
                    "BEGIN IMMEDIATE;" + _CHANGE_LOG
                    + "INSERT OR IGNORE INTO meta SELECT 'changes_since', value FROM meta WHERE key = 'version';"
                    + "COMMIT;"
                )
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _add_card_number(self) -> None:
        """Migration: ``persons.card_number`` (the credential sent to an access panel, facegate/panel).

        Added in place to galleries made before it, in one transaction, without touching ``version`` or
        ``revision``: a door's gallery is the same gallery, and fleet sync must not see a change. Unique where
        set, because two people with one card number are one card to the panel.
        """
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(persons)")}
        if "card_number" in columns:
            return
        try:
            self._db.executescript(
                "BEGIN IMMEDIATE; ALTER TABLE persons ADD COLUMN card_number INTEGER;"
                "CREATE UNIQUE INDEX IF NOT EXISTS persons_card_number ON persons(card_number) "
                "WHERE card_number IS NOT NULL; COMMIT;"
            )
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

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
        return None if row is None else int(row[0]) // 4

    def template_problems(self, dim: int | None) -> dict[str, str]:
        """person id -> what is wrong with one of their templates (the template gate), for every such person.

        ``dim`` is the loaded embedder's dimension (None: the gallery's own, see :attr:`embedder_dim`)."""
        with self.snapshot() as db:
            rows = db.execute("SELECT person_id, embedding FROM templates ORDER BY person_id, id")
            return template_problems(rows, dim if dim is not None else self.embedder_dim)

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
    ) -> int:
        """Create or update the person and add templates, all in one transaction; returns templates added.

        ``card_number`` None keeps the person's current card number (see :meth:`set_card_number`).
        Every template passes the template gate (:mod:`facegate.gallery.templates`) for ``dim``, the
        embedder's dimension; without it, for the dimension this gallery already holds (or, in an empty one,
        the first template's). Callers holding the embedder pass ``dim``; it is then recorded."""
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
        now = time.time()
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO meta VALUES ('embedder_sha256', ?)", (embedder_sha256,))
            if dim is not None:
                db.execute("INSERT OR IGNORE INTO meta VALUES ('embedder_dim', ?)", (str(dim),))
            db.execute(
                "INSERT INTO persons (id, name, metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET name = COALESCE(excluded.name, persons.name), "
                "metadata = CASE WHEN ? THEN excluded.metadata ELSE persons.metadata END, "
                "updated_at = excluded.updated_at",
                (person_id, name, json.dumps(metadata or {}), now, now, metadata is not None),
            )
            if card_number is not None:
                self._write_card(db, person_id, card_number)
            db.executemany(
                "INSERT INTO templates (person_id, embedding, embedder_sha256, quality, source, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (person_id, v.tobytes(), embedder_sha256, json.dumps(t.quality), t.source, now)
                    for t, v in zip(items, vectors, strict=True)
                ],
            )
        return len(items)

    def set_card_number(self, person_id: str, card_number: int | None) -> None:
        """Set (or with None, clear) a person's card number, in one transaction."""
        if card_number is not None:
            check_card_number(card_number)
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM persons WHERE id = ?", (person_id,)).fetchone() is None:
                raise GalleryError(f"no person '{person_id}' in gallery {self.path}")
            self._write_card(db, person_id, card_number)

    def _write_card(self, db: sqlite3.Connection, person_id: str, card_number: int | None) -> None:
        holder = None if card_number is None else db.execute(
            "SELECT id FROM persons WHERE card_number = ? AND id != ?", (card_number, person_id)).fetchone()
        if holder is not None:
            raise GalleryError(f"card number {card_number} already belongs to '{holder[0]}' in gallery {self.path}")
        db.execute("UPDATE persons SET card_number = ?, updated_at = ? WHERE id = ?",
                   (card_number, time.time(), person_id))

    def card_number(self, person_id: str) -> int | None:
        row = self._db.execute("SELECT card_number FROM persons WHERE id = ?", (person_id,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

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
        self._db.execute("BEGIN IMMEDIATE")
        try:
            named = self._db.execute("DELETE FROM sync_changes WHERE person_id = ?", (person_id,)).rowcount > 0
            if named:
                self._db.execute(
                    "UPDATE meta SET value = CAST(MAX(CAST(value AS INTEGER), "
                    "(SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'version')) AS TEXT) "
                    "WHERE key = 'changes_since'")
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        row = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if row is not None and int(row[0]) != 0:
            raise GalleryError(f"gallery {self.path}: the WAL could not be cleared (another process is reading "
                               "it); run the command again")
        return named

    def persons(self) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT p.id, p.name, p.metadata, p.created_at, p.updated_at, COUNT(t.id), p.card_number FROM persons p "
            "LEFT JOIN templates t ON t.person_id = p.id GROUP BY p.id ORDER BY p.id"
        ).fetchall()
        return [
            {"id": r[0], "name": r[1], "metadata": json.loads(r[2]), "created_at": r[3], "updated_at": r[4],
             "templates": r[5], "card_number": r[6]}
            for r in rows
        ]

    def names(self) -> dict[str, str | None]:
        """person id -> display name, without the metadata persons() parses (the service keeps only this)."""
        return dict(self._db.execute("SELECT id, name FROM persons").fetchall())

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
            blobs.append(blob)
            if len(blobs) == 1024:
                flush()
        if blobs:
            flush()
        if matrix is None:
            return EmbeddingIndex([], np.zeros((0, 0), dtype=np.float32), calibration)
        return EmbeddingIndex(ids, matrix[: len(ids)], calibration)
