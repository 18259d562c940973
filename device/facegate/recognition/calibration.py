"""Fair score normalisation: equalise false-match rates across kinds of faces without knowing anyone's group.

A face embedder's impostor scores are not equally spread for every population: for faces of a kind that was
rare in its training data, two different people score more alike, so one global threshold gives them a higher
false-match rate (on lfw_dev: women 2.4x men at FAR 1e-4). After Terhoerst et al. 2020 ("fair score
normalization"), a reference set's embeddings are clustered (k-means, no label of any kind); each cluster c gets
the threshold t_c that gives the target FAR for impostor comparisons involving it, and its offset is
``o_c = t_c - t_global``. A comparison of faces in clusters a and b is then scored ``s - (o_a + o_b) / 2``:
symmetric, one global threshold again, and a cluster whose impostors score high pays for it.

The file is made by ``tools/eval/fit_calibration.py`` and loaded, like every model, through ``manifest.json`` (role
``score_calibration``) so an altered file is refused. The cost is one (k x 192) product per face and one
per-template offset precomputed when the gallery index is built.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from facegate.errors import ModelError
from facegate.vision.models import Manifest

ROLE = "score_calibration"
FORMAT = 1


@dataclass(frozen=True)
class FairCalibration:
    """Cluster centroids (unit rows) and each cluster's threshold offset, for one embedder."""

    centroids: np.ndarray  # (k, d) float32, L2-normalised
    offsets: np.ndarray  # (k,) float32: t_c - t_global
    embedder_sha256: str
    sha256: str = ""  # of the file it came from (names the calibration in thresholds.json)
    method: str = "fsn"

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    def clusters(self, embeddings: np.ndarray) -> np.ndarray:
        """Nearest centroid (cosine) of each row; a single vector gives a 1-element array."""
        e = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        return np.asarray(np.argmax(e @ self.centroids.T, axis=1), dtype=np.intp)

    def half_offsets(self, embeddings: np.ndarray) -> np.ndarray:
        """Each row's share of the shift, ``o_c / 2``: a comparison subtracts both sides' shares."""
        return np.asarray(self.offsets[self.clusters(embeddings)] / 2.0, dtype=np.float32)

    def score(self, a: np.ndarray, b: np.ndarray) -> float:
        """Calibrated similarity of two L2-normalised embeddings."""
        raw = float(np.dot(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)))
        return raw - float(self.half_offsets(a)[0]) - float(self.half_offsets(b)[0])

    def pair_scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Row-wise calibrated similarities of two (n, d) arrays (the evaluation's pairs)."""
        raw = np.asarray(np.einsum("ij,ij->i", a, b), dtype=np.float32)
        return np.asarray(raw - self.half_offsets(np.nan_to_num(a)) - self.half_offsets(np.nan_to_num(b)))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "method": self.method, "k": self.k, "embedder_sha256": self.embedder_sha256,
            "offsets": [round(float(v), 6) for v in self.offsets],
            "centroids": [[round(float(v), 6) for v in row] for row in self.centroids],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], sha256: str = "") -> FairCalibration:
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
        centroids = np.asarray(data["centroids"], dtype=np.float32)
        offsets = np.asarray(data["offsets"], dtype=np.float32)
        if centroids.ndim != 2 or offsets.shape != (centroids.shape[0],) or centroids.shape[0] < 1:
            raise ValueError(f"centroids {centroids.shape} and offsets {offsets.shape} do not agree")
        if not (np.all(np.isfinite(centroids)) and np.all(np.isfinite(offsets))):
            raise ValueError("non-finite centroid or offset")
        centroids = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
        return cls(centroids.astype(np.float32), offsets, str(data["embedder_sha256"]), sha256,
                   str(data.get("method", "fsn")))

    @classmethod
    def load(cls, manifest: Manifest, embedder_sha256: str) -> FairCalibration:
        """The manifest's calibration for this embedder; refuses a missing, altered or mismatched file."""
        entry = manifest.get(ROLE)  # verifies the SHA-256
        try:
            calibration = cls.from_json(json.loads(entry.path.read_text()), entry.sha256)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"score calibration {entry.path} is malformed: {exc}") from None
        if calibration.embedder_sha256 != embedder_sha256:
            raise ModelError(
                f"score calibration {entry.path} was fitted for another embedder; set "
                "recognition.fair_calibration = false or re-run tools/eval/fit_calibration.py"
            )
        if calibration.centroids.shape[1] != manifest_dim(entry.raw):
            raise ModelError(f"score calibration {entry.path}: centroid size does not match its manifest entry")
        return calibration


def manifest_dim(raw: dict[str, Any]) -> int:
    return int(raw["input"]["shape"][-1])
