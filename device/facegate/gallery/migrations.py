"""The gallery file's tables: created in a new file, and added in place to a file made by an older version.

A door's gallery outlives the software that made it, so each later addition (the change log, card numbers,
negative templates, sealed card numbers) is added where it is missing, without touching ``version`` or
``revision``: a door's gallery is the same gallery, and fleet sync must not see a change. Kept apart from the
store so the store reads as what a gallery does, and this as what its file holds.
"""

from __future__ import annotations

import sqlite3

from facegate.gallery.changelog import install_change_log, log_triggers, run_atomically
from facegate.gallery.schema import POLICY_SCHEMA

__all__ = ["SCHEMA_VERSION", "prepare"]

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

# Negative templates ("This was not them", docs/decision.md): a face that was wrongly granted as a person, kept
# under that person so a later face matching the person must be clearly farther from it than from the person.
# They belong to the person (deleted with them, synced with them), so their changes go into the same change log.
_NEGATIVES = """
CREATE TABLE IF NOT EXISTS negatives (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    person_id TEXT NOT NULL REFERENCES persons(id) ON DELETE CASCADE,
    embedding BLOB NOT NULL,
    embedder_sha256 TEXT NOT NULL,
    source TEXT,
    event_id TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS negatives_person ON negatives(person_id);
""" + log_triggers("negatives", "person_id")


def prepare(db: sqlite3.Connection) -> None:
    """Every table, index, trigger and meta row this version of the gallery needs, each step once.

    The access-policy tables (``facegate.gallery.schema``, shared with the access policy) come before the change
    log, so its triggers can name them from the start.
    """
    db.executescript(_SCHEMA)
    db.execute("INSERT OR IGNORE INTO meta VALUES ('version', '0')")
    db.execute("INSERT OR IGNORE INTO meta VALUES ('revision', '0')")
    db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
    db.executescript(POLICY_SCHEMA)
    install_change_log(db)
    _add_card_number(db)
    _add_negatives(db)
    _add_column(db, "persons", "card_sealed", "BLOB")


def _add_card_number(db: sqlite3.Connection) -> None:
    """``persons.card_number`` (the credential sent to an access panel, facegate/panel).

    Unique where set, because two people with one card number are one card to the panel.
    """
    if "card_number" in {r[1] for r in db.execute("PRAGMA table_info(persons)")}:
        return
    run_atomically(db, "ALTER TABLE persons ADD COLUMN card_number INTEGER;"
                       "CREATE UNIQUE INDEX IF NOT EXISTS persons_card_number ON persons(card_number) "
                       "WHERE card_number IS NOT NULL;")


def _add_negatives(db: sqlite3.Connection) -> None:
    """The ``negatives`` table and its change-log triggers (nothing a door holds changes until one is added)."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'sync_log_negatives_delete'").fetchone():
        return
    run_atomically(db, _NEGATIVES)


def _add_column(db: sqlite3.Connection, table: str, column: str, kind: str) -> None:
    """A nullable column added in place."""
    if column not in {r[1] for r in db.execute(f"PRAGMA table_info({table})")}:
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
