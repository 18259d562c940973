"""``facegate gallery decrypt --out``: a plain copy of a sealed gallery, for an admin who holds the key.

For moving a door's gallery to a machine without the key (an admin gallery, a backup kept in a safe), or
leaving encryption. The copy is made with SQLite's backup API (one consistent snapshot, the door may keep
running), then opened in place: every sealed value (persons, templates, negative templates) is replaced by its
plain form and the privacy marker is dropped, in one transaction; the change log is kept as it was (nothing a
door holds changed).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from facegate.base.private_files import private_sqlite
from facegate.errors import GalleryError
from facegate.gallery.changelog import change_log_kept
from facegate.gallery.store import NEGATIVES_COLUMN, Gallery

__all__ = ["decrypt_gallery"]


def decrypt_gallery(gallery: Gallery, out: Path) -> int:
    """Write a plain copy of ``gallery`` to ``out`` (which must not exist); returns the persons copied."""
    out = Path(out)
    if out.exists():
        raise GalleryError(f"{out} exists; choose a new file for the plain copy")
    if gallery.sealer is None:
        raise GalleryError(f"gallery {gallery.path} is not encrypted; copy it as it is")
    private_sqlite(out)  # plain personal data: owner-only
    db = sqlite3.connect(str(out), isolation_level=None)
    try:
        with gallery.snapshot() as source:
            source.backup(db)
        db.execute("BEGIN IMMEDIATE")
        with change_log_kept(db):
            persons = db.execute("SELECT id, name, metadata, card_number, card_sealed FROM persons").fetchall()
            db.executemany(
                "UPDATE persons SET name = ?, metadata = ?, card_number = ?, card_sealed = NULL WHERE id = ?",
                [(*gallery.open_person(pid, name, meta, card, sealed), pid)
                 for pid, name, meta, card, sealed in persons])
            for table, column in (("templates", "templates.embedding"), ("negatives", NEGATIVES_COLUMN)):
                rows = db.execute(f"SELECT id, person_id, embedding, source FROM {table}").fetchall()
                db.executemany(
                    f"UPDATE {table} SET embedding = ?, source = ? WHERE id = ?",
                    [(gallery.open_template(pid, blob, column), gallery.open_source(pid, source, column), tid)
                     for tid, pid, blob, source in rows])
        db.execute("DROP TABLE privacy")
        db.execute("COMMIT")
        db.execute("VACUUM")
        return len(persons)
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        db.close()
        out.unlink(missing_ok=True)
        raise
    finally:
        db.close()
