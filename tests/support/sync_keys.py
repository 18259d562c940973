"""Builders shared by the fleet-sync tests (no tests here): admin galleries, keys, snapshots of a gallery."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from facegate.gallery.store import Gallery
from facegate.sync.keys import key_id, public_key_b64

EMB = "e" * 64  # a made-up embedder hash for tests that never run the real embedder
DIM = 192


def keypair() -> tuple[Ed25519PrivateKey, dict[bytes, Ed25519PublicKey], str]:
    key = Ed25519PrivateKey.generate()
    return key, {key_id(key.public_key()): key.public_key()}, public_key_b64(key.public_key())


def unit_vectors(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype("<f4")
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def add_random_persons(gallery: Gallery, n: int, *, start: int = 0, seed: int = 0, emb: str = EMB,
                       templates_each: int = 1, prefix: str = "p") -> list[str]:
    """``n`` persons with random unit-vector templates, in ONE transaction (fast even for thousands)."""
    vecs = unit_vectors(n * templates_each, seed)
    ids = [f"{prefix}{i:05d}" for i in range(start, start + n)]
    now = time.time()
    with gallery.transaction() as db:
        db.execute("INSERT OR IGNORE INTO meta VALUES ('embedder_sha256', ?)", (emb,))
        db.executemany("INSERT INTO persons (id, name, metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                       [(pid, f"Person {pid}", json.dumps({"n": i}), now, now) for i, pid in enumerate(ids)])
        db.executemany(
            "INSERT INTO templates (person_id, embedding, embedder_sha256, quality, source, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(ids[k // templates_each], vecs[k].tobytes(), emb, '{"sharpness": 40.0}', "test.jpg", now)
             for k in range(n * templates_each)],
        )
    return ids


def content(path: Path) -> dict[str, Any]:
    """Everything fleet sync is responsible for, plus device_local, read with plain sqlite3."""
    db = sqlite3.connect(str(path))
    try:
        return {
            "version": db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0],
            "persons": db.execute("SELECT id, name, metadata FROM persons ORDER BY id").fetchall(),
            "templates": db.execute("SELECT person_id, embedding, quality, source FROM templates "
                                    "ORDER BY person_id, id").fetchall(),
            "policy": db.execute("SELECT person_id, valid_from, valid_until, groups, schedule FROM person_policy "
                                 "ORDER BY person_id").fetchall(),
            "device_local": db.execute("SELECT key, value FROM device_local ORDER BY key").fetchall(),
        }
    finally:
        db.close()


def synced_part(c: dict[str, Any]) -> dict[str, Any]:
    return {k: c[k] for k in ("persons", "templates", "policy")}
