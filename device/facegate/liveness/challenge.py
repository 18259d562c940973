"""The head-turn challenge: when the passive evidence is in doubt, ask for a small turn and judge its geometry.

A real head is a solid: when it turns, the nose tip (a centimetre or more in front of the cheeks) moves across
the face outline and hides part of the far cheek, so the turned face is no longer the same picture seen at
another angle. A picture, printed or on a screen, is a plane: however it is tilted or swung, every point on it
moves by one homography, so the turned view is the first view warped by one homography.

Two measurements, both needed:

- the turn, from the face mesh: the nose tip moves across the face outline in the asked direction by at least
  ``min_turn`` (half face widths). The mesh alone cannot tell a turn from a tilted photo: the face-mesh network
  draws a 3-D face on whatever it sees, and on a photo tilted by a homography it reports 50-70% of the turn and
  points that no longer fit one homography (tools/ and tests/liveness/test_liveness_challenge.py measured this on
  nuaa_dev);
- the parallax, from the pixels: the face region before the prompt is warped onto the turned one with the best
  homography (started from the mesh points, refined by ECC image alignment, Evangelidis & Psarakis 2008), and
  the correlation that remains is compared with ``max_planar_correlation``. A tilted picture aligns almost
  perfectly (0.991 or more on planar warps of nuaa_dev frames); a turning head cannot (0.45-0.94 on the
  nuaa_dev turns). ECC correlation is invariant to brightness and contrast, so a change of light does not fake depth.

The visitor is asked for a side chosen per visit at random (``secrets``): a recording of someone turning goes
the right way half the time at best, and a turn to the wrong side fails at once.

Directions are the visitor's own: "left" is the visitor's left, which a camera that does not mirror sees as the
nose moving to the image's right. ``turn_ratio`` is therefore positive for a turn to the visitor's left.

Judged only on frames that arrive after the prompt, against the last frames before it; the time limit is in
frame time (the camera's timestamps), so a replay is judged the same however fast it is played.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from facegate.liveness.motion import fit_homography

LEFT = "left"
RIGHT = "right"
DIRECTIONS = (LEFT, RIGHT)

# Face-mesh indices: the nose tip and the two ends of the face outline at cheek height.
NOSE_TIP = 1
OUTLINE_IMAGE_LEFT = 234  # the visitor's right cheek edge
OUTLINE_IMAGE_RIGHT = 454  # the visitor's left cheek edge

# Outcomes (the ``outcome`` of the liveness_challenge event).
ASKED = "asked"
PASSED = "passed"
WRONG_DIRECTION = "wrong_direction"  # turned the other way: not following the prompt
FLAT = "flat"  # turned far enough, but the points moved as one plane (a tilted picture)
NO_TURN = "no_turn"  # no turn of the asked size within the time limit
FAILED = (WRONG_DIRECTION, FLAT, NO_TURN)


def turn_ratio(mesh: np.ndarray) -> float:
    """Nose tip against the middle of the face outline, in half face widths: 0 frontal, > 0 nose towards the
    image's right (the visitor turned to their left), about ±0.3 for a 15° turn."""
    a = float(mesh[OUTLINE_IMAGE_LEFT, 0])
    b = float(mesh[OUTLINE_IMAGE_RIGHT, 0])
    half = abs(b - a) / 2.0
    if half < 1e-6:
        return 0.0
    return (float(mesh[NOSE_TIP, 0]) - (a + b) / 2.0) / half


VIEW_SIZE = 96  # the face region is compared at this size (pixels, square): a few ms per ECC alignment


@dataclass(frozen=True)
class FaceView:
    """The face region in grey at a fixed size, with the mesh points in its pixel coordinates."""

    grey: np.ndarray  # uint8 (h, w)
    points: np.ndarray  # (N, 2) float64


