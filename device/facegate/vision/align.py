"""Similarity-transform alignment to the standard 112x112 five-point face template.

The embedder was trained on faces warped to these exact positions; a similarity transform (rotation,
uniform scale, translation) keeps the face's shape while putting eyes, nose and mouth where it expects them.
"""

from __future__ import annotations

import cv2
import numpy as np

from facegate.vision.types import Detection

ALIGNED_SIZE = 112
# Eyes (image-left first), nose tip, mouth corners (image-left first), in the 112x112 crop.
TEMPLATE_5 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
# BlazeFace has a mouth centre, not corners: its template point is the corners' midpoint.
TEMPLATE_4 = np.vstack([TEMPLATE_5[:3], TEMPLATE_5[3:].mean(axis=0, keepdims=True)])


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama 1991) mapping src points onto dst; returns a 2x3 matrix."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    var_s = (s**2).sum() / len(src)
    scale = float(np.trace(np.diag(sig) @ sign) / var_s) if var_s > 0 else 1.0
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = mu_d - scale * rot @ mu_s
    return matrix


def alignment_points(face: Detection) -> tuple[np.ndarray, np.ndarray]:
    """The face's points and the template points they go to: five when landmarks refined them, else four."""
    if face.landmarks5 is not None:
        return face.landmarks5, TEMPLATE_5
    return face.keypoints[:4], TEMPLATE_4


def align_face(image: np.ndarray, face: Detection) -> np.ndarray:
    """112x112 RGB crop of the face, warped to the template."""
    src, dst = alignment_points(face)
    matrix = similarity_transform(src, dst)
    return cv2.warpAffine(image, matrix, (ALIGNED_SIZE, ALIGNED_SIZE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
