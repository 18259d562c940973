"""The one object the service talks to: score each face per frame, fuse per track, answer at decision time."""

from __future__ import annotations

import numpy as np

from facegate.config import LivenessConfig
from facegate.liveness.model import TextureClassifier
from facegate.liveness.texture import face_crop, texture_features
from facegate.liveness.track import FrameEvidence, LivenessDecision, LivenessTrack, TrackParams
from facegate.vision.landmarks import FaceMesh
from facegate.vision.models import Manifest
from facegate.vision.pipeline import FaceResult
from facegate.vision.runtime import TFLiteModel

ROLE = "antispoof"


class LivenessGate:
    """Presentation-attack detection for the door.

    Per frame and face: ``observe(track_id, image, face, ts, mesh)`` (or ``evidence`` + your own
    ``LivenessTrack``); at decision time: ``decision(track_id)`` → ``(live, score, reason)``, where ``live`` is
    None until ``min_frames`` quality-passing frames were seen. Tracks not seen for ``track_timeout`` seconds are
    dropped on the next ``observe``.
    """

    def __init__(
        self,
        classifier: TextureClassifier,
        operating_point: str = "balanced",
        min_frames: int = 3,
        window_frames: int = 8,
        active: bool = True,
        mesh: FaceMesh | None = None,
        track_timeout: float = 2.0,
    ) -> None:
        self.classifier = classifier
        self.operating_point = operating_point
        self.params = TrackParams(
            threshold=classifier.threshold(operating_point),
            min_frames=min_frames,
            window_frames=window_frames,
            active=classifier.active if active else None,
        )
        self.mesh = mesh
        self.track_timeout = track_timeout
        self.tracks: dict[int, LivenessTrack] = {}

    @classmethod
    def from_manifest(
        cls,
        manifest: Manifest,
        operating_point: str = "balanced",
        model: str | None = None,
        min_frames: int = 3,
        window_frames: int = 8,
        active: bool = True,
        own_mesh: bool = False,
        threads: int = 1,
    ) -> LivenessGate:
        """Load the antispoof model through the manifest (checksum-verified).

        ``own_mesh``: run the face-mesh model here when the caller cannot pass the pipeline's mesh points (costs
        one more mesh inference per face and frame; better to pass ``mesh=`` from the pipeline).
        """
        classifier = TextureClassifier.load(manifest.get(ROLE, model))
        mesh = FaceMesh(TFLiteModel(manifest.get("landmarks"), threads)) if (active and own_mesh) else None
        return cls(classifier, operating_point, min_frames, window_frames, active, mesh)

    @classmethod
    def from_config(
        cls, config: LivenessConfig, manifest: Manifest, own_mesh: bool = False, threads: int = 1
    ) -> LivenessGate | None:
        """The gate as configured in ``[liveness]``, or None when it is disabled."""
        if not config.enabled:
            return None
        return cls.from_manifest(manifest, config.operating_point, config.model, config.min_frames,
                                 config.window_frames, config.active, own_mesh, threads)

    # ------------------------------------------------------------------ per frame

    def score(self, image: np.ndarray, face: FaceResult) -> float:
        """Texture log-odds that this face is live (higher = more live), ignoring quality gates. ~2 ms."""
        crop = face_crop(image, face.detection.box, self.classifier.crop_size, self.classifier.crop_scale)
        return self.classifier.logit(texture_features(crop))

    def evidence(self, image: np.ndarray, face: FaceResult, ts: float, mesh: np.ndarray | None = None) -> FrameEvidence:
        """One frame's contribution. Frames that fail a quality gate are not scored: blur and darkness make
        skin look like paper, and recognition does not use those frames either."""
        if face.failures:
            return FrameEvidence(ts, None, None)
        points = None
        if self.params.active is not None:
            if mesh is None and self.mesh is not None:
                mesh = self.mesh.landmarks(image, face.detection)[0]
            if mesh is not None:
                points = np.asarray(mesh, dtype=np.float32)[:, :2]
        return FrameEvidence(ts, self.score(image, face), points)

    def new_track(self) -> LivenessTrack:
        return LivenessTrack(self.params)

    # ------------------------------------------------------------------ per track

    def observe(
        self, track_id: int, image: np.ndarray, face: FaceResult, ts: float, mesh: np.ndarray | None = None
    ) -> LivenessDecision:
        """Add this frame to the face's track and return the track's decision so far."""
        stale = [key for key, t in self.tracks.items() if ts - t.last_ts > self.track_timeout]
        for key in stale:
            del self.tracks[key]
        track = self.tracks.get(track_id)
        if track is None:
            track = self.tracks[track_id] = self.new_track()
        track.add(self.evidence(image, face, ts, mesh))
        return track.decision()

    def decision(self, track_id: int) -> LivenessDecision:
        track = self.tracks.get(track_id)
        return track.decision() if track is not None else LivenessDecision(None, 0.0, "not_enough_frames")

    def forget(self, track_id: int) -> None:
        self.tracks.pop(track_id, None)
