"""Small helpers shared by the privacy and rights tests: deterministic unit vectors and a file-key sealer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from facegate.privacy.keys import load_sealer
from facegate.privacy.seal import Sealer


def unit(seed: int, dim: int = 128) -> np.ndarray:
    """A reproducible unit-length float32 vector, so a template's bytes can be searched for in a file."""
    v = np.random.default_rng(seed).standard_normal(dim).astype("<f4")
    return v / np.linalg.norm(v)


def sealer(tmp: Path, name: str = "privacy.key") -> Sealer:
    """A sealer with a file key under ``tmp`` (created on first use, as a door does)."""
    return load_sealer("file", tmp / name, tmp)
