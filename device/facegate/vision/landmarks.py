"""Face mesh (468 points) on a rotated square region around a detection.

BlazeFace gives a mouth centre only; the mesh adds mouth corners so the embedder can be aligned with the
standard five-point template, and its eye and lip points are what blink/motion liveness cues are made of.
"""

from __future__ import annotations

import cv2
import numpy as np

from facegate.vision.runtime import TFLiteModel
from facegate.vision.types import Detection

# Face-mesh indices (image-left first for an unmirrored frame).
EYE_RIGHT = (33, 133)  # the subject's right eye: outer and inner corner
EYE_LEFT = (362, 263)
NOSE_TIP = 1
MOUTH_CORNERS = (61, 291)
ROI_SCALE = 1.5  # MediaPipe's face-landmark ROI is the detection box enlarged 1.5x, square.


def roi_transform(face: Detection, size: int) -> np.ndarray:
    """2x3 affine from the image to a size x size crop that is upright (eye line horizontal)."""
    x, y, w, h = face.box
    centre = np.array([x + w / 2, y + h / 2])
    side = max(w, h) * ROI_SCALE
    d = face.keypoints[1] - face.keypoints[0]
    angle = float(np.arctan2(d[1], d[0]))
    ex = np.array([np.cos(angle), np.sin(angle)]) * side
    ey = np.array([-np.sin(angle), np.cos(angle)]) * side
    src = np.array([centre - ex / 2 - ey / 2, centre + ex / 2 - ey / 2, centre - ex / 2 + ey / 2], dtype=np.float32)
    dst = np.array([[0, 0], [size, 0], [0, size]], dtype=np.float32)
    return np.asarray(cv2.getAffineTransform(src, dst))


class FaceMesh:
    """Runs the landmark model and returns points in image pixels."""

    def __init__(self, model: TFLiteModel) -> None:
        self.model = model
        self.size = model.input_shape[1]

    def landmarks(self, image: np.ndarray, face: Detection) -> tuple[np.ndarray, float]:
        """(468, 3) points (x, y in image pixels, z relative) and the model's face-presence probability."""
        matrix = roi_transform(face, self.size)
        crop = cv2.warpAffine(image, matrix, (self.size, self.size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT)
        outputs = self.model.run(self.model.normalise(crop)[None])
        mesh_out = max(outputs, key=lambda o: o.size)
        flag_out = min(outputs, key=lambda o: o.size)
        pts = mesh_out.reshape(-1, 3).astype(np.float64)
        inverse = cv2.invertAffineTransform(matrix)
        xy = pts[:, :2] @ inverse[:, :2].T + inverse[:, 2]
        presence = float(1.0 / (1.0 + np.exp(-float(flag_out.reshape(-1)[0]))))
        return np.hstack([xy, pts[:, 2:3]]), presence

    @staticmethod
    def five_points(mesh: np.ndarray) -> np.ndarray:
        """Eye centres, nose tip and mouth corners in the template's order."""
        return np.array(
            [
                mesh[list(EYE_RIGHT), :2].mean(axis=0),
                mesh[list(EYE_LEFT), :2].mean(axis=0),
                mesh[NOSE_TIP, :2],
                mesh[MOUTH_CORNERS[0], :2],
                mesh[MOUTH_CORNERS[1], :2],
            ],
            dtype=np.float32,
        )
