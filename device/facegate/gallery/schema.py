"""Tables of the gallery database that more than one part owns.

The access policy (``facegate.access.policy``) keeps its rows in the gallery file so that a person's templates
and policy change, sync and delete together; the gallery (``facegate.gallery.migrations``) must create those
tables before its change-log triggers can name them. Both import the SQL from here, so neither imports the other
for it (that was an import cycle).
"""

POLICY_SCHEMA = """
CREATE TABLE IF NOT EXISTS person_policy (
    person_id TEXT PRIMARY KEY REFERENCES persons(id) ON DELETE CASCADE,
    valid_from TEXT,
    valid_until TEXT,
    groups TEXT NOT NULL DEFAULT '[]',
    schedule TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS device_local (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at REAL NOT NULL);
"""
