"""BlazeFace: letterboxed input, box/keypoint decoding and MediaPipe-style weighted NMS."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facegate.vision.anchors import blazeface_anchors
from facegate.vision.runtime import TFLiteModel
from facegate.vision.types import Detection


@dataclass(frozen=True)
class Letterbox:
    """How a frame was scaled and padded into the square model input; maps model coords back to pixels."""

    scale: float
    pad_x: float
    pad_y: float

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        out = xy.copy()
        out[..., 0] = (xy[..., 0] - self.pad_x) / self.scale
        out[..., 1] = (xy[..., 1] - self.pad_y) / self.scale
        return out


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Fit any aspect ratio into size x size without distortion (BlazeFace was trained on square, unstretched faces)."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    px, py = (size - nw) // 2, (size - nh) // 2
    canvas[py : py + nh, px : px + nw] = resized
    return canvas, Letterbox(scale=scale, pad_x=float(px), pad_y=float(py))


def iou_matrix(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (x1,y1,x2,y2) box against many."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.asarray(inter / np.maximum(area + areas - inter, 1e-9))


def weighted_nms(
    corners: np.ndarray, points: np.ndarray, scores: np.ndarray, iou_threshold: float
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Blend overlapping candidates weighted by score instead of keeping only the top one.

    BlazeFace fires on several neighbouring anchors per face; averaging them (as MediaPipe does) gives steadier
    boxes and keypoints than hard NMS, which matters for alignment.
    """
    order = np.argsort(-scores)
    corners, points, scores = corners[order], points[order], scores[order]
    remaining = np.arange(len(scores))
    results = []
    while remaining.size:
        overlaps = iou_matrix(corners[remaining[0]], corners[remaining])
        group = remaining[overlaps > iou_threshold]
        if group.size == 0:
            group = remaining[:1]
        weights = scores[group][:, None]
        total = float(weights.sum())
        box = (corners[group] * weights).sum(axis=0) / total
        pts = (points[group] * weights[:, :, None]).sum(axis=0) / total
        results.append((box, pts, float(scores[group[0]])))
        remaining = remaining[overlaps <= iou_threshold]
    return results


class BlazeFaceDetector:
    """Finds every face in an RGB frame; returns them largest first."""

    def __init__(
        self,
        model: TFLiteModel,
        min_score: float = 0.5,
        iou_threshold: float = 0.3,
        min_face_px: float = 0.0,
    ) -> None:
        self.model = model
        self.size = model.input_shape[1]
        self.anchors = blazeface_anchors(self.size)
        self.min_score = min_score
        self.iou_threshold = iou_threshold
        self.min_face_px = min_face_px

    def detect(self, image: np.ndarray) -> list[Detection]:
        canvas, lb = letterbox(image, self.size)
        tensor = self.model.normalise(canvas)[None]
        outputs = self.model.run(tensor)
        regressors, logits = sorted(outputs, key=lambda o: o.shape[-1], reverse=True)
        return self.decode(regressors[0], logits[0, :, 0], lb)

    def decode(self, raw: np.ndarray, logits: np.ndarray, lb: Letterbox) -> list[Detection]:
        """Raw regressors are offsets in input pixels from each anchor centre (anchor size is fixed to 1)."""
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -80.0, 80.0)))
        keep = scores >= self.min_score
        if not keep.any():
            return []
        raw, scores = raw[keep], scores[keep]
        anchors = self.anchors[keep] * self.size
        cx, cy = raw[:, 0] + anchors[:, 0], raw[:, 1] + anchors[:, 1]
        w, h = raw[:, 2], raw[:, 3]
        corners = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        points = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
        faces = []
        for box, pts, score in weighted_nms(corners, points, scores, self.iou_threshold):
            tl = lb.to_image(box[:2])
            br = lb.to_image(box[2:])
            width, height = float(br[0] - tl[0]), float(br[1] - tl[1])
            if width <= 0 or height <= 0 or max(width, height) < self.min_face_px:
                continue
            faces.append(
                Detection(
                    box=(float(tl[0]), float(tl[1]), width, height),
                    score=score,
                    keypoints=lb.to_image(pts).astype(np.float32),
                )
            )
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces
