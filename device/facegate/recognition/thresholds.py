"""Match thresholds stated two ways: as cosine similarity and as the false-match rate it gives.

The table is produced by ``tools/eval/evaluate.py --write-thresholds`` for one embedder and one alignment
method; a table made for another embedder is ignored because its similarities mean something else.

The file holds two tables: ``points`` for raw cosine similarity and, under ``calibrated``, the same operating
points for scores after the fair score calibration (``recognition.fair_calibration``), tagged with the SHA-256
of the calibration file they were measured with. A file with only ``points`` (older releases) still loads.

Each table may also hold (written by ``--groups CSV --write-thresholds``):
- ``every_group_points``: at each FAR the similarity at which the *worst* demographic group of the reference set
  meets it (same-group impostor pairs), beside the pooled ``points``; each point lists every group's measured
  FMR (``groups``) so the door can show them without knowing anyone's group;
- ``impostor_tail``: ``{"pooled": [...], "every_group": [...]}``, a grid of per-comparison false-match rates
  (down to 1e-9; below what the reference set can measure, extrapolated from its last decades, ``measured``
  false) with the similarity and the TAR at each: what the gallery-size rule (recognition.fpir) reads. A
  compact summary of scores, never embeddings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facegate.errors import ModelError

DEFAULT_FAR = 1e-4


@dataclass(frozen=True)
class GroupRate:
    """One group's same-group false matches at a point of the reference set."""

    group: str
    false_matches: int
    impostor_pairs: int
    fnmr: float | None = None

    @property
    def fmr(self) -> float | None:
        return self.false_matches / self.impostor_pairs if self.impostor_pairs else None


@dataclass(frozen=True)
class OperatingPoint:
    far: float
    similarity: float
    tar: float | None = None
    groups: tuple[GroupRate, ...] = ()


@dataclass(frozen=True)
class TailPoint:
    """Per-comparison false-match rate ``far`` at ``similarity`` (and the TAR there) on the reference set."""

    far: float
    similarity: float
    tar: float | None
    measured: bool


def _points(rows: Any) -> tuple[OperatingPoint, ...]:
    return tuple(
        OperatingPoint(float(p["far"]), float(p["similarity"]), None if p.get("tar") is None else float(p["tar"]),
                       tuple(GroupRate(str(g), int(v["false_matches"]), int(v["impostor_pairs"]),
                                       None if v.get("fnmr") is None else float(v["fnmr"]))
                             for g, v in sorted(p.get("groups", {}).items())))
        for p in rows
    )


def _tail(rows: Any) -> tuple[TailPoint, ...]:
    tail = tuple(TailPoint(float(r["far"]), float(r["similarity"]), None if r.get("tar") is None
                           else float(r["tar"]), bool(r.get("measured", True))) for r in rows)
    for p in tail:
        if not 0 < p.far < 1 or not -1 <= p.similarity <= 1:
            raise ValueError(f"impostor_tail point {p} out of range")
    return tail


@dataclass(frozen=True)
class ThresholdTable:
    embedder_sha256: str
    points: tuple[OperatingPoint, ...]
    source: str

    calibration_sha256: str | None = None  # the calibration these scores are after; None: raw cosine
    every_group_points: tuple[OperatingPoint, ...] = ()  # worst-group points; empty in older tables
    tails: dict[str, tuple[TailPoint, ...]] = field(default_factory=dict)  # "pooled" / "every_group"

    @classmethod
    def load(cls, path: Path, calibration_sha256: str | None = None) -> ThresholdTable:
        """The raw-cosine table, or with ``calibration_sha256`` the one measured on that calibration's scores."""
        try:
            data = json.loads(path.read_text())
            block = data
            if calibration_sha256 is not None:
                block = data.get("calibrated")
                if not isinstance(block, dict) or block.get("calibration_sha256") != calibration_sha256:
                    raise ModelError(
                        f"threshold table {path} has no operating points for the shipped score calibration "
                        f"(sha256 {calibration_sha256[:12]}…): re-run tools/eval/evaluate.py --write-thresholds, "
                        "or set recognition.fair_calibration = false"
                    )
            tails = {str(k): _tail(v) for k, v in block.get("impostor_tail", {}).items()}
            return cls(str(data["embedder_sha256"]), _points(block["points"]), str(block.get("source", "")),
                       calibration_sha256, _points(block.get("every_group_points", [])), tails)
        except FileNotFoundError:
            raise ModelError(f"threshold table missing: {path} "
                             "(run tools/eval/evaluate.py --write-thresholds)") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"threshold table {path} is malformed: {exc!r}") from None

    def for_far(self, far: float) -> float:
        """The similarity that keeps false matches at or below ``far`` (the strictest listed point if none is)."""
        ok = [p for p in self.points if p.far <= far]
        chosen = max(ok, key=lambda p: p.far) if ok else min(self.points, key=lambda p: p.far)
        return chosen.similarity

    def points_for(self, operating_point: str) -> tuple[OperatingPoint, ...]:
        """``points`` ("pooled") or ``every_group_points`` ("every_group"); a table without the latter is an
        error there, because the door would otherwise silently keep a promise it does not keep for everyone."""
        if operating_point == "pooled":
            return self.points
        if not self.every_group_points:
            raise ModelError("models/thresholds.json has no every_group_points (the worst-group operating points): "
                             "re-run tools/eval/evaluate.py --groups CSV --write-thresholds, or set "
                             'recognition.operating_point = "pooled"')
        return self.every_group_points

    def point_for(self, far: float, operating_point: str = "pooled") -> OperatingPoint:
        """The loosest listed point with a false-match rate at or below ``far`` (the strictest if none is)."""
        points = self.points_for(operating_point)
        ok = [p for p in points if p.far <= far]
        return max(ok, key=lambda p: p.far) if ok else min(points, key=lambda p: p.far)

    def tail_for(self, operating_point: str) -> tuple[TailPoint, ...]:
        return self.tails.get(operating_point, ())

    def far_at(self, similarity: float) -> float:
        """The false-match rate of the loosest listed point whose threshold is at or below ``similarity``."""
        ok = [p for p in self.points if p.similarity <= similarity]
        return min(p.far for p in ok) if ok else 1.0


class ForeignTableError(ModelError):
    """The threshold table was measured for another embedder: its similarities mean something else here."""


def table_for(models_dir: Path, embedder_sha256: str, calibration_sha256: str | None = None) -> ThresholdTable:
    """The operating points of ``models_dir/thresholds.json`` for this embedder (and score calibration).

    The one resolver the service, the CLI, the fairness report and tools/eval/evaluate.py use. Raises ModelError when
    the table is missing or malformed, :class:`ForeignTableError` when it was measured for another embedder (each
    caller names its own fix: a config key, a flag).
    """
    table = ThresholdTable.load(models_dir / "thresholds.json", calibration_sha256)
    if table.embedder_sha256 != embedder_sha256:
        raise ForeignTableError(f"thresholds.json in {models_dir} was measured for another embedder")
    return table
