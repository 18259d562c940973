"""A float32 matrix of templates searched with one matrix-vector product.

At 100k templates of 192 floats this is ~77 MB and a few milliseconds per query on a Pi, which is simpler and
faster than an approximate index at the gallery sizes a door sees. The index is immutable: a gallery change
builds a new one and swaps the reference, so recognition never pauses or sees a half-applied update.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Match:
    person_id: str
    similarity: float


class EmbeddingIndex:
    def __init__(self, person_ids: list[str], embeddings: np.ndarray) -> None:
        """``person_ids[i]`` owns row i; rows of one person need not be adjacent."""
        order = np.argsort(np.asarray(person_ids, dtype=object), kind="stable")
        if person_ids and not np.array_equal(order, np.arange(len(order))):
            embeddings = embeddings[order]  # the gallery streams rows already sorted: no copy then
        self._matrix = np.ascontiguousarray(embeddings, dtype=np.float32)
        sorted_ids = [person_ids[i] for i in order]
        starts = [i for i in range(len(sorted_ids)) if i == 0 or sorted_ids[i] != sorted_ids[i - 1]]
        self._starts = np.asarray(starts, dtype=np.intp)
        self._persons = [sorted_ids[i] for i in starts]

    @property
    def persons(self) -> int:
        return len(self._persons)

    @property
    def templates(self) -> int:
        return int(self._matrix.shape[0])

    def search(self, query: np.ndarray, k: int = 2) -> list[Match]:
        """The k best persons (best template each), most similar first."""
        if not self._persons:
            return []
        sims = self._matrix @ np.asarray(query, dtype=np.float32)
        per_person = np.maximum.reduceat(sims, self._starts)
        k = min(k, len(self._persons))
        top = np.argpartition(-per_person, k - 1)[:k]
        top = top[np.argsort(-per_person[top])]
        return [Match(self._persons[i], float(per_person[i])) for i in top]
