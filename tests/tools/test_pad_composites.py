"""tools/eval/pad_composites.py: a stranger's photo held over a real person's face, as the unseen-people attack set.

The composite must be repeatable (seeded), keep a detectable face where the person's was, differ from frame
to frame (identical frames count once at the door) and refuse an unknown medium.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import shared_dir

from tools.eval import pad_composites


def _live_frames(count: int = 3) -> list[np.ndarray]:
    from facegate.base.imageio import read_image

    folder = shared_dir() / "spoof" / "nuaa_dev" / "live" / "0001"
    if not folder.is_dir():
        pytest.skip(f"nuaa_dev not found at {folder} (set FACEGATE_SHARED to the folder holding spoof/nuaa_dev)")
    return [read_image(p) for p in sorted(folder.glob("*.jpg"))[:count]]


@pytest.mark.parametrize("kind", pad_composites.KINDS)
def test_the_held_photo_replaces_the_face_repeatably(pipeline, lfw_dir, kind: str) -> None:  # type: ignore[no-untyped-def]
    """An LFW photo (the tool's input: a centred face 0.45 of the photo wide) held over nuaa_dev live frames."""
    from facegate.base.imageio import read_image

    photo = read_image(sorted(lfw_dir.glob("*/*.jpg"))[0])
    frames = _live_frames()
    boxes = [tuple(float(v) for v in pipeline.detect(f)[0].box) for f in frames]
    shown = pad_composites.presentation(frames, boxes, photo, kind, np.random.default_rng(3))
    again = pad_composites.presentation(frames, boxes, photo, kind, np.random.default_rng(3))
    assert all(np.array_equal(a, b) for a, b in zip(shown, again, strict=True))
    assert all(s.shape == f.shape and s.dtype == np.uint8 for s, f in zip(shown, frames, strict=True))
    assert not np.array_equal(shown[0], shown[1])
    for image, box in zip(shown, boxes, strict=True):
        found = pipeline.detect(image)
        assert found, "the held photo's face is not detected"
        x, _, w, _ = found[0].box
        if kind == "held_print":  # on paper it stays where the person's face was (a phone re-frames the scene)
            assert abs((x + w / 2) - (box[0] + box[2] / 2)) < 0.5 * box[2]


def test_an_unknown_medium_is_refused(astronaut: np.ndarray) -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        pad_composites.presentation([astronaut], [(10.0, 10.0, 50.0, 50.0)], astronaut, "held_mask",
                                    np.random.default_rng(0))
