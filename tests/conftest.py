"""Shared fixtures and options: the shipped models, registry-shipped images, the real data in ../shared when
present, the per-test broker and the service scenes' fixtures (helpers themselves live in tests/support/)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from support import shared_dir
from support.broker import broker, module_broker  # noqa: F401  (the per-test and per-module Mosquitto fixtures)
from support.scenes import astro_templates, factory, photos  # noqa: F401  (the service scenes' fixtures)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="fuzz targets (tests/service/test_fuzz.py) run 10,000 cases each; same as "
                          "FACEGATE_FUZZ_LONG=1")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--long"):
        os.environ["FACEGATE_FUZZ_LONG"] = "1"  # read when tests/service/test_fuzz.py is imported (after this)


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
