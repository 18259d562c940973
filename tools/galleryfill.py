"""Large galleries for benchmarks and soaks: N random unit vectors as persons p0…p{N-1}, in one transaction.

Random 192-d unit vectors stand in for strangers (their similarity to any real face is near 0), so a benchmark
measures search and memory at that size without any real person's embedding.
"""

from __future__ import annotations

import numpy as np
from facegate.gallery.store import Gallery
from facegate.vision.embedder import l2_normalise


def add_random_persons(gallery: Gallery, persons: int, embedder_sha256: str, dim: int, seed: int = 0) -> None:
    vectors = l2_normalise(np.random.default_rng(seed).normal(size=(persons, dim)).astype(np.float32))
    with gallery.transaction() as conn:
        conn.executemany("INSERT INTO persons (id, name, metadata, created_at, updated_at) VALUES (?,?,?,0,0)",
                         [(f"p{i}", f"Person {i}", "{}") for i in range(persons)])
        conn.executemany("INSERT INTO templates (person_id, embedding, embedder_sha256, quality, created_at) "
                         "VALUES (?,?,?,'{}',0)",
                         [(f"p{i}", v.astype("<f4").tobytes(), embedder_sha256) for i, v in enumerate(vectors)])
