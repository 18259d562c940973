"""The template gate: one check that every template passes before it can decide a grant.

Matching is a plain dot product (:mod:`facegate.gallery.index`), which is a cosine similarity only when both
vectors are unit length. A template of norm 100 scores up to 100 against any face and so out-scores every
enrolled person; one of the wrong length makes the matrix product fail on every frame; one with NaN poisons
every comparison. So wherever a template enters -- enrolment from photos or the console, bulk enrolment,
``gallery import-templates``, a synced bundle (full or delta), the gallery at start and in ``facegate
doctor`` -- it goes through :func:`check_template`: finite values, exactly the embedder's dimension, unit
length within :data:`UNIT_NORM_TOLERANCE`.

Only the embedder's own output may be re-normalised (``renormalise=True``): the project made it and knows it
is a direction. A foreign template (a file, a bundle) that is not unit length is refused, never repaired,
since repairing would turn a tampered vector into a valid one.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from facegate.errors import GalleryError
from facegate.vision.models import ModelEntry

__all__ = ["UNIT_NORM_TOLERANCE", "TemplateError", "check_blob", "check_template", "embedder_dim",
           "embedder_dim_for", "template_problem", "template_problems"]

#: |norm - 1| allowed. The embedder normalises in float32 (error ~1e-7); float32 storage adds nothing more.
UNIT_NORM_TOLERANCE = 1e-3


class TemplateError(GalleryError):
    """A template failed the gate; ``person_id`` and ``problem`` say whose and what."""

    def __init__(self, person_id: str, problem: str, where: str | None = None) -> None:
        super().__init__(f"person '{person_id}': {where + ': ' if where else ''}template {problem}")
        self.person_id = person_id
        self.problem = problem


def template_problem(vector: np.ndarray, dim: int | None) -> str | None:
    """What is wrong with ``vector`` as a template of a ``dim``-value embedder, or None when it is sound."""
    v = np.asarray(vector)
    if v.ndim != 1 or v.size == 0:
        return f"has shape {v.shape}, not a vector"
    if dim is not None and v.size != dim:
        return f"has {v.size} values; the embedder makes {dim}"
    v = v.astype(np.float64)
    if not np.isfinite(v).all():
        return "has non-finite values (NaN or infinite)"
    norm = float(np.linalg.norm(v))
    if abs(norm - 1.0) > UNIT_NORM_TOLERANCE:
        return f"is not unit length (norm {norm:.6g}); similarities with it would not be cosines"
    return None


def check_template(vector: np.ndarray, dim: int | None, person_id: str, *, where: str | None = None,
                   renormalise: bool = False) -> np.ndarray:
    """The template as little-endian float32, or :class:`TemplateError` naming the person and the problem.

    ``renormalise`` only for the embedder's own output: it is scaled to unit length (a zero vector is still
    refused) before the checks.
    """
    v = np.asarray(vector, dtype="<f4")
    if renormalise and v.ndim == 1 and v.size and np.isfinite(v).all():
        norm = float(np.linalg.norm(v.astype(np.float64)))
        if norm > 0.0:
            v = np.asarray(v / norm, dtype="<f4")
    problem = template_problem(v, dim)
    if problem is not None:
        raise TemplateError(person_id, problem, where)
    return v


def check_blob(blob: bytes, dim: int | None, person_id: str, *, where: str | None = None) -> np.ndarray:
    """:func:`check_template` for a stored template (little-endian float32 bytes)."""
    if len(blob) % 4:
        raise TemplateError(person_id, f"is {len(blob)} bytes, not a whole number of float32 values", where)
    return check_template(np.frombuffer(blob, dtype="<f4"), dim, person_id, where=where)


def template_problems(rows: Iterable[tuple[str, bytes]], dim: int | None) -> dict[str, str]:
    """person id -> the first problem of their stored templates, for every person who has one.

    Vectorised over chunks of rows (a 100k-template gallery is checked at every start); only a row that
    fails is looked at on its own, for the message.
    """
    found: dict[str, str] = {}
    chunk: list[tuple[str, bytes]] = []
    sizes: list[int] = [] if dim is None else [4 * dim]  # without dim: the first template's size rules

    def flush() -> None:
        size = sizes[0]
        sound = [i for i, (_, blob) in enumerate(chunk) if len(blob) == size]
        suspects = set(range(len(chunk))) - set(sound)
        if sound and size:
            m = np.frombuffer(b"".join(chunk[i][1] for i in sound), dtype="<f4").reshape(len(sound), -1)
            m64 = m.astype(np.float64)
            with np.errstate(all="ignore"):
                ok = np.isfinite(m64).all(axis=1) & (np.abs(np.linalg.norm(m64, axis=1) - 1.0) <= UNIT_NORM_TOLERANCE)
            suspects.update(sound[i] for i in np.flatnonzero(~ok))
        for i in sorted(suspects):
            person_id, blob = chunk[i]
            if person_id in found:
                continue
            try:
                check_blob(blob, dim, person_id)
            except TemplateError as exc:
                found[person_id] = exc.problem
            else:  # same length as the chunk's first but dim unknown: compare with that
                found[person_id] = f"has {len(blob) // 4} values; other templates have {size // 4}"
        chunk.clear()

    for person_id, blob in rows:
        chunk.append((str(person_id), bytes(blob)))
        if not sizes:
            sizes.append(len(chunk[0][1]))
        if len(chunk) == 1024:
            flush()
    if chunk:
        flush()
    return found


def embedder_dim(entry: ModelEntry) -> int:
    """The embedding size an embedder model declares in the manifest (its first output's last axis)."""
    try:
        return int(entry.raw["outputs"][0]["shape"][-1])
    except (KeyError, IndexError, TypeError, ValueError):
        raise GalleryError(f"model '{entry.name}' does not declare its output shape in manifest.json") from None


def embedder_dim_for(entries: Iterable[ModelEntry], sha256: str) -> int | None:
    """The dimension of the manifest's embedder with this sha256, or None when the manifest has none."""
    for entry in entries:
        if entry.role == "embedder" and entry.sha256 == sha256:
            return embedder_dim(entry)
    return None
