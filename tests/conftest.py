"""Shared fixtures: the shipped models, registry-shipped images, and the real data in ../shared when present."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from broker import broker  # noqa: F401  (the per-test Mosquitto fixture, for every test module)

ROOT = Path(__file__).resolve().parents[1]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="fuzz targets (tests/test_fuzz.py) run 10,000 cases each; same as FACEGATE_FUZZ_LONG=1")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--long"):
        os.environ["FACEGATE_FUZZ_LONG"] = "1"  # read when tests/test_fuzz.py is imported (after this)


def shared_dir() -> Path:
    return Path(os.environ.get("FACEGATE_SHARED", ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    path = Path(os.environ.get("FACEGATE_FACES", shared_dir() / "faces")) / "lfw_dev"
    if not path.is_dir():
        pytest.skip(f"real face data not found at {path} (set FACEGATE_FACES to the folder holding lfw_dev/)")
    return path


@pytest.fixture(scope="session")
def pipeline():  # type: ignore[no-untyped-def]
    from facegate.vision.pipeline import FacePipeline

    return FacePipeline.from_models_dir()


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """scikit-image's astronaut photo (public domain, NASA): the one face image the project may ship."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="session")
def no_face_image() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.coffee())


def write_image(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path
