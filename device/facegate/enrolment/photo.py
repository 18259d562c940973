"""One enrolment photo → a template, or the reason it is refused (the same reasons wherever photos come from)."""

from __future__ import annotations

import numpy as np

from facegate.gallery.store import NewTemplate
from facegate.vision.pipeline import FacePipeline

__all__ = ["assess"]


def assess(pipeline: FacePipeline, image: np.ndarray, source: str, largest: bool = False
           ) -> tuple[NewTemplate | None, str]:
    """A template from an RGB photo, or None and why not: no face, several faces (unless ``largest``), or the
    quality gates that failed. The reason is ``"accepted"`` for a template."""
    results = pipeline.process(image)
    if not results:
        return None, "no face found"
    if len(results) > 1 and not largest:
        return None, f"{len(results)} faces found (use --largest to take the largest)"
    best = results[0]
    if best.failures:
        return None, "quality: " + ", ".join(best.failures)
    assert best.embedding is not None
    return NewTemplate(best.embedding, best.quality.as_dict(), source=source), "accepted"
