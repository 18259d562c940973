"""The fitted texture classifier: a logistic regression over ``texture.texture_features``, stored as JSON.

Loaded through the model manifest (role ``antispoof``) like every other model, so the checksum protects the
thresholds too: a retrained or edited file with stale operating points is refused instead of silently moving
the door's APCER/BPCER.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facegate.errors import ModelError
from facegate.liveness import texture
from facegate.vision.models import ModelEntry

FORMAT = 2  # 2 added "cues" (texture.CUE_DIMS groups after the LBP features); 1 (no cues) still loads
FORMATS = (1, 2)
FEATURES = "colour_lbp_v1"
OPERATING_POINTS = ("secure", "balanced", "convenient")


@dataclass(frozen=True)
class ActiveParams:
    """The planar-motion veto (see ``motion.non_planarity``); fixed from nuaa_dev, stored with the model."""

    min_motion: float = 0.05  # eye distances between two frames before a pair says anything
    min_pairs: int = 3
    veto_below: float = -4.2


@dataclass(frozen=True)
class ChallengeBand:
    """Where the passive evidence is in doubt (``[liveness] challenge = "doubt"``): a track whose mean texture
    score lies in [threshold - below, threshold + above) (log-odds relative to the operating point's threshold),
    or that moved and stayed nearly planar (non-planarity below ``planarity_below``, motion.py), is asked for a
    head turn. Chosen on leave-one-subject-out scores of nuaa_dev (docs/liveness.md#head-turn-challenge)."""

    below: float = 0.0
    above: float = 0.0
    planarity_below: float = float("-inf")


@dataclass(frozen=True)
class TextureClassifier:
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    thresholds: dict[str, float]
    crop_size: int = texture.CROP_SIZE
    crop_scale: float = texture.CROP_SCALE
    active: ActiveParams = field(default_factory=ActiveParams)
    band: ChallengeBand = field(default_factory=ChallengeBand)
    info: dict[str, Any] = field(default_factory=dict)
    cues: tuple[str, ...] = ()  # texture.CUE_DIMS groups appended to the LBP features, in this order

    def features(self, image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """This model's feature vector of the face at ``box`` (LBP texture, then its cue groups)."""
        return texture.frame_features(image, box, self.crop_size, self.crop_scale, self.cues)

    def logit(self, features: np.ndarray) -> float:
        """log-odds that the face is live (0 = undecided); higher = more live."""
        z = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        return float(z @ self.weights + self.bias)

    def logits(self, features: np.ndarray) -> np.ndarray:
        z = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        return np.asarray(z @ self.weights + self.bias)

    def threshold(self, operating_point: str) -> float:
        try:
            return self.thresholds[operating_point]
        except KeyError:
            raise ModelError(f"antispoof model has no operating point '{operating_point}'") from None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "kind": "logistic_regression",
            "features": FEATURES,
            "feature_dim": int(self.weights.size),
            "cues": list(self.cues),
            "crop": {"size": self.crop_size, "scale": self.crop_scale},
            "mean": [round(float(v), 9) for v in self.mean],
            "scale": [round(float(v), 9) for v in self.scale],
            "weights": [round(float(v), 9) for v in self.weights],
            "bias": round(float(self.bias), 9),
            "operating_points": {k: round(float(v), 6) for k, v in self.thresholds.items()},
            "active": {"min_motion": self.active.min_motion, "min_pairs": self.active.min_pairs,
                       "veto_below": self.active.veto_below},
            "challenge_band": {"below": self.band.below, "above": self.band.above,
                               "planarity_below": self.band.planarity_below},
            "training": self.info,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], origin: str = "antispoof model") -> TextureClassifier:
        try:
            if data["format"] not in FORMATS or data["features"] != FEATURES:
                raise ModelError(f"{origin}: unsupported format/features {data['format']}/{data['features']}")
            cues = data.get("cues", []) if data["format"] >= 2 else []
            known = texture.CUE_DIMS
            if not isinstance(cues, list) or any(c not in known for c in cues) or len(set(cues)) != len(cues):
                raise ModelError(f"{origin}: cues must be distinct names among {sorted(known)}, not {cues!r}")
            expected = texture.FEATURE_DIM + sum(texture.CUE_DIMS[c] for c in cues)
            dim = int(data["feature_dim"])
            arrays = [np.asarray(data[k], dtype=np.float64) for k in ("mean", "scale", "weights")]
            if dim != expected or any(a.shape != (dim,) for a in arrays):
                raise ModelError(f"{origin}: feature size {dim} does not match this code ({expected} for cues {cues})")
            if not all(np.isfinite(a).all() for a in arrays) or not math.isfinite(float(data["bias"])) \
                    or not (arrays[1] >= 0).all():
                raise ModelError(f"{origin}: mean, scale, weights and bias must be finite and scales not negative")
            thresholds = {k: float(v) for k, v in data["operating_points"].items()}
            missing = [k for k in OPERATING_POINTS if k not in thresholds]
            if missing:
                raise ModelError(f"{origin}: operating points missing: {', '.join(missing)}")
            if not all(math.isfinite(v) for v in thresholds.values()):
                raise ModelError(f"{origin}: operating-point thresholds must be finite, not {thresholds}")
            active = data.get("active", {})
            band = data.get("challenge_band", {})
            band_below, band_above = float(band.get("below", 0.0)), float(band.get("above", 0.0))
            band_planarity = float(band.get("planarity_below", float("-inf")))
            if not (0.0 <= band_below < 50.0 and 0.0 <= band_above < 50.0 and band_planarity < 0.0):
                raise ModelError(f"{origin}: challenge_band must be two log-odds in [0, 50) and a negative "
                                 f"planarity_below, not {band}")
            return cls(
                mean=arrays[0],
                scale=np.where(arrays[1] > 0, arrays[1], 1.0),
                weights=arrays[2],
                bias=float(data["bias"]),
                thresholds=thresholds,
                crop_size=int(data["crop"]["size"]),
                crop_scale=float(data["crop"]["scale"]),
                active=ActiveParams(
                    min_motion=float(active.get("min_motion", ActiveParams.min_motion)),
                    min_pairs=int(active.get("min_pairs", ActiveParams.min_pairs)),
                    veto_below=float(active.get("veto_below", ActiveParams.veto_below)),
                ),
                band=ChallengeBand(band_below, band_above, band_planarity),
                info=dict(data.get("training", {})),
                cues=tuple(cues),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{origin} is malformed: {exc!r}") from None

    @classmethod
    def load(cls, entry: ModelEntry) -> TextureClassifier:
        """From a manifest entry (already checksum-verified by ``Manifest.get``)."""
        try:
            data = json.loads(entry.path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"cannot read antispoof model {entry.path}: {exc}") from None
        return cls.from_json(data, str(entry.path))
