"""Per-face quality measures and the gates that keep poor captures out of the gallery and the door.

A blurry, dark or strongly turned face gives an embedding that matches nobody well (false rejects) or, worse,
drifts towards other people; the gates turn that into a named reason the user can act on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from facegate.vision.types import Detection


@dataclass(frozen=True)
class Quality:
    face_px: float  # the longer side of the detection box, in pixels
    eye_distance_px: float
    sharpness: float  # variance of the Laplacian on the aligned crop
    brightness: float  # mean grey level of the aligned crop, 0..255
    yaw_deg: float  # estimate from the nose's position between the ears; positive = face turned to image right
    pitch_deg: float  # estimate from the nose's height between eyes and mouth; positive = looking up
    score: float  # detector confidence

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 3) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class QualityGates:
    min_face_px: float = 40.0
    min_sharpness: float = 15.0
    min_brightness: float = 40.0
    max_brightness: float = 220.0
    max_abs_yaw_deg: float = 40.0
    max_abs_pitch_deg: float = 35.0
    min_score: float = 0.6

    def failures(self, q: Quality) -> list[str]:
        """Reason codes for every gate the face fails, empty when it passes."""
        reasons = []
        if q.face_px < self.min_face_px:
            reasons.append("face_too_small")
        if q.sharpness < self.min_sharpness:
            reasons.append("too_blurry")
        if q.brightness < self.min_brightness:
            reasons.append("too_dark")
        if q.brightness > self.max_brightness:
            reasons.append("too_bright")
        if abs(q.yaw_deg) > self.max_abs_yaw_deg:
            reasons.append("yaw_too_large")
        if abs(q.pitch_deg) > self.max_abs_pitch_deg:
            reasons.append("pitch_too_large")
        if q.score < self.min_score:
            reasons.append("low_detection_score")
        return reasons


# On frontal faces the nose tip sits at ~0.45 of the way from the eye line down to the mouth (template ratio).
_FRONTAL_NOSE_RATIO = 0.5


def pose_estimate(keypoints: np.ndarray) -> tuple[float, float]:
    """Rough yaw and pitch in degrees from BlazeFace's six points (good enough to gate, not to measure)."""
    eye_r, eye_l, nose, mouth, ear_r, ear_l = keypoints.astype(np.float64)
    to_r = float(np.linalg.norm(nose - ear_r))
    to_l = float(np.linalg.norm(nose - ear_l))
    ratio = (to_r - to_l) / max(to_r + to_l, 1e-6)
    yaw = float(np.degrees(np.arcsin(np.clip(ratio * 2.0, -1.0, 1.0))))
    eye_mid = (eye_r + eye_l) / 2
    axis = mouth - eye_mid
    length = float(np.linalg.norm(axis))
    if length < 1e-6:
        return yaw, 0.0
    along = float(np.dot(nose - eye_mid, axis) / length**2)
    pitch = float(np.degrees(np.arcsin(np.clip((_FRONTAL_NOSE_RATIO - along) * 2.5, -1.0, 1.0))))
    return yaw, pitch


def measure_quality(face: Detection, aligned: np.ndarray) -> Quality:
    grey = cv2.cvtColor(aligned, cv2.COLOR_RGB2GRAY)
    # The centre of the crop is the face itself; the borders may be replicated padding.
    centre = grey[16:96, 16:96]
    yaw, pitch = pose_estimate(face.keypoints)
    return Quality(
        face_px=max(face.box[2], face.box[3]),
        eye_distance_px=face.eye_distance,
        sharpness=float(cv2.Laplacian(centre, cv2.CV_64F).var()),
        brightness=float(centre.mean()),
        yaw_deg=yaw,
        pitch_deg=pitch,
        score=face.score,
    )
