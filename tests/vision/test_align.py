"""Alignment geometry: the similarity fit is exact for similar point sets and lands faces on the template."""

from __future__ import annotations

import numpy as np
from facegate.vision.align import TEMPLATE_4, TEMPLATE_5, align_face, similarity_transform
from facegate.vision.types import Detection


def _transform(points: np.ndarray, scale: float, angle_deg: float, shift: tuple[float, float]) -> np.ndarray:
    a = np.radians(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.asarray(points @ (scale * rot).T + np.asarray(shift))


def test_recovers_a_known_similarity() -> None:
    src = _transform(TEMPLATE_5, 2.5, 17.0, (300.0, 120.0))
    matrix = similarity_transform(src, TEMPLATE_5)
    mapped = src @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(mapped, TEMPLATE_5, atol=1e-9)
    assert abs(np.hypot(*matrix[:, 0]) - 1 / 2.5) < 1e-9


def test_never_mirrors_the_face() -> None:
    """A mirrored point set cannot be fitted by a rotation; the fit must stay a rotation (det > 0)."""
    src = TEMPLATE_5.copy()
    src[:, 0] = 112 - src[:, 0]
    matrix = similarity_transform(src, TEMPLATE_5)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_align_face_puts_marked_points_on_the_template() -> None:
    image = np.zeros((400, 400, 3), dtype=np.uint8)
    points = _transform(TEMPLATE_4, 2.0, -12.0, (120.0, 90.0))
    for x, y in points:
        image[round(y) - 1 : round(y) + 2, round(x) - 1 : round(x) + 2] = 255
    keypoints = np.vstack([points, [[0, 0], [0, 0]]]).astype(np.float32)
    face = Detection(box=(100, 80, 200, 200), score=1.0, keypoints=keypoints)
    crop = align_face(image, face)
    assert crop.shape == (112, 112, 3)
    for x, y in TEMPLATE_4:
        assert crop[round(y), round(x)].max() > 100, (x, y)
