"""Fleet sync's change log: which persons changed (or were deleted) at which gallery version.

An admin gallery exports a delta against any earlier version from it (facegate.sync.export). Triggers rather
than code in each write path, so every writer (enrol, remove, access policy, negative templates, a future one)
is covered. One row per person id ever seen (tombstones included); ``version`` is the version the enclosing
transaction commits as (current + 1, because every writer bumps the version by one at commit). An upsert, not
INSERT OR REPLACE: a trigger's own conflict clause is overridden by the firing statement's. ``deleted`` is
recomputed from whether the person still exists, so the order in which SQLite fires the cascade's triggers does
not matter.

Kept apart from the gallery's reads and writes because it is sync's bookkeeping: whoever rewrites rows without
changing what a door holds (sealing, a plain copy) keeps the log as it was, and erasure drops a tombstone.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["CHANGE_LOG", "change_log_kept", "forget_person", "install_change_log", "log_triggers",
           "run_atomically"]


def log_triggers(table: str, column: str) -> str:
    """The INSERT/UPDATE/DELETE triggers that log a change of ``table``'s rows under the person in ``column``."""
    return "".join(
        f"""
CREATE TRIGGER IF NOT EXISTS sync_log_{table}_{op.lower()} AFTER {op} ON {table} BEGIN
    INSERT INTO sync_changes (person_id, version, deleted) VALUES (
        {row}.{column},
        (SELECT CAST(value AS INTEGER) + 1 FROM meta WHERE key = 'version'),
        NOT EXISTS (SELECT 1 FROM persons WHERE id = {row}.{column}))
    ON CONFLICT(person_id) DO UPDATE SET version = excluded.version, deleted = excluded.deleted;
END;"""
        for op, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD"))
    )


CHANGE_LOG = """
CREATE TABLE IF NOT EXISTS sync_changes (
    person_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    deleted INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sync_changes_version ON sync_changes(version);
""" + "".join(log_triggers(table, column)
              for table, column in (("persons", "id"), ("templates", "person_id"), ("person_policy", "person_id")))


def run_atomically(db: sqlite3.Connection, script: str) -> None:
    """Run ``script`` as one transaction: all of it or none of it (a schema change interrupted half-way would
    leave a gallery that no version of the code expects)."""
    try:
        db.executescript("BEGIN IMMEDIATE;" + script + "COMMIT;")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def install_change_log(db: sqlite3.Connection) -> None:
    """Create the change log once (the tables its triggers name must exist).

    ``changes_since`` records the version from which the log is complete (0 for a new gallery), so a delta
    against an older base is refused, not guessed.
    """
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'sync_changes'").fetchone() is None:
        run_atomically(db, CHANGE_LOG
                       + "INSERT OR IGNORE INTO meta SELECT 'changes_since', value FROM meta WHERE key = 'version';")


@contextmanager
def change_log_kept(db: sqlite3.Connection) -> Iterator[None]:
    """Rewrite rows inside (in the caller's transaction) and leave the log as it was: how values are stored
    changed (sealed, or opened in a plain copy), not what a door holds, so no delta may carry the rewrite."""
    log = db.execute("SELECT person_id, version, deleted FROM sync_changes").fetchall()
    yield
    db.execute("DELETE FROM sync_changes")
    db.executemany("INSERT INTO sync_changes (person_id, version, deleted) VALUES (?, ?, ?)", log)


def forget_person(db: sqlite3.Connection, person_id: str) -> bool:
    """Drop ``person_id``'s tombstone in one transaction; True if the log named them.

    Without the tombstone a delta from before now could not carry the deletion, so ``changes_since`` moves up
    to the current version: such deltas are refused, and a full snapshot is exported instead.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        named = db.execute("DELETE FROM sync_changes WHERE person_id = ?", (person_id,)).rowcount > 0
        if named:
            db.execute(
                "UPDATE meta SET value = CAST(MAX(CAST(value AS INTEGER), "
                "(SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'version')) AS TEXT) "
                "WHERE key = 'changes_since'")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return named
