"""FMR and FNMR per group for a site's own enrolled people, with confidence intervals.

The gallery keeps embeddings only (never the photos), so the comparisons are between stored templates:
genuine = every pair of one person's templates, impostor = every pair of templates of two different people of
the same group (the hard case, as in tools/eval/evaluate.py). Scores go through the same matcher as the door
(the fair score calibration when it is on). A site has tens or hundreds of people, not thousands: the counts are
small and pairs share people, so each rate comes with a 95% Wilson interval, and the interval (not the point) is
what says whether a group is worse than promised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from facegate.recognition.calibration import FairCalibration
from facegate.recognition.thresholds import ThresholdTable

Z95 = 1.959964
TOLERANCE = 1.5  # a group meets a FAR while its false-match rate is within this factor of it


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion; unlike the normal approximation it is sane at 0 of n."""
    if trials <= 0:
        return None
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def meets_far(false_matches: int, pairs: int, far: float) -> bool | None:
    """Whether a group's false-match rate meets ``far`` (within TOLERANCE): True when the 95% interval lies at or
    below it, False when it lies above, None when the interval straddles it (too few comparisons to tell)."""
    ci = wilson(false_matches, pairs)
    if ci is None:
        return None
    if ci[1] <= TOLERANCE * far:
        return True
    if ci[0] > TOLERANCE * far:
        return False
    return None


def reference_rates(table: ThresholdTable, operating_point: str, threshold: float) -> list[dict[str, Any]]:
    """Each group's same-group FMR on the reference set at every point of the door's table (the labels were
    used when the table was fitted; the door never knows anyone's group), with 95% intervals, whether it meets
    the point's FAR, and whether the door's ``threshold`` is at least that strict (``door_at_or_above``)."""
    rows = []
    for point in table.points_for(operating_point):
        for g in point.groups:
            ci = wilson(g.false_matches, g.impostor_pairs)
            rows.append({"far": point.far, "similarity": point.similarity, "group": g.group, "fmr": g.fmr,
                         "fmr_ci95": list(ci) if ci else None, "false_matches": g.false_matches,
                         "impostor_pairs": g.impostor_pairs, "fnmr": g.fnmr,
                         "meets_far": meets_far(g.false_matches, g.impostor_pairs, point.far),
                         "door_at_or_above": threshold >= point.similarity})
    return rows


@dataclass(frozen=True)
class Templates:
    person_ids: list[str]
    vectors: np.ndarray  # (n, d) float32, L2-normalised


def scores(templates: Templates, calibration: FairCalibration | None) -> np.ndarray:
    """All template-pair similarities as the door computes them."""
    v = np.asarray(templates.vectors, dtype=np.float32)
    sims = v @ v.T
    if calibration is not None:
        half = calibration.half_offsets(v)
        sims = sims - half[:, None] - half[None, :]
    return sims


def group_rates(templates: Templates, group_of: dict[str, str], points: list[tuple[float, float]],
                calibration: FairCalibration | None) -> dict[str, Any]:
    """``per_group`` ({far: {group: ...}}), ``per_group_summary`` and ``warnings`` for the enrolled people."""
    sims = scores(templates, calibration)
    ids = np.asarray(templates.person_ids, dtype=object)
    groups = np.asarray([group_of.get(p, "") for p in templates.person_ids], dtype=object)
    iu, ju = np.triu_indices(len(ids), k=1)
    pair = sims[iu, ju]
    same_person = ids[iu] == ids[ju]
    per: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    warnings: list[str] = []
    names = sorted({g for g in groups if g})
    for far, threshold in points:
        key = str(far)
        per[key] = {}
        for g in names:
            both = (groups[iu] == g) & (groups[ju] == g)
            gen, imp = pair[both & same_person], pair[both & ~same_person]
            fm, fnm = int(np.sum(imp >= threshold)), int(np.sum(gen < threshold))
            fmr_ci, fnmr_ci = wilson(fm, len(imp)), wilson(fnm, len(gen))
            per[key][g] = {
                "fmr": fm / len(imp) if len(imp) else None, "fnmr": fnm / len(gen) if len(gen) else None,
                "impostor_pairs": len(imp), "genuine_pairs": len(gen), "threshold": threshold,
                "false_matches": fm, "false_non_matches": fnm,
                "fmr_ci95": list(fmr_ci) if fmr_ci else None, "fnmr_ci95": list(fnmr_ci) if fnmr_ci else None,
                "persons": len({p for p, q in zip(ids, groups, strict=True) if q == g}),
                "meets_far": meets_far(fm, len(imp), far),
            }
            if fmr_ci is not None and fmr_ci[0] > 1.5 * far:
                warnings.append(f"FAR {far:g}: group '{g}' false-match rate {fm}/{len(imp)} is above 1.5x the "
                                f"promised {far:g} even at the low end of its 95% interval")
        fmrs = [v["fmr"] for v in per[key].values() if v["fmr"]]
        fnmrs = [v["fnmr"] for v in per[key].values() if v["fnmr"]]
        summary[key] = {
            "threshold": threshold,
            "fmr_max_min_ratio": max(fmrs) / min(fmrs) if len(fmrs) == len(per[key]) and fmrs else None,
            "fnmr_max_min_ratio": max(fnmrs) / min(fnmrs) if len(fnmrs) == len(per[key]) and fnmrs else None,
            "fmr_vs_nominal": {g: (v["fmr"] / far if v["fmr"] is not None else None) for g, v in per[key].items()},
            "fmr_measurable": {g: v["impostor_pairs"] * far >= 3 for g, v in per[key].items()},
        }
    return {"per_group": per, "per_group_summary": summary, "warnings": warnings,
            "ungrouped_persons": sorted({str(p) for p, g in zip(ids, groups, strict=True) if not g})}
