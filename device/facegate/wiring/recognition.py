"""Recognition: the pipeline, its operating point, the gallery and its index, liveness, the decision engine.

Every check that must stop the start (a calibration or threshold table for another embedder, a damaged gallery,
templates of the wrong length) runs here, before any door pin is touched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from facegate.access.policy import AccessPolicy
from facegate.config import Config, ConfigError
from facegate.errors import ModelError
from facegate.gallery.index import EmbeddingIndex
from facegate.gallery.store import Gallery
from facegate.liveness.gate import LivenessGate
from facegate.privacy.seal import Sealer
from facegate.recognition.calibration import FairCalibration
from facegate.recognition.decision import DecisionEngine
from facegate.recognition.grant_embeddings import GrantEmbeddings, GrantEmbeddingsError, open_grant_embeddings
from facegate.recognition.operating_point import door_threshold
from facegate.recognition.thresholds import ForeignTableError, ThresholdTable, table_for
from facegate.recognition.zone import DoorZone
from facegate.vision.models import Manifest
from facegate.vision.pipeline import FacePipeline, PipelineOptions
from facegate.vision.quality import QualityGates
from facegate.wiring.recovery import check_gallery

log = logging.getLogger("facegate.service")


def build_pipeline(config: Config) -> FacePipeline:
    m = config.models
    options = PipelineOptions(
        threads=m.threads, detector=m.detector, embedder=m.embedder, five_point=m.five_point,
        flip_fusion=m.flip_fusion, gates=QualityGates(**config.recognition.quality.model_dump()),
        tile_px=config.camera.detect_tile_px,
    )
    return FacePipeline(Manifest.load(m.dir), options)


def load_calibration(config: Config, pipeline: FacePipeline) -> FairCalibration | None:
    """The fair score calibration when ``recognition.fair_calibration`` is on (a bad file stops the start)."""
    if not config.recognition.fair_calibration:
        return None
    try:
        return FairCalibration.load(pipeline.manifest, pipeline.embedder_sha256)
    except ModelError as exc:
        raise ConfigError(f"recognition.fair_calibration: {exc}") from None


def threshold_table(config: Config, pipeline: FacePipeline,
                    calibration: FairCalibration | None = None) -> ThresholdTable | None:
    """models/thresholds.json for this embedder (and calibration); None only beside a hand-set threshold."""
    hand_set = config.recognition.threshold is not None
    try:
        table = table_for(pipeline.manifest.directory, pipeline.embedder_sha256,
                          calibration.sha256 if calibration is not None else None)
    except ForeignTableError:
        if hand_set:
            return None
        raise ConfigError(
            "recognition.threshold: models/thresholds.json was measured for another embedder; "
            "set recognition.threshold or re-run tools/eval/evaluate.py --write-thresholds"
        ) from None
    except ModelError:
        if hand_set:
            return None
        raise
    if not hand_set:
        try:
            table.points_for(config.recognition.operating_point)
        except ModelError as exc:
            raise ConfigError(f"recognition.operating_point: {exc}") from None
    return table


def match_threshold(config: Config, pipeline: FacePipeline, calibration: FairCalibration | None = None,
                    templates: int = 0, persons: int = 0) -> float:
    """The similarity the door decides with for a gallery of ``templates`` (recognition/operating_point.py)."""
    table = threshold_table(config, pipeline, calibration)
    return door_threshold(config.recognition, table, templates, persons).similarity


def new_person_threshold(config: Config, pipeline: FacePipeline,
                         calibration: FairCalibration | None = None) -> float | None:
    """Similarity below which a frame shows someone other than the decided person (``new_person_far``).

    None when the table is not for this embedder (a hand-set threshold): the engine then uses the match
    threshold, so a decided track is handed over more readily, which costs at most an extra event, never a grant.
    """
    try:
        table = table_for(pipeline.manifest.directory, pipeline.embedder_sha256,
                          calibration.sha256 if calibration is not None else None)
    except ModelError:  # missing, malformed, or for another embedder
        return None
    return table.for_far(config.recognition.new_person_far)


@dataclass
class RecognitionParts:
    pipeline: FacePipeline
    calibration: FairCalibration | None
    thresholds: ThresholdTable | None  # None only beside a hand-set recognition.threshold
    threshold: float  # for the gallery as built (recognition.fpir follows its size)
    gallery: Gallery
    policy: AccessPolicy
    index_revision: int  # the gallery revision ``index`` was built at
    index: EmbeddingIndex
    names: dict[str, str | None]
    liveness: LivenessGate | None
    engine: DecisionEngine
    zone: DoorZone


def build_recognition(config: Config, sealer: Sealer | None = None) -> RecognitionParts:
    """``sealer``: the gallery's personal values are sealed at rest (facegate.privacy); None keeps it plain."""
    pipeline = build_pipeline(config)
    # Fair score calibration: the index, the thresholds and so the engine all use calibrated scores.
    calibration = load_calibration(config, pipeline)
    thresholds = threshold_table(config, pipeline, calibration)
    check_gallery(config.gallery_path)
    gallery = Gallery(config.gallery_path, sealer)
    gallery.check_embedder(pipeline.embedder_sha256)
    gallery.check_templates(pipeline.embedder.dim)  # the template gate: exit 2 naming the person
    gallery.set_require_consent(config.privacy.require_consent)  # every writer enforces it (privacy)
    policy = AccessPolicy(gallery, config.access)
    revision = gallery.revision  # read before the build: never newer than the index
    index = gallery.build_index(calibration)
    names = gallery.names()
    threshold = door_threshold(config.recognition, thresholds, index.templates, index.persons).similarity
    liveness = LivenessGate.from_config(config.liveness, pipeline.manifest, own_mesh=pipeline.mesh is None)
    engine = DecisionEngine(config.recognition, threshold,
                            new_person_below=new_person_threshold(config, pipeline, calibration),
                            liveness=liveness.new_track if liveness else None)
    # Which face decides (recognition/zone.py): docs/decision.md.
    zone = DoorZone(config.camera.roi, config.recognition.min_face_px)
    return RecognitionParts(pipeline, calibration, thresholds, threshold, gallery, policy, revision, index, names,
                            liveness, engine, zone)


def open_grant_store(config: Config, sealer: Sealer | None = None) -> GrantEmbeddings | None:
    """Each grant's face, kept a few days so an admin can mark it "This was not them" (docs/decision.md).

    None when it cannot be opened: the door runs on (logged), only the marking is unavailable.
    """
    try:
        return open_grant_embeddings(config.state_dir, config.recognition.keep_grant_embeddings_days, sealer)
    except GrantEmbeddingsError as exc:
        log.error("grant embeddings unavailable, grants cannot be marked 'This was not them': %s", exc)
        return None
