"""Helpers the test modules share, one module per job (no test module imports another test module).

``tests/`` is on ``sys.path`` (``tests/conftest.py`` sits there and pytest's default import mode prepends its
folder), so a test imports ``from support.broker import Mosquitto``; the tools are the ``tools`` package at the
repository root (``pythonpath`` in pyproject.toml): ``from tools.demo import augment``.

This module itself holds the paths and the one image writer every area needs.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    """The real data (LFW, NUAA) next to the checkout, or $FACEGATE_SHARED."""
    return Path(os.environ.get("FACEGATE_SHARED", ROOT.parent / "shared"))


def write_image(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path
