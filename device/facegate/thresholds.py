"""Match thresholds stated two ways: as cosine similarity and as the false-match rate it gives.

The table is produced by ``tools/evaluate.py --write-thresholds`` for one embedder and one alignment
method; a table made for another embedder is ignored because its similarities mean something else.
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

    @classmethod
    def load(cls, path: Path) -> ThresholdTable:
        try:
            data = json.loads(path.read_text())
            points = tuple(
                OperatingPoint(float(p["far"]), float(p["similarity"]), p.get("tar")) for p in data["points"]
            )
            return cls(str(data["embedder_sha256"]), points, str(data.get("source", "")))
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
