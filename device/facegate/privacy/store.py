"""How a SQLite file says that it is sealed, with which key, and that no plain copy of it is left.

A ``privacy`` table in each file (gallery, journal, outbox) holds the key's public id, the place of the key
(its *locator*, never the key) and ``scrubbed`` once the plain pages of a migration are gone. The marker is
written in the same transaction that seals the rows, so a file is either all plain or all sealed, whatever
moment a crash picks; the scrub (``VACUUM`` and a ``TRUNCATE`` checkpoint) is repeated on the next open until
it has completed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from facegate.privacy.keys import PrivacyKeyError, sealer_from_locator
from facegate.privacy.seal import Sealer

__all__ = ["Progress", "bind", "check_files", "mark_sealed", "recorded", "scrub"]

#: Told the name of each migration step as it is reached (logging; the crash tests kill the process there).
Progress = Callable[[str], None]

_TABLE = "CREATE TABLE IF NOT EXISTS privacy (key TEXT PRIMARY KEY, value TEXT NOT NULL)"


def recorded(db: sqlite3.Connection) -> dict[str, str]:
    """The file's privacy marker (empty for a plain file)."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'privacy'").fetchone() is None:
        return {}
    return {str(k): str(v) for k, v in db.execute("SELECT key, value FROM privacy")}


def bind(db: sqlite3.Connection, path: Path, sealer: Sealer | None) -> tuple[Sealer | None, bool]:
    """The sealer to use for this file, and whether its plain rows must be sealed now.

    A sealed file opened without a sealer finds its key from the locator it recorded; a sealed file and a
    sealer of another key is refused (nothing is changed), as is a sealed file whose key cannot be found.
    """
    marker = recorded(db)
    if "key_id" not in marker:
        return sealer, sealer is not None
    if sealer is None:
        sealer = sealer_from_locator(marker.get("locator", ""), path)
    if sealer.key_id != marker["key_id"]:
        raise PrivacyKeyError(
            f"{path} is encrypted with another key (key id {marker['key_id']}, from {marker.get('locator')}); the "
            f"key from {sealer.locator} has id {sealer.key_id}. Nothing was changed. Restore the right key, or "
            "see docs/privacy.md (lost key)")
    return sealer, False


def mark_sealed(db: sqlite3.Connection, sealer: Sealer) -> None:
    """Record the key, inside the caller's transaction (the one that seals the rows)."""
    db.execute(_TABLE)
    db.executemany("INSERT OR REPLACE INTO privacy (key, value) VALUES (?, ?)",
                   [("key_id", sealer.key_id), ("locator", sealer.locator)])


def seal_in_one_transaction(db: sqlite3.Connection, sealer: Sealer, progress: Progress | None,
                            rewrite: Callable[[], None]) -> None:
    """Rewrite a plain file's personal values (``rewrite``) and record its key, all in one transaction.

    A crash anywhere before COMMIT leaves the file plain and whole; after it, sealed. ``progress`` names each
    step ("begin", then the steps ``rewrite`` reports, "marked", "committed"): the SIGKILL tests stop there.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        if progress:
            progress("begin")
        rewrite()
        mark_sealed(db, sealer)
        if progress:
            progress("marked")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    if progress:
        progress("committed")


def scrub(db: sqlite3.Connection, progress: Progress | None = None) -> bool:
    """Remove every plain page left by a migration (free pages, the WAL); True when done, else retried later.

    Skipped when the file has already been scrubbed. Outside any transaction.
    """
    if "key_id" not in (marker := recorded(db)) or marker.get("scrubbed") == "1":
        return True
    try:
        db.execute("VACUUM")
    except sqlite3.OperationalError:  # another process holds the file (busy): the next open tries again
        return False
    if progress:
        progress("vacuumed")
    row = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if row is None or int(row[0]) != 0:
        return False  # a reader holds the WAL: the next open tries again
    if progress:
        progress("checkpointed")
    db.execute("INSERT OR REPLACE INTO privacy (key, value) VALUES ('scrubbed', '1')")
    return True


def check_files(paths: list[Path], sealer: Sealer | None) -> list[Path]:
    """Refuse (before any file is touched) when one of ``paths`` is sealed with another key than ``sealer``'s:
    otherwise a plain file opened first would be sealed with the wrong key before a later one refuses.

    Returns the plain files the sealer will seal in place when they are opened."""
    plain: list[Path] = []
    if sealer is None:
        return plain
    for path in paths:
        if not Path(path).is_file():
            continue
        try:
            db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
            try:
                marker = recorded(db)
            finally:
                db.close()
        except sqlite3.Error:
            continue  # unreadable: the file's own open reports it (quarantine, recovery)
        if "key_id" not in marker:
            plain.append(Path(path))
        elif marker["key_id"] != sealer.key_id:
            raise PrivacyKeyError(
                f"{path} is encrypted with another key (key id {marker['key_id']}, from {marker.get('locator')}); "
                f"the key from {sealer.locator} has id {sealer.key_id}. Nothing was changed. Restore the right key, "
                "or see docs/privacy.md (lost key)")
    return plain
