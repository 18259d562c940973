"""The person-independent re-capture cues (liveness/texture.py) and the model format that carries them.

The cues must measure the medium, not the person: computed on real nuaa_dev frames (skipped without the data)
and on the registry's astronaut photo, they must be finite, the same for the same pixels, and move the way the
physics says when the same face is re-imaged: a phone's sub-pixel grid adds peaky fine energy, a print's border
or a phone's bezel around the face adds straight edges. The model loader must refuse a file whose cues do not
match this code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from facegate.errors import ModelError
from facegate.liveness import TextureClassifier
from facegate.liveness.texture import (
    CUE_DIMS,
    FEATURE_DIM,
    cue_features,
    edge_cues,
    face_crop,
    frame_features,
    spectral_cues,
)
from facegate.vision.models import Manifest
from support import shared_dir

from tools.eval import screen_replay


def _nuaa_frames(kind: str, count: int = 3) -> list[Path]:
    folder = shared_dir() / "spoof" / "nuaa_dev" / kind / "0003"
    if not folder.is_dir():
        pytest.skip(f"nuaa_dev not found at {folder} (set FACEGATE_SHARED to the folder holding spoof/nuaa_dev)")
    return sorted(folder.glob("*.jpg"))[:count]


def _box(pipeline: Any, image: np.ndarray) -> tuple[float, float, float, float]:
    faces = pipeline.detect(image)
    assert faces, "no face found"
    x, y, w, h = faces[0].box
    return (float(x), float(y), float(w), float(h))


def test_every_cue_group_is_finite_and_sized_on_a_registry_photo(astronaut: np.ndarray, pipeline) -> None:  # type: ignore[no-untyped-def]
    box = _box(pipeline, astronaut)
    every = tuple(CUE_DIMS)
    values = cue_features(astronaut, box, every)
    assert values.shape == (sum(CUE_DIMS.values()),)
    assert np.isfinite(values).all()
    assert np.array_equal(values, cue_features(astronaut.copy(), box, every))  # pixels in, same numbers out
    full = frame_features(astronaut, box, cues=("spectral",))
    assert full.shape == (FEATURE_DIM + CUE_DIMS["spectral"],)
    assert frame_features(astronaut, box).shape == (FEATURE_DIM,)  # no cues: the LBP features alone


def test_a_face_off_the_frame_edge_still_gives_finite_cues(astronaut: np.ndarray) -> None:
    values = cue_features(astronaut, (-60.0, -50.0, 140.0, 120.0), tuple(CUE_DIMS))
    assert np.isfinite(values).all()


def test_a_phone_recapture_adds_peaky_fine_energy_on_real_frames(pipeline) -> None:  # type: ignore[no-untyped-def]
    """nuaa_dev live frames against the same frames on a simulated phone with a moiré-prone pitch: the fine band's
    peak over its median (the grid's spectral lines) rises on every frame."""
    from facegate.base.imageio import read_image

    params = screen_replay.ScreenParams(pitch_px=1.4, defocus_px=0.4, glare=0.0, banding=0.0)
    for k, path in enumerate(_nuaa_frames("live")):
        live = read_image(path)
        shown = screen_replay.recapture(live, params, np.random.default_rng(k))
        live_peak = spectral_cues(face_crop(live, _box(pipeline, live), 128, 1.0))[3]
        shown_peak = spectral_cues(face_crop(shown, _box(pipeline, shown), 128, 1.0))[3]
        assert shown_peak > live_peak, (path.name, live_peak, shown_peak)


def test_a_border_around_the_face_adds_straight_edges_on_real_frames(pipeline) -> None:  # type: ignore[no-untyped-def]
    """A photo's paper border or a phone's bezel just around the face (drawn into real nuaa_dev frames as a
    light rectangle 1.6 face widths wide) lengthens the straight segments the edge cue finds in the scene crop."""
    import cv2
    from facegate.base.imageio import read_image

    for path in _nuaa_frames("live"):
        live = read_image(path)
        x, y, w, h = _box(pipeline, live)
        framed = live.copy()
        cx, cy, half = x + w / 2, y + h / 2, 0.8 * max(w, h)
        cv2.rectangle(framed, (round(cx - half), round(cy - half)), (round(cx + half), round(cy + half)),
                      (235, 235, 230), 3)
        before = edge_cues(face_crop(live, (x, y, w, h), 128, 2.2))
        after = edge_cues(face_crop(framed, (x, y, w, h), 128, 2.2))
        assert after[0] > before[0] and after[1] >= 0.5, (path.name, before, after)


# ---------------------------------------------------------------- the model file


def _shipped() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Manifest.load().get("antispoof").path.read_text())
    return data


def test_the_shipped_model_lists_its_cues_and_sizes_match() -> None:
    data = _shipped()
    model = TextureClassifier.from_json(data)
    assert list(model.cues) == data["cues"]
    assert model.weights.shape == (FEATURE_DIM + sum(CUE_DIMS[c] for c in model.cues),)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(cues=[*d["cues"], "no_such_cue"]), "cues must be distinct names"),
        (lambda d: d.update(cues=["spectral", "spectral"]), "cues must be distinct names"),
        (lambda d: d.update(cues="spectral"), "cues must be distinct names"),
        (lambda d: d.update(cues=d["cues"][:-1]), "feature size"),
        (lambda d: d.update(format=3), "unsupported format"),
        (lambda d: d["weights"].__setitem__(0, float("nan")), "must be finite"),
        (lambda d: d["scale"].__setitem__(1, -1.0), "must be finite"),
        (lambda d: d["operating_points"].__setitem__("balanced", float("inf")), "thresholds must be finite"),
        (lambda d: d["weights"].pop(), "feature size"),
    ],
)
def test_a_malformed_model_is_refused_with_a_clear_error(change: Any, message: str) -> None:
    data = _shipped()
    change(data)
    with pytest.raises(ModelError, match=message):
        TextureClassifier.from_json(data)


def test_a_format_1_model_without_cues_still_loads() -> None:
    data = _shipped()
    dim = FEATURE_DIM
    data.update(format=1, feature_dim=dim, mean=data["mean"][:dim], scale=data["scale"][:dim],
                weights=data["weights"][:dim])
    data.pop("cues", None)
    assert TextureClassifier.from_json(data).cues == ()
