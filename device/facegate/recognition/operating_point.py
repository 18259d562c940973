"""The door's match threshold: from a hand-set similarity, an explicit FAR, or the gallery-size rule.

Two things make "FAR 1e-4" untrue for someone unless the threshold accounts for them:

- groups: one threshold fitted on everyone lets women be falsely matched by other women at ~3x the FAR men
  get. ``recognition.operating_point = "every_group"`` (default) takes the table's worst-group points: at
  each FAR the similarity at which the *worst* demographic group of the reference set meets it. The door never
  knows anyone's group; the labels were used only when the table was fitted (tools/eval/evaluate.py --groups).
- gallery size: a stranger is compared with every enrolled template, so the chance that a stranger visit
  matches *someone* grows with the gallery. With ``recognition.fpir`` (the chance per stranger visit) the
  per-comparison rate needed is ``f = 1 - (1 - fpir) ** (1 / templates)`` and the threshold is the similarity
  of the reference set's impostor tail at ``f`` (the table's ``impostor_tail``: a grid of quantiles, never
  embeddings), never looser than the FAR 1e-4 point. The k-of-n rule gets no credit: a stranger's frames of
  one visit are the same face, so they pass or fail together; a visit is modelled as one comparison per
  template. docs/fairness.md, "The gallery-size rule", shows predicted against measured FPIR.

``recognition.far`` set explicitly wins over the rule; ``recognition.threshold`` wins over both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal

from facegate.config import RecognitionConfig
from facegate.recognition.thresholds import DEFAULT_FAR, TailPoint, ThresholdTable

OperatingPointName = Literal["every_group", "pooled"]

# Below this per-frame TAR (at the derived threshold, on the reference set) the door warns that the FPIR
# cannot be met at a usable acceptance: at 0.8 a visit needing 3 of 5 frames still passes ~94% of the time if
# frames were independent, and they are not, so an enrolled person would need several tries.
USABLE_TAR = 0.8


@dataclass(frozen=True)
class DerivedThreshold:
    """The threshold the door decides with, and what it stands for (status JSON, System page, doctor)."""

    similarity: float
    source: Literal["threshold", "far", "fpir"]  # which setting decided it
    operating_point: OperatingPointName
    far: float | None  # per-comparison false-match rate it stands for (None: a hand-set similarity)
    templates: int  # enrolled templates it was derived for
    persons: int
    fpir: float | None  # configured chance per stranger visit of matching anyone (the rule's target)
    fpir_predicted: float | None  # predicted chance per stranger visit at this threshold and gallery size
    tar: float | None  # per-frame TAR of the reference set at this threshold
    warning: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": round(self.similarity, 4), "source": self.source, "operating_point": self.operating_point,
            "far": self.far, "templates": self.templates, "persons": self.persons, "fpir": self.fpir,
            "fpir_predicted": None if self.fpir_predicted is None else float(f"{self.fpir_predicted:.3g}"),
            "tar": None if self.tar is None else round(self.tar, 4), "warning": self.warning,
        }


def per_comparison_rate(fpir: float, templates: int) -> float:
    """The per-comparison false-match rate that gives ``fpir`` over ``templates`` independent comparisons."""
    if templates <= 1:
        return fpir
    return -math.expm1(math.log1p(-fpir) / templates)


def visit_fpir(far: float, templates: int) -> float:
    """Chance that a stranger visit matches any of ``templates`` templates, each with false-match rate ``far``."""
    return -math.expm1(max(templates, 1) * math.log1p(-min(far, 1 - 1e-12)))


def tail_similarity(tail: tuple[TailPoint, ...], far: float) -> tuple[float, float | None, bool]:
    """(similarity, TAR, inside) at per-comparison rate ``far``, interpolated in log10(FAR) on the grid.

    ``inside`` is False when ``far`` is stricter than the grid's last point: the strictest point is returned.
    """
    ordered = sorted(tail, key=lambda p: -p.far)  # loosest first
    if far >= ordered[0].far:
        return ordered[0].similarity, ordered[0].tar, True
    for hi, lo in pairwise(ordered):
        if lo.far <= far <= hi.far:
            w = (math.log10(hi.far) - math.log10(far)) / (math.log10(hi.far) - math.log10(lo.far))
            sim = hi.similarity + w * (lo.similarity - hi.similarity)
            tar = None if hi.tar is None or lo.tar is None else hi.tar + w * (lo.tar - hi.tar)
            return sim, tar, True
    return ordered[-1].similarity, ordered[-1].tar, False


def derive_threshold(*, threshold: float | None, far: float | None, fpir: float,
                     operating_point: OperatingPointName, table: ThresholdTable | None, templates: int,
                     persons: int) -> DerivedThreshold:
    """The similarity the door uses for a gallery of ``templates`` templates (``persons`` people).

    ``table`` is None only with a hand-set ``threshold`` whose table is for another embedder. The predicted
    stranger-visit rate is read off the impostor tail at the similarity finally chosen, whatever chose it.
    """
    tail = table.tail_for(operating_point) if table is not None else ()

    def done(similarity: float, source: Literal["threshold", "far", "fpir"], rate: float | None,
             tar: float | None, warning: str | None = None) -> DerivedThreshold:
        if tail:
            rate = rate_at(tail, similarity) if rate is None else rate
            _sim, tar_here, _inside = tail_similarity(tail, rate_at(tail, similarity))
            tar = tar_here if tar is None else tar
        predicted = None if not tail else visit_fpir(rate_at(tail, similarity), templates)
        return DerivedThreshold(similarity, source, operating_point, rate, templates, persons,
                                fpir if source == "fpir" else None, predicted, tar, warning)

    if threshold is not None:
        return done(threshold, "threshold", None, None)
    if table is None:
        raise ValueError("a threshold table is needed unless recognition.threshold is set")
    if far is not None:
        chosen = table.point_for(far, operating_point)
        return done(chosen.similarity, "far", chosen.far, chosen.tar)
    floor = table.point_for(DEFAULT_FAR, operating_point)
    if not tail:  # an older table without the tail: the FAR 1e-4 point, and say so
        return done(floor.similarity, "far", floor.far, floor.tar,
                    "models/thresholds.json has no impostor tail: the gallery-size rule (recognition.fpir) is off; "
                    "re-run tools/eval/evaluate.py --write-thresholds")
    needed = per_comparison_rate(fpir, templates)
    similarity, tar, inside = tail_similarity(tail, needed)
    if similarity <= floor.similarity:  # the 1:1 promise is stricter than this gallery needs
        return done(floor.similarity, "fpir", floor.far, floor.tar)
    warning = None
    if not inside:
        warning = (f"recognition.fpir {fpir:g} with {templates} templates needs a false-match rate of {needed:.2g} "
                   "per comparison, beyond the reference set's tail; the strictest point is used")
        needed = min(p.far for p in tail)
    elif tar is not None and tar < USABLE_TAR:
        warning = (f"recognition.fpir {fpir:g} with {templates} templates needs similarity {similarity:.3f}, where "
                   f"only {100 * tar:.1f}% of genuine frames match: raise recognition.fpir or enrol fewer people")
    return done(similarity, "fpir", needed, tar, warning)


def rate_at(tail: tuple[TailPoint, ...], similarity: float) -> float:
    """Per-comparison false-match rate at ``similarity`` (interpolated on the grid; clamped at its ends)."""
    ordered = sorted(tail, key=lambda p: p.similarity)
    if similarity <= ordered[0].similarity:
        return ordered[0].far
    for lo, hi in pairwise(ordered):
        if lo.similarity <= similarity <= hi.similarity:
            span = hi.similarity - lo.similarity
            w = (similarity - lo.similarity) / span if span > 0 else 0.0
            return float(10 ** (math.log10(lo.far) + w * (math.log10(hi.far) - math.log10(lo.far))))
    return ordered[-1].far


def door_threshold(recognition: RecognitionConfig, table: ThresholdTable | None, templates: int,
                   persons: int) -> DerivedThreshold:
    """:func:`derive_threshold` with the door's ``[recognition]`` settings."""
    return derive_threshold(threshold=recognition.threshold, far=recognition.far, fpir=recognition.fpir,
                            operating_point=recognition.operating_point, table=table, templates=templates,
                            persons=persons)
