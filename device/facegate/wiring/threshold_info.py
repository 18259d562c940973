"""The threshold a door would use for its gallery, without starting it: ``facegate gallery info`` and doctor.

Reads only the manifest (for the embedder's SHA-256), models/thresholds.json and the gallery's counts, so it is
cheap enough for doctor and never loads a model.
"""

from __future__ import annotations

from pathlib import Path

from facegate.config import Config, ConfigError
from facegate.errors import ModelError
from facegate.gallery.store import Gallery
from facegate.recognition.calibration import FairCalibration
from facegate.recognition.operating_point import DerivedThreshold, door_threshold
from facegate.recognition.thresholds import ThresholdTable, table_for
from facegate.vision.models import Manifest


def door_table(config: Config) -> ThresholdTable | None:
    """The door's threshold table (None beside a hand-set threshold when the table is unusable)."""
    manifest = Manifest.load(config.models.dir)
    embedder = manifest.get("embedder", config.models.embedder).sha256
    try:
        calibration = (FairCalibration.load(manifest, embedder).sha256 if config.recognition.fair_calibration
                       else None)
        table = table_for(manifest.directory, embedder, calibration)
        if config.recognition.threshold is None:
            table.points_for(config.recognition.operating_point)
    except ModelError as exc:
        if config.recognition.threshold is not None:
            return None
        raise ConfigError(f"recognition: {exc}") from None
    return table


def gallery_threshold(config: Config, gallery_path: Path | None = None) -> tuple[DerivedThreshold, int]:
    """The derived threshold for the gallery (default: the configured one) and the gallery's version."""
    path = gallery_path or config.gallery_path
    persons = templates = version = 0
    if path.is_file():
        with Gallery(path) as gallery:
            persons, templates = gallery.counts()
            version = gallery.version
    return door_threshold(config.recognition, door_table(config), templates, persons), version
