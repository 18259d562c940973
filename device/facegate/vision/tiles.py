"""Faces at an IP camera's resolution: the detector run over overlapping tiles of a large view, merged.

BlazeFace sees its input letterboxed into 128x128 (short range): a 1280x720 view shrinks 10 times, so a face
120 px wide becomes 12 input pixels, below what the model finds. Tiles of ``tile_px`` (default 4x the input, 512
px) keep a face of 60 px at 15 input pixels; the whole view is searched too, for faces larger than a tile.
Neighbouring tiles overlap by a third of a tile, so a face up to that size lies whole inside at least one tile;
a face cut by a tile's inner edge is dropped there (it is found whole in the neighbour or in the whole view).
The same face found twice is merged by IoU, keeping the higher score.

Chosen automatically (``plan_tiles``): a view whose long side is at most ``tile_px`` x 1.25 is run whole, as
before; larger views (a 1080p frame, or a large door zone of one) are tiled. Cost: one detector run per tile plus
one for the whole view (docs/cameras.md has the figures).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from facegate.vision.types import Detection

MERGE_IOU = 0.3
EDGE_MARGIN = 2.0  # px: a box this close to a tile's inner edge is cut by it


class Detector(Protocol):
    def detect(self, image: np.ndarray) -> list[Detection]: ...


def plan_tiles(width: int, height: int, tile_px: int) -> list[tuple[int, int, int, int]]:
    """Tile rectangles (x0, y0, x1, y1) covering a view, or [] when the view is small enough to run whole."""
    if max(width, height) <= tile_px * 1.25:
        return []
    step = max(1, round(tile_px * 2 / 3))

    def starts(length: int) -> list[int]:
        if length <= tile_px:
            return [0]
        count = -(-(length - tile_px) // step) + 1
        return [round(i * (length - tile_px) / (count - 1)) for i in range(count)]

    return [(x, y, min(x + tile_px, width), min(y + tile_px, height))
            for y in starts(height) for x in starts(width)]


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw, ih = max(0.0, min(ax1, bx1) - max(a[0], b[0])), max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


class TiledDetector:
    """Wraps a detector: the whole view, plus tiles when the view is large (see the module doc)."""

    def __init__(self, base: Detector, tile_px: int = 512) -> None:
        self.base = base
        self.tile_px = tile_px

    def detect(self, image: np.ndarray) -> list[Detection]:
        height, width = image.shape[:2]
        found = list(self.base.detect(image))
        for x0, y0, x1, y1 in plan_tiles(width, height, self.tile_px):
            for face in self.base.detect(np.ascontiguousarray(image[y0:y1, x0:x1])):
                bx, by, bw, bh = face.box
                cut = ((x0 > 0 and bx < EDGE_MARGIN) or (y0 > 0 and by < EDGE_MARGIN)
                       or (x1 < width and bx + bw > x1 - x0 - EDGE_MARGIN)
                       or (y1 < height and by + bh > y1 - y0 - EDGE_MARGIN))
                if cut:
                    continue
                shift = np.array([x0, y0], dtype=np.float32)
                found.append(Detection(box=(bx + x0, by + y0, bw, bh), score=face.score,
                                       keypoints=face.keypoints + shift,
                                       landmarks5=None if face.landmarks5 is None else face.landmarks5 + shift))
        merged: list[Detection] = []
        for face in sorted(found, key=lambda f: f.score, reverse=True):
            if all(_iou(face.box, kept.box) <= MERGE_IOU for kept in merged):
                merged.append(face)
        merged.sort(key=lambda f: f.area, reverse=True)
        return merged