def face_view(image: np.ndarray, points: np.ndarray) -> FaceView:
    """The square around the mesh (its longer side plus 20%) from an RGB frame, grey, VIEW_SIZE x VIEW_SIZE
    (replicated border off-frame): every view has the same size, so two can be aligned directly."""
    pts = np.asarray(points, dtype=np.float64)[:, :2]
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    side = 1.2 * max(x1 - x0, y1 - y0, 1.0)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    scale = VIEW_SIZE / side
    # Affine map frame → view: scale about the square's corner.
    m = np.array([[scale, 0.0, -scale * (cx - side / 2)], [0.0, scale, -scale * (cy - side / 2)]])
    # Warp first, then grey: only the VIEW_SIZE² output pixels are computed (the frame is not converted whole).
    view = cv2.warpAffine(image, m, (VIEW_SIZE, VIEW_SIZE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    grey = cv2.cvtColor(view, cv2.COLOR_RGB2GRAY) if view.ndim == 3 else view
    return FaceView(np.ascontiguousarray(grey), pts * scale + m[:, 2])


def planar_correlation(before: FaceView, after: FaceView) -> float:
    """How well one homography maps the face before onto the face after: ECC correlation in the face's hull
    (1.0 = a perfect plane). An alignment that fails to converge counts as a plane (1.0): fail closed, the
    visitor's next frame may show the turn again."""
    warp = fit_homography(after.points, before.points).astype(np.float32)  # after → before (ECC's convention)
    mask = np.zeros(after.grey.shape, np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(after.points.astype(np.float32)).astype(np.int32), 1)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 1e-4)
    try:
        cc, _ = cv2.findTransformECC(after.grey.astype(np.float32), before.grey.astype(np.float32), warp,
                                     cv2.MOTION_HOMOGRAPHY, criteria, mask, 3)
    except cv2.error:
        return 1.0
    return float(cc) if math.isfinite(cc) else 1.0


def random_direction() -> str:
    """Unpredictable per visit (a replayed recording must not know the side in advance)."""
    return DIRECTIONS[secrets.randbelow(2)]


@dataclass(frozen=True)
class ChallengeParams:
    timeout_seconds: float = 1.5  # frame time from the prompt to the turn
    min_turn: float = 0.15  # half face widths the nose must move across the outline, in the asked direction
    # The turned face may match the face before the prompt warped by one homography at most this well (ECC
    # correlation at VIEW_SIZE): nuaa_dev turns 0.45-0.94, planar warps of the same frames 0.991 or more.
    max_planar_correlation: float = 0.965


class ChallengeEvent(NamedTuple):
    direction: str
    outcome: str  # asked | passed | wrong_direction | flat | no_turn
    ts: float  # frame time of the prompt (asked) or of the frame that settled it
    seconds: float  # frame time since the prompt
    turn: float  # largest turn seen in the asked direction (half face widths; 0 when asked)


class HeadTurnChallenge:
    """One challenge for one face: started with the last meshes before the prompt, fed the meshes after it."""

    def __init__(self, params: ChallengeParams, direction: str, start_ts: float,
                 baseline: list[FaceView]) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"challenge direction must be one of {DIRECTIONS}, not {direction!r}")
        self.params = params
        self.direction = direction
        self.start_ts = start_ts
        self.baseline = baseline[-3:]
        self.reference = float(np.median([turn_ratio(v.points) for v in self.baseline])) if self.baseline else None
        self.best_turn = 0.0
        self.flat_turn = False
        self.outcome: str | None = None
        self.settled_ts = start_ts

    @property
    def sign(self) -> float:
        return 1.0 if self.direction == LEFT else -1.0

    def add(self, ts: float, view: FaceView | None) -> None:
        if self.outcome is not None or ts <= self.start_ts:
            return
        if view is not None:
            if self.reference is None:  # no face before the prompt: the first one after it is the reference
                self.baseline, self.reference = [view], turn_ratio(view.points)
                return
            turn = self.sign * (turn_ratio(view.points) - self.reference)
            self.best_turn = max(self.best_turn, turn)
            if turn <= -self.params.min_turn:
                self._settle(WRONG_DIRECTION, ts)
                return
            if turn >= self.params.min_turn:
                # Against the last face before the prompt (one alignment per candidate frame: they cost ms).
                planar = planar_correlation(self.baseline[-1], view)
                if planar <= self.params.max_planar_correlation:
                    self._settle(PASSED, ts)
                    return
                self.flat_turn = True
        if ts - self.start_ts > self.params.timeout_seconds:
            self._settle(FLAT if self.flat_turn else NO_TURN, ts)

    def expire(self, ts: float) -> None:
        """Settle as failed when the time limit has passed by ``ts`` (called without a new mesh)."""
        if self.outcome is None and ts - self.start_ts > self.params.timeout_seconds:
            self._settle(FLAT if self.flat_turn else NO_TURN, ts)

    def _settle(self, outcome: str, ts: float) -> None:
        self.outcome, self.settled_ts = outcome, ts

    def asked_event(self) -> ChallengeEvent:
        return ChallengeEvent(self.direction, ASKED, self.start_ts, 0.0, 0.0)

    def event(self) -> ChallengeEvent:
        outcome = self.outcome or ASKED
        ts = self.settled_ts if self.outcome else self.start_ts
        return ChallengeEvent(self.direction, outcome, ts, round(ts - self.start_ts, 3), round(self.best_turn, 3))


ChallengeListener = Callable[[ChallengeEvent], None]
