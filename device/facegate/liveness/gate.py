"""The one object the service talks to: score each face per frame, fuse per track, answer at decision time."""

from __future__ import annotations

import numpy as np

from facegate.config import LivenessConfig
from facegate.liveness.challenge import ChallengeEvent, ChallengeListener, ChallengeParams, face_view
from facegate.liveness.model import TextureClassifier
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
        challenge: str = "off",
        challenge_params: ChallengeParams | None = None,
    ) -> None:
        self.classifier = classifier
        self.operating_point = operating_point
        threshold = classifier.threshold(operating_point)
        self.params = TrackParams(
            threshold=threshold,
            min_frames=min_frames,
            window_frames=window_frames,
            active=classifier.active if active else None,
            challenge=challenge,
            doubt_below=threshold - classifier.band.below,
            doubt_above=threshold + classifier.band.above,
            doubt_planarity=classifier.band.planarity_below,
            challenge_params=challenge_params or ChallengeParams(),
        )
        # Hears every head-turn challenge being asked and settled (the service: event, door screen, journal).
        self.on_challenge: ChallengeListener | None = None
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
        challenge: str = "off",
        challenge_params: ChallengeParams | None = None,
    ) -> LivenessGate:
        """Load the antispoof model through the manifest (checksum-verified).

        ``own_mesh``: run the face-mesh model here when the caller cannot pass the pipeline's mesh points (costs
        one more mesh inference per face and frame; better to pass ``mesh=`` from the pipeline).
        """
        classifier = TextureClassifier.load(manifest.get(ROLE, model))
        needs_mesh = active or challenge != "off"
        mesh = FaceMesh(TFLiteModel(manifest.get("landmarks"), threads)) if (needs_mesh and own_mesh) else None
        return cls(classifier, operating_point, min_frames, window_frames, active, mesh,
                   challenge=challenge, challenge_params=challenge_params)

    @classmethod
    def from_config(
        cls, config: LivenessConfig, manifest: Manifest, own_mesh: bool = False, threads: int = 1
    ) -> LivenessGate | None:
        """The gate as configured in ``[liveness]``, or None when it is disabled."""
        if not config.enabled:
            return None
        params = ChallengeParams(timeout_seconds=config.challenge_timeout_seconds,
                                 min_turn=config.challenge_min_turn)
        return cls.from_manifest(manifest, config.operating_point, config.model, config.min_frames,
                                 config.window_frames, config.active, own_mesh, threads,
                                 challenge=config.challenge, challenge_params=params)

    # ------------------------------------------------------------------ per frame

    def score(self, image: np.ndarray, face: FaceResult) -> float:
        """Texture log-odds that this face is live (higher = more live), ignoring quality gates. ~2-4 ms."""
        return self.classifier.logit(self.classifier.features(image, face.detection.box))

    def evidence(self, image: np.ndarray, face: FaceResult, ts: float, mesh: np.ndarray | None = None) -> FrameEvidence:
        """One frame's contribution. Frames that fail a quality gate are not scored: blur and darkness make
        skin look like paper, and recognition does not use those frames either."""
        points = None
        if self.params.active is not None or self.params.challenge != "off":
            if mesh is None and self.mesh is not None:
                mesh = self.mesh.landmarks(image, face.detection)[0]
            if mesh is not None:
                points = np.asarray(mesh, dtype=np.float32)[:, :2]
        view = face_view(image, points) if points is not None and self.params.challenge != "off" else None
        if face.failures:  # the face still shows a head turn (the challenge), but its texture is not scored
            return FrameEvidence(ts, None, points, view)
        return FrameEvidence(ts, self.score(image, face), points, view)

    def new_track(self) -> LivenessTrack:
        return LivenessTrack(self.params, self._challenge_event)

    def _challenge_event(self, event: ChallengeEvent) -> None:
        if self.on_challenge is not None:
            self.on_challenge(event)

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
