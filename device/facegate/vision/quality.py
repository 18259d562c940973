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
    yaw_deg: float  # estimate from the nose's offset from the eye midline; sign: towards image right
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


# Where the nose tip sits between the eye line (0) and the mouth (1) on a level face: the median over 200 LFW
# photos (mostly level, frontal portraits) for each detector's points, which place the nose tip differently.
# The nose turns sideways by about 0.7 eye distances per unit of sin(yaw) (it stands out of the face plane).
FRONTAL_NOSE_RATIO_MESH = 0.59
FRONTAL_NOSE_RATIO_BLAZEFACE = 0.53
_NOSE_DEPTH_EYE_DISTANCES = 0.7


def pose_estimate(
    eye_r: np.ndarray, eye_l: np.ndarray, nose: np.ndarray, mouth: np.ndarray, frontal_nose_ratio: float
) -> tuple[float, float]:
    """Rough yaw and pitch in degrees from where the nose tip sits between eyes and mouth (good enough to gate).

    BlazeFace's ear points were tried first and swing by tens of degrees on a still face; eyes, nose and mouth
    are the points both detectors place reliably.
    """
    eye_r, eye_l, nose, mouth = (np.asarray(p, dtype=np.float64) for p in (eye_r, eye_l, nose, mouth))
    eye_mid = (eye_r + eye_l) / 2
    across = eye_l - eye_r
    eye_dist = float(np.linalg.norm(across))
    down = mouth - eye_mid
    length = float(np.linalg.norm(down))
    if eye_dist < 1e-6 or length < 1e-6:
        return 0.0, 0.0
    sideways = float(np.dot(nose - eye_mid, across / eye_dist)) / eye_dist
    yaw = float(np.degrees(np.arcsin(np.clip(sideways / _NOSE_DEPTH_EYE_DISTANCES, -1.0, 1.0))))
    along = float(np.dot(nose - eye_mid, down) / length**2)
    pitch = float(np.degrees(np.arcsin(np.clip((frontal_nose_ratio - along) * 2.5, -1.0, 1.0))))
    return yaw, pitch


def measure_quality(face: Detection, aligned: np.ndarray) -> Quality:
    grey = cv2.cvtColor(aligned, cv2.COLOR_RGB2GRAY)
    # The centre of the crop is the face itself; the borders may be replicated padding.
    centre = grey[16:96, 16:96]
    if face.landmarks5 is not None:
        eye_r, eye_l, nose = face.landmarks5[:3]
        mouth = face.landmarks5[3:5].mean(axis=0)
        ratio = FRONTAL_NOSE_RATIO_MESH
    else:
        eye_r, eye_l, nose, mouth = face.keypoints[:4]
        ratio = FRONTAL_NOSE_RATIO_BLAZEFACE
    yaw, pitch = pose_estimate(eye_r, eye_l, nose, mouth, ratio)
    return Quality(
        face_px=max(face.box[2], face.box[3]),
        eye_distance_px=face.eye_distance,
        sharpness=float(cv2.Laplacian(centre, cv2.CV_64F).var()),
        brightness=float(centre.mean()),
        yaw_deg=yaw,
        pitch_deg=pitch,
        score=face.score,
    )
