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

#: The negative-template rule's default margin (``recognition.negative_margin``): a face votes for a person only
#: when its cosine to the person's best template exceeds its cosine to the person's closest negative by at least
#: this much. Measured on lfw_dev with tools/eval/eval_negatives.py (docs/decision.md, "This was not them").
DEFAULT_NEGATIVE_MARGIN = 0.02


class MatchError(FacegateError):
    """The matcher produced a similarity no pair of unit vectors can have: a template or the query is not
    what the gate lets in. Reported (``recognition_error``), never a match."""


@dataclass(frozen=True)
class Match:
    person_id: str
    similarity: float


class EmbeddingIndex:
    def __init__(self, person_ids: list[str], embeddings: np.ndarray,
                 calibration: FairCalibration | None = None, *,
                 negatives: tuple[list[str], np.ndarray] | None = None) -> None:
        """``person_ids[i]`` owns row i; rows of one person need not be adjacent.

        With ``calibration`` every similarity is the calibrated score (facegate.recognition.calibration): each
        template's share of the shift is computed here, once, so a search costs one subtraction more.
        ``negatives``: (owner ids, rows) of negative templates, faces that were wrongly taken for their owner
        (see :meth:`search`); a negative of a person not in the index is ignored.
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
        self._negatives = negatives
        self._neg_matrix: np.ndarray | None = None
        if negatives is not None and negatives[0] and sorted_ids:
            position = {pid: i for i, pid in enumerate(self._persons)}
            keep = sorted((i for i, pid in enumerate(negatives[0]) if pid in position),
                          key=lambda i: negatives[0][i])
            if keep:
                owners = [negatives[0][i] for i in keep]
                self._neg_matrix = np.ascontiguousarray(np.asarray(negatives[1])[keep], dtype=np.float32)
                self._neg_starts = np.asarray(
                    [i for i in range(len(owners)) if i == 0 or owners[i] != owners[i - 1]], dtype=np.intp)
                self._neg_persons = np.asarray([position[owners[i]] for i in self._neg_starts], dtype=np.intp)

    def calibrated(self, calibration: FairCalibration | None) -> EmbeddingIndex:
        """The same templates scored with ``calibration`` (self when it is already the one in use)."""
        if calibration is self.calibration:
            return self
        matrix = self._matrix if self._ids else np.zeros((0, 0), dtype=np.float32)
        return EmbeddingIndex(list(self._ids), matrix, calibration, negatives=self._negatives)

    @property
    def persons(self) -> int:
        return len(self._persons)

    @property
    def templates(self) -> int:
        return int(self._matrix.shape[0])

    @property
    def negatives(self) -> int:
        """Negative templates in use (those of persons in the index)."""
        return 0 if self._neg_matrix is None else int(self._neg_matrix.shape[0])

    def search(self, query: np.ndarray, k: int = 2, *,
               negative_margin: float = DEFAULT_NEGATIVE_MARGIN) -> list[Match]:
        """The k best persons (best template each), most similar first.

        A person with negative templates is left out when the query is not clearly farther from their
        negatives than from them: raw cosine to their best template minus raw cosine to their closest negative
        below ``negative_margin`` (docs/decision.md, "This was not them"). One extra product with the (few)
        negatives per query.
        """
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
        raw = sims
        if self.calibration is not None and self._row_shift is not None:
            sims = sims - self._row_shift - self.calibration.half_offsets(q)[0]
        per_person = np.maximum.reduceat(sims, self._starts)
        if self._neg_matrix is not None:
            vetoed = self._vetoed(q, raw, per_person if raw is sims else None, negative_margin)
            if vetoed.size:
                per_person = per_person.copy()
                per_person[vetoed] = -np.inf
        k = min(k, len(self._persons))
        top = np.argpartition(-per_person, k - 1)[:k]
        top = top[np.argsort(-per_person[top])]
        return [Match(self._persons[i], float(per_person[i])) for i in top if np.isfinite(per_person[i])]

    def _vetoed(self, q: np.ndarray, raw: np.ndarray, raw_per_person: np.ndarray | None,
                margin: float) -> np.ndarray:
        """Positions of the persons whose negatives the query is not clearly farther from than from them."""
        assert self._neg_matrix is not None
        neg = self._neg_matrix @ q
        if not float(np.max(np.abs(neg))) <= 1.0 + SIMILARITY_EPSILON:  # the gate's belt and braces, as above
            raise MatchError("impossible similarity with a negative template (a cosine lies in [-1, 1]); "
                             "no match is made")
        closest = np.maximum.reduceat(neg, self._neg_starts)
        if raw_per_person is None:
            raw_per_person = np.maximum.reduceat(raw, self._starts)
        owners = self._neg_persons
        return owners[raw_per_person[owners] - closest < margin]
