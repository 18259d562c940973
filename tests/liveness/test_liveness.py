"""Liveness: texture features, the planar-motion cue, track fusion, model loading, and a nuaa_dev smoke test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from facegate.config import LivenessConfig, parse_config
from facegate.errors import ModelError
from facegate.liveness import (
    ActiveParams,
    FrameEvidence,
    LivenessGate,
    LivenessTrack,
    TextureClassifier,
    TrackParams,
)
from facegate.liveness.motion import eye_aspect_ratio, fit_homography, non_planarity, planar_residual
from facegate.liveness.texture import CUE_DIMS, FEATURE_DIM, LBP_BINS, face_crop, lbp_histogram, texture_features
from facegate.vision.models import Manifest, default_models_dir
from support import shared_dir

# ---------------------------------------------------------------- texture


def test_lbp_of_a_flat_patch_is_one_bin() -> None:
    """Every neighbour equals the centre → code 255 (a uniform pattern): the whole mass lands in one bin."""
    hist = lbp_histogram(np.full((16, 16), 80, np.uint8))
    assert hist.shape == (LBP_BINS,)
    assert hist.max() == pytest.approx(1.0)


def test_lbp_histogram_sums_to_one_on_noise() -> None:
    rng = np.random.default_rng(0)
    hist = lbp_histogram(rng.integers(0, 256, (32, 32), dtype=np.uint8))
    assert hist.sum() == pytest.approx(1.0)
    assert hist[-1] > 0.2  # random texture is mostly non-uniform patterns


def test_face_crop_pads_boxes_that_leave_the_frame(astronaut: np.ndarray) -> None:
    crop = face_crop(astronaut, (-50.0, -40.0, 120.0, 100.0), 64)
    assert crop.shape == (64, 64, 3)
    features = texture_features(crop)
    assert features.shape == (FEATURE_DIM,)
    assert np.isfinite(features).all()


# ---------------------------------------------------------------- planar-motion cue


def _homography(angle_deg: float, tilt: float, shift: float, centre: np.ndarray) -> np.ndarray:
    """A hand-held photo moved: in-plane rotation, perspective tilt and a shift, about the face centre."""
    a = np.radians(angle_deg)
    to_centre = np.array([[1, 0, -centre[0]], [0, 1, -centre[1]], [0, 0, 1]])
    back = np.linalg.inv(to_centre)
    rot = np.array([[np.cos(a), -np.sin(a), shift], [np.sin(a), np.cos(a), shift / 2], [tilt, 0, 1]])
    return np.asarray(back @ rot @ to_centre)


def test_homography_fit_is_exact_for_a_plane() -> None:
    rng = np.random.default_rng(1)
    src = rng.uniform(100, 300, (50, 2))
    h = _homography(8, 4e-4, 12, np.array([200.0, 200.0]))
    dst = np.c_[src, np.ones(50)] @ h.T
    dst = dst[:, :2] / dst[:, 2:]
    fitted = fit_homography(src, dst)
    np.testing.assert_allclose(fitted / fitted[2, 2], h / h[2, 2], atol=1e-8)


@pytest.fixture(scope="module")
def astronaut_mesh(pipeline, astronaut: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    face = pipeline.detect(astronaut)[0]
    mesh, presence = pipeline.mesh.landmarks(astronaut, face)
    assert presence > 0.5
    return np.asarray(mesh)


def test_a_warped_photo_moves_planar_and_is_vetoed(pipeline, astronaut: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """The astronaut photo tilted, turned and moved like a waved print: the face mesh found on each warped frame
    follows one homography, so the track is rejected as planar motion even though its texture passed.

    The moves are large (0.5-3.5 eye distances) on purpose: the mesh model's own error under re-sampling is
    about 1% of the eye distance, so motions of a few tenths of an eye distance are not separable from a real
    face (checked: median non-planarity -3.3 to -4.4 there), and the veto must stay silent then."""
    face = pipeline.detect(astronaut)[0]
    x, y, w, h = face.box
    centre = np.array([x + w / 2, y + h / 2])
    track = LivenessTrack(TrackParams(threshold=-100.0, active=ActiveParams()))
    moves = [(0, 0, 0), (5, 2e-4, 40), (-5, -2e-4, -40), (8, 3e-4, 70), (-3, 1e-4, -60)]
    for k, (angle, tilt, shift) in enumerate(moves):
        matrix = _homography(angle, tilt, shift, centre)
        frame = cv2.warpPerspective(astronaut, matrix, (astronaut.shape[1], astronaut.shape[0]),
                                    borderMode=cv2.BORDER_REPLICATE)
        found = pipeline.detect(frame)[0]
        mesh = pipeline.mesh.landmarks(frame, found)[0]
        track.add(FrameEvidence(k / 15, 5.0, mesh[:, :2]))
    assert track.max_motion > 0.5
    planarity = track.non_planarity()
    assert planarity is not None and planarity < ActiveParams().veto_below
    assert track.decision() == (False, 5.0, "spoof_planar_motion")


def _rotate_head(mesh: np.ndarray, yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """Turn the 3-D mesh (x, y, z) about its centre and project it (weak perspective): what a real head does."""
    pts = mesh - mesh.mean(axis=0)
    yaw, pitch = np.radians(yaw_deg), np.radians(pitch_deg)
    ry = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    turned = pts @ (rx @ ry).T
    return np.asarray(turned[:, :2] + mesh[:, :2].mean(axis=0))


def test_a_turning_head_is_not_planar(astronaut_mesh: np.ndarray) -> None:
    """Parallax of a 3-D head (nose in front of the cheeks) is what a homography cannot explain."""
    rng = np.random.default_rng(2)
    track = LivenessTrack(TrackParams(threshold=0.0, active=ActiveParams()))
    for k, (yaw, pitch) in enumerate([(0, 0), (6, 2), (12, -2), (4, 4), (-6, 0)]):
        points = _rotate_head(astronaut_mesh, yaw, pitch) + rng.normal(0, 0.3, (len(astronaut_mesh), 2))
        track.add(FrameEvidence(k / 15, 1.0, points))
    planarity = track.non_planarity()
    assert planarity is not None and planarity > ActiveParams().veto_below
    assert track.decision() == (True, 1.0, "live")


def test_a_still_face_gives_no_motion_evidence(astronaut_mesh: np.ndarray) -> None:
    """Jitter alone is below min_motion: no veto either way (the door must not reject people standing still)."""
    rng = np.random.default_rng(3)
    track = LivenessTrack(TrackParams(threshold=0.0, active=ActiveParams()))
    for k in range(6):
        track.add(FrameEvidence(k / 15, 1.0, astronaut_mesh[:, :2] + rng.normal(0, 0.3, (len(astronaut_mesh), 2))))
    assert track.non_planarity() is None
    assert track.decision().live is True


def test_non_planarity_is_motion_normalised(astronaut_mesh: np.ndarray) -> None:
    moved = astronaut_mesh[:, :2] + 20.0
    motion, residual = planar_residual(astronaut_mesh, moved)
    assert motion > 0.1 and residual < 1e-6
    assert non_planarity(motion, residual) < -8  # a pure shift is perfectly planar
    assert 0.2 < eye_aspect_ratio(astronaut_mesh) < 0.5  # open eyes


# ---------------------------------------------------------------- track fusion


def test_track_needs_min_frames_and_skips_failed_frames() -> None:
    track = LivenessTrack(TrackParams(threshold=0.5, min_frames=3))
    for k in range(2):
        track.add(FrameEvidence(k, 2.0))
    track.add(FrameEvidence(2, None))  # failed a quality gate: does not count
    assert track.decision() == (None, 2.0, "not_enough_frames")
    track.add(FrameEvidence(3, 1.0))
    live, score, reason = track.decision()
    assert live is True and score == pytest.approx(5 / 3) and reason == "live"


def test_one_clear_spoof_frame_is_not_averaged_away() -> None:
    """Live frames then a print frame: the mean is still above the threshold, the print frame alone is far below."""
    track = LivenessTrack(TrackParams(threshold=0.0, min_frames=3))
    for k, score in enumerate((6.0, 6.0, 6.0, -4.0)):
        track.add(FrameEvidence(k / 15, score))
    assert track.score > 0.0
    assert track.decision() == (False, track.score, "spoof_texture")


def test_track_rejects_low_texture_scores() -> None:
    track = LivenessTrack(TrackParams(threshold=0.5, min_frames=2, window_frames=3))
    for k, s in enumerate([3.0, -2.0, -2.0, -2.0]):  # the window forgets the first frame
        track.add(FrameEvidence(k, s))
    assert track.decision() == (False, -2.0, "spoof_texture")


# ---------------------------------------------------------------- model, manifest, gate, config


def test_antispoof_model_loads_through_the_manifest() -> None:
    entry = Manifest.load().get("antispoof")
    assert entry.raw["source"]["tool"] == "tools/evaluate_pad.py --write-model"
    model = TextureClassifier.load(entry)
    assert model.weights.shape == (FEATURE_DIM + sum(CUE_DIMS[c] for c in model.cues),)
    assert model.threshold("secure") >= model.threshold("balanced") >= model.threshold("convenient")


def test_a_tampered_antispoof_model_is_refused(tmp_path: Path) -> None:
    source = default_models_dir()
    entry = Manifest.load(source).get("antispoof")
    shutil.copy(source / "manifest.json", tmp_path / "manifest.json")
    data = json.loads(entry.path.read_text())
    data["operating_points"]["balanced"] -= 5.0  # a quietly lowered threshold would let photos in
    (tmp_path / entry.path.name).write_text(json.dumps(data))
    with pytest.raises(ModelError, match="checksum mismatch"):
        Manifest.load(tmp_path).get("antispoof")


def test_gate_from_config_scores_and_decides(astronaut: np.ndarray, pipeline) -> None:  # type: ignore[no-untyped-def]
    manifest = Manifest.load()
    assert LivenessGate.from_config(LivenessConfig(enabled=False), manifest) is None
    gate = LivenessGate.from_config(LivenessConfig(min_frames=2), manifest)
    assert gate is not None
    face = pipeline.process(astronaut, largest_only=True, embed=False)[0]
    assert np.isfinite(gate.score(astronaut, face))
    assert gate.observe(7, astronaut, face, 0.0).live is None
    decision = gate.observe(7, astronaut, face, 0.07)
    assert decision.live is not None and decision.reason in {"live", "spoof_texture"}
    assert gate.decision(7) == decision
    gate.observe(8, astronaut, face, 10.0)  # track 7 is stale by now
    assert gate.decision(7).live is None
    assert parse_config({}).liveness.operating_point == "balanced"


# ---------------------------------------------------------------- real data smoke test


def _nuaa_dir() -> Path:
    path = shared_dir() / "spoof" / "nuaa_dev"
    if not path.is_dir():
        pytest.skip(f"nuaa_dev not found at {path} (set FACEGATE_SHARED to the folder holding spoof/nuaa_dev)")
    return path


@pytest.mark.parametrize(
    ("kind", "session", "expected"), [("live", "01_00_01", True), ("spoof_print", "01_02_03", False)]
)
def test_nuaa_presentations_smoke(pipeline, kind: str, session: str, expected: bool) -> None:  # type: ignore[no-untyped-def]
    """Five consecutive frames of one subject through pipeline + gate, as the service will run them.

    A wiring check, not a measurement: the shipped model was fitted on these subjects. Cross-validated figures
    come from tools/eval/evaluate_pad.py."""
    from facegate.base.imageio import read_image

    folder = _nuaa_dir() / kind / "0003"
    frames = sorted(folder.glob(f"0003_{session}_*.jpg"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))[:5]
    assert len(frames) == 5
    gate = LivenessGate.from_manifest(Manifest.load())
    for k, path in enumerate(frames):
        image = read_image(path)
        face = pipeline.process(image, largest_only=True, embed=False)[0]
        mesh = pipeline.mesh.landmarks(image, face.detection)[0]
        decision = gate.observe(1, image, face, k / 15, mesh=mesh)
    assert decision.live is expected, decision
