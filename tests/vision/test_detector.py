"""BlazeFace decoding, weighted NMS and letterboxing, on generated frames and generated raw outputs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from facegate.vision.anchors import blazeface_anchors
from facegate.vision.detector import Letterbox, letterbox, weighted_nms


def test_anchor_counts_match_model_outputs() -> None:
    assert blazeface_anchors(128).shape == (896, 2)
    assert blazeface_anchors(192).shape == (2304, 2)
    with pytest.raises(ValueError):
        blazeface_anchors(100)


def test_first_anchors_are_top_left_cell_twice() -> None:
    anchors = blazeface_anchors(128)
    np.testing.assert_allclose(anchors[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(anchors[1], anchors[0])
    np.testing.assert_allclose(anchors[2], [1.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(anchors[512], [0.5 / 8, 0.5 / 8])  # first anchor of the stride-16 grid


def test_letterbox_maps_back_to_image_pixels() -> None:
    frame = np.zeros((480, 640, 3), dtype=np.uint8)
    canvas, lb = letterbox(frame, 128)
    assert canvas.shape == (128, 128, 3)
    assert lb.pad_x == 0 and lb.pad_y == 16
    back = lb.to_image(np.array([[64.0, 64.0], [0.0, 16.0]]))
    np.testing.assert_allclose(back, [[320, 240], [0, 0]], atol=1e-6)


def test_weighted_nms_blends_overlaps_and_keeps_separate_faces() -> None:
    corners = np.array([[10, 10, 50, 50], [12, 12, 52, 52], [100, 100, 140, 140]], dtype=np.float32)
    points = np.zeros((3, 6, 2), dtype=np.float32)
    points[1] += 2
    scores = np.array([0.9, 0.9, 0.8])
    out = weighted_nms(corners, points, scores, 0.3)
    assert len(out) == 2
    box, pts, score = out[0]
    np.testing.assert_allclose(box, [11, 11, 51, 51])  # equal weights: the midpoint
    np.testing.assert_allclose(pts, 1.0)
    assert score == pytest.approx(0.9)
    np.testing.assert_allclose(out[1][0], corners[2])


def test_decode_places_box_at_anchor_offset(pipeline) -> None:  # type: ignore[no-untyped-def]
    det = pipeline.detector
    raw = np.zeros((896, 16), dtype=np.float32)
    logits = np.full(896, -10.0, dtype=np.float32)
    i = 512 + 6 * (3 * 8 + 4)  # stride-16 grid, row 3, column 4: centre (72, 56) in 128-px input
    raw[i, :4] = [2.0, -1.0, 32.0, 32.0]
    raw[i, 4:6] = [-8.0, -6.0]  # right eye, relative to the anchor
    logits[i] = 5.0
    faces = det.decode(raw, logits, Letterbox(scale=0.5, pad_x=0.0, pad_y=0.0))
    assert len(faces) == 1
    x, y, w, h = faces[0].box
    assert (x, y, w, h) == pytest.approx((2 * (74 - 16), 2 * (55 - 16), 64, 64))
    np.testing.assert_allclose(faces[0].keypoints[0], [2 * 64, 2 * 50])


def test_finds_the_face_wherever_it_is_in_a_wide_frame(pipeline, astronaut) -> None:  # type: ignore[no-untyped-def]
    """The same face pasted at two places of a 16:9 frame is found at both, with the same size.

    (The short-range model wants faces of at least ~15% of the frame width: a door camera's distance.)"""
    face = astronaut[0:256, 100:356]
    boxes = []
    for ox in (20, 360):
        frame = np.full((360, 640, 3), 90, dtype=np.uint8)
        frame[50:306, ox : ox + 256] = face
        found = pipeline.detect(frame)
        assert len(found) == 1, f"offset {ox}: {len(found)} faces"
        boxes.append(np.array(found[0].box))
    assert boxes[1][0] - boxes[0][0] == pytest.approx(340, abs=6)
    assert boxes[1][2] == pytest.approx(boxes[0][2], rel=0.05)


def test_several_faces_largest_first(pipeline, astronaut) -> None:  # type: ignore[no-untyped-def]
    face = astronaut[0:256, 100:356]
    frame = np.full((300, 560, 3), 120, dtype=np.uint8)
    frame[20:276, 10:266] = face
    frame[40:240, 350:550] = cv2.resize(face, (200, 200), interpolation=cv2.INTER_AREA)
    found = pipeline.detect(frame)
    assert len(found) == 2
    assert found[0].box[0] < 300 < found[1].box[0]
    assert found[0].area > 1.3 * found[1].area


def test_no_face_in_a_plain_frame(pipeline, no_face_image) -> None:  # type: ignore[no-untyped-def]
    assert pipeline.detect(np.full((480, 640, 3), 128, dtype=np.uint8)) == []
    assert pipeline.detect(no_face_image) == []
