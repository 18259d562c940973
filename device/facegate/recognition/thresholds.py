"""Match thresholds stated two ways: as cosine similarity and as the false-match rate it gives.

The table is produced by ``tools/evaluate.py --write-thresholds`` for one embedder and one alignment
method; a table made for another embedder is ignored because its similarities mean something else.

The file holds two tables: ``points`` for raw cosine similarity and, under ``calibrated``, the same operating
points for scores after the fair score calibration (``recognition.fair_calibration``), tagged with the SHA-256
of the calibration file they were measured with. A file with only ``points`` (older releases) still loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from facegate.errors import ModelError

DEFAULT_FAR = 1e-4


@dataclass(frozen=True)
class OperatingPoint:
    far: float
    similarity: float
    tar: float | None = None


@dataclass(frozen=True)
class ThresholdTable:
    embedder_sha256: str
    points: tuple[OperatingPoint, ...]
    source: str

    calibration_sha256: str | None = None  # the calibration these scores are after; None: raw cosine

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
                        f"(sha256 {calibration_sha256[:12]}…): re-run tools/evaluate.py --write-thresholds, or set "
                        "recognition.fair_calibration = false"
                    )
            points = tuple(
                OperatingPoint(float(p["far"]), float(p["similarity"]), p.get("tar")) for p in block["points"]
            )
            return cls(str(data["embedder_sha256"]), points, str(block.get("source", "")), calibration_sha256)
        except FileNotFoundError:
            raise ModelError(f"threshold table missing: {path} (run tools/evaluate.py --write-thresholds)") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"threshold table {path} is malformed: {exc!r}") from None

    def for_far(self, far: float) -> float:
        """The similarity that keeps false matches at or below ``far`` (the strictest listed point if none is)."""
        ok = [p for p in self.points if p.far <= far]
        chosen = max(ok, key=lambda p: p.far) if ok else min(self.points, key=lambda p: p.far)
        return chosen.similarity

    def far_at(self, similarity: float) -> float:
        """The false-match rate of the loosest listed point whose threshold is at or below ``similarity``."""
        ok = [p for p in self.points if p.similarity <= similarity]
        return min(p.far for p in ok) if ok else 1.0


class ForeignTableError(ModelError):
    """The threshold table was measured for another embedder: its similarities mean something else here."""


def table_for(models_dir: Path, embedder_sha256: str, calibration_sha256: str | None = None) -> ThresholdTable:
    """The operating points of ``models_dir/thresholds.json`` for this embedder (and score calibration).

    The one resolver the service, the CLI, the fairness report and tools/evaluate.py use. Raises ModelError when
    the table is missing or malformed, :class:`ForeignTableError` when it was measured for another embedder (each
    caller names its own fix: a config key, a flag).
    """
    table = ThresholdTable.load(models_dir / "thresholds.json", calibration_sha256)
    if table.embedder_sha256 != embedder_sha256:
        raise ForeignTableError(f"thresholds.json in {models_dir} was measured for another embedder")
    return table
