"""A float32 matrix of templates searched with one matrix-vector product.

At 100k templates of 192 floats this is ~77 MB and a few milliseconds per query on a Pi, which is simpler and
faster than an approximate index at the gallery sizes a door sees. The index is immutable: a gallery change
builds a new one and swaps the reference, so recognition never pauses or sees a half-applied update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from facegate.errors import FacegateError

if TYPE_CHECKING:
    from facegate.recognition.calibration import FairCalibration


#: How far outside [-1, 1] a raw similarity may stray before it is impossible: unit vectors within the
#: template gate's tolerance (1e-3) stay within 1.002; float32 rounding adds ~1e-6.
SIMILARITY_EPSILON = 0.01


class MatchError(FacegateError):
    """The matcher produced a similarity no pair of unit vectors can have: a template or the query is not
    what the gate lets in. Reported (``recognition_error``), never a match."""


@dataclass(frozen=True)
class Match:
    person_id: str
    similarity: float


class EmbeddingIndex:
    def __init__(self, person_ids: list[str], embeddings: np.ndarray,
                 calibration: FairCalibration | None = None) -> None:
        """``person_ids[i]`` owns row i; rows of one person need not be adjacent.

        With ``calibration`` every similarity is the calibrated score (facegate.recognition.calibration): each
        template's share of the shift is computed here, once, so a search costs one subtraction more.
        """
        order = np.argsort(np.asarray(person_ids, dtype=object), kind="stable")
        if person_ids and not np.array_equal(order, np.arange(len(order))):
            embeddings = embeddings[order]  # the gallery streams rows already sorted: no copy then
        self._matrix = np.ascontiguousarray(embeddings, dtype=np.float32)
        sorted_ids = [person_ids[i] for i in order]
        starts = [i for i in range(len(sorted_ids)) if i == 0 or sorted_ids[i] != sorted_ids[i - 1]]
        self._starts = np.asarray(starts, dtype=np.intp)
        self._persons = [sorted_ids[i] for i in starts]
        self._ids = sorted_ids
        self.calibration = calibration
        self._row_shift = (calibration.half_offsets(self._matrix) if calibration is not None and sorted_ids
                           else None)

    def calibrated(self, calibration: FairCalibration | None) -> EmbeddingIndex:
        """The same templates scored with ``calibration`` (self when it is already the one in use)."""
        if calibration is self.calibration:
            return self
        matrix = self._matrix if self._ids else np.zeros((0, 0), dtype=np.float32)
        return EmbeddingIndex(list(self._ids), matrix, calibration)

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
        q = np.asarray(query, dtype=np.float32)
        sims = self._matrix @ q  # a template of another length raises ValueError here: also never a match
        # Belt and braces behind the template gate: a raw cosine outside [-1, 1] means a vector that is not
        # unit length (a "similarity" of 22.9 once opened a door), NaN a poisoned one. Neither may decide.
        worst = float(np.max(np.abs(sims))) if sims.size else 0.0
        if not worst <= 1.0 + SIMILARITY_EPSILON:  # also true for NaN
            row = int(np.argmax(np.where(np.isnan(sims), np.inf, np.abs(sims))))
            raise MatchError(f"impossible similarity {float(sims[row]):.4g} with a template of person "
                             f"'{self._ids[row]}' (a cosine lies in [-1, 1]); no match is made")
        if self.calibration is not None and self._row_shift is not None:
            sims = sims - self._row_shift - self.calibration.half_offsets(q)[0]
        per_person = np.maximum.reduceat(sims, self._starts)
        k = min(k, len(self._persons))
        top = np.argpartition(-per_person, k - 1)[:k]
        top = top[np.argsort(-per_person[top])]
        return [Match(self._persons[i], float(per_person[i])) for i in top]
