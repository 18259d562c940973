"""Active cues from face-mesh points over a track: is the face a 3-D, non-rigid object or a flat picture?

A printed photo or a screen is a plane: however it is moved or tilted, the image of every point on it moves by
one homography, so mesh points fitted on it follow a homography up to landmark jitter. A real head has depth
(nose vs cheeks vs ears: parallax when it turns) and moves non-rigidly (blinks, mouth), so the residual after the
best homography grows with the motion. On nuaa_dev, between frames with matched motion (0.05-0.8 eye distances)
the residual of a real face was 2-3x that of a hand-held print (per-pair AUC 0.89-0.93), although prints bend.

The face-mesh model's own error is about 1% of the eye distance (synthetic planar warps of a photo), so a
plane and a face only separate at large motion: a photo waved by half an eye distance or more gives a median
non-planarity near -5, while moves of a few tenths overlap with real faces (-3.3 to -4.4). The veto threshold
(-4.2, below every live presentation of nuaa_dev) therefore fires on large planar motion only.

The cue needs motion: at 15 fps a person standing still moves a few hundredths of an eye distance in the
300 ms the door may wait, which is within landmark jitter, so a still track carries no evidence either way.
It is therefore only a veto: it can reject a track that moved and stayed planar, never accept one.
"""

from __future__ import annotations

import math

import numpy as np

# Face-mesh indices: eye corners (for the eye distance) and the six points per eye of the eye aspect ratio.
EYE_RIGHT_CORNERS = (33, 133)
EYE_LEFT_CORNERS = (362, 263)
EAR_RIGHT = (33, 160, 158, 133, 153, 144)
EAR_LEFT = (362, 385, 387, 263, 373, 380)

NOISE_FLOOR = 1e-4  # eye distances; keeps logs finite on synthetic, noise-free points


def eye_distance(mesh: np.ndarray) -> float:
    """Distance between the eye centres in pixels (the unit that makes the cues independent of face size)."""
    right = mesh[list(EYE_RIGHT_CORNERS), :2].mean(axis=0)
    left = mesh[list(EYE_LEFT_CORNERS), :2].mean(axis=0)
    return float(np.linalg.norm(left - right))


def eye_aspect_ratio(mesh: np.ndarray) -> float:
    """Mean eye opening of both eyes (Soukupová & Čech 2016): ~0.25-0.3 open, < 0.15 during a blink."""

    def one(idx: tuple[int, ...]) -> float:
        p = mesh[list(idx), :2]
        width = float(np.linalg.norm(p[0] - p[3]))
        if width < 1e-6:
            return 0.0
        return float(np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])) / (2.0 * width)

    return (one(EAR_RIGHT) + one(EAR_LEFT)) / 2.0


def fit_homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares homography (normalised DLT) mapping src (N,2) onto dst (N,2); 3x3.

    Plain least squares rather than RANSAC on purpose: the question is how well *all* points fit one plane.
    """
    def normaliser(p: np.ndarray) -> np.ndarray:
        centre = p.mean(axis=0)
        scale = math.sqrt(2.0) / max(float(np.mean(np.linalg.norm(p - centre, axis=1))), 1e-12)
        return np.array([[scale, 0, -scale * centre[0]], [0, scale, -scale * centre[1]], [0, 0, 1]])

    ts, td = normaliser(src), normaliser(dst)
    s = np.c_[src, np.ones(len(src))] @ ts.T
    d = np.c_[dst, np.ones(len(dst))] @ td.T
    zeros = np.zeros((len(s), 3))
    rows_x = np.hstack([-s, zeros, s * d[:, :1]])
    rows_y = np.hstack([zeros, -s, s * d[:, 1:2]])
    a = np.vstack([rows_x, rows_y])
    # The null vector of a via the 9x9 normal matrix: 10x cheaper than an SVD of the (2N, 9) system, and exact
    # enough on normalised coordinates.
    _, vectors = np.linalg.eigh(a.T @ a)
    h = vectors[:, 0].reshape(3, 3)
    h = np.linalg.inv(td) @ h @ ts
    return np.asarray(h / h[2, 2] if abs(h[2, 2]) > 1e-12 else h)


def planar_residual(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(motion, residual) between two meshes, both as RMS point distances in eye distances.

    motion: how far the points moved; residual: what is left after the best homography from a to b.
    """
    a2, b2 = a[:, :2].astype(np.float64), b[:, :2].astype(np.float64)
    unit = max(eye_distance(a), 1e-6)
    motion = float(np.sqrt(np.mean(np.sum((b2 - a2) ** 2, axis=1)))) / unit
    h = fit_homography(a2, b2)
    mapped = np.c_[a2, np.ones(len(a2))] @ h.T
    mapped = mapped[:, :2] / mapped[:, 2:3]
    residual = float(np.sqrt(np.mean(np.sum((mapped - b2) ** 2, axis=1)))) / unit
    return motion, residual


def non_planarity(motion: float, residual: float) -> float:
    """Motion-normalised residual, log(residual) - 0.5 log(motion): about -3.3 for a real face whatever it moved,
    about -4.1 to -4.6 for a hand-held print (nuaa_dev, pairs with 0.05-0.8 eye distances of motion).

    The residual of a real face grew roughly with the square root of the motion, so this is flat for live faces;
    jitter alone (no motion) gives high, live-looking values, which keeps the veto on the safe side.
    """
    return math.log(max(residual, NOISE_FLOOR)) - 0.5 * math.log(max(motion, NOISE_FLOOR))
