"""tools/eval/screen_replay.py: the simulated phone re-capture is repeatable, keeps a detectable face, and shows the
physical traces it documents (the bezel, the display grid's energy, the display's tone)."""

from __future__ import annotations

import numpy as np
import pytest

from tools.eval import screen_replay
from tools.eval.screen_replay import ScreenParams, recapture, sample_params


def test_same_seed_same_recapture(astronaut: np.ndarray) -> None:
    frame = np.ascontiguousarray(astronaut[:480, :512])
    a = recapture(frame, sample_params(np.random.default_rng(5)), np.random.default_rng(1))
    b = recapture(frame, sample_params(np.random.default_rng(5)), np.random.default_rng(1))
    assert a.shape == frame.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)


def test_the_face_survives_and_the_bezel_frames_it(pipeline, astronaut: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    frame = np.ascontiguousarray(astronaut[:480, :512])
    params = ScreenParams(cover=0.8, angle_deg=0.0, glare=0.0, hand=False, bezel=0.06, banding=0.0)
    shown = recapture(frame, params, np.random.default_rng(0))
    assert pipeline.detect(shown), "the replayed face must still be found (else it measures nothing)"
    h, w = shown.shape[:2]
    # The bezel: a dark band just outside the picture's left edge (cover 0.8 → picture from 10% of the width).
    picture_left = round(w * 0.1)
    bezel = shown[h // 3 : 2 * h // 3, picture_left - 12 : picture_left - 4]
    assert bezel.mean() < 40


def test_a_sharp_screen_adds_grid_energy_that_defocus_removes(astronaut: np.ndarray) -> None:
    """At a pitch of 3 camera pixels per display pixel the stripes are resolved: high-frequency energy that the
    live frame does not have; a defocused camera blurs it away."""
    frame = np.ascontiguousarray(astronaut[:480, :512])

    def high_freq(img: np.ndarray) -> float:
        grey = img[..., 1].astype(np.float32)[140:340, 160:360]  # one channel: RGB stripes cancel in grey
        spectrum = np.abs(np.fft.fftshift(np.fft.fft2(grey - grey.mean())))
        yy, xx = np.mgrid[:200, :200]
        return float(spectrum[np.hypot(yy - 100, xx - 100) > 50].sum() / spectrum.sum())

    common = {"angle_deg": 0.0, "glare": 0.0, "hand": False, "banding": 0.0, "noise": 0.0, "jpeg_quality": 98,
              "pitch_px": 3.0, "cover": 0.9}
    sharp = recapture(frame, ScreenParams(defocus_px=0.0, **common), np.random.default_rng(0))
    soft = recapture(frame, ScreenParams(defocus_px=2.0, **common), np.random.default_rng(0))
    assert high_freq(sharp) > 1.25 * high_freq(frame)
    assert high_freq(soft) < high_freq(sharp) / 2


def test_unknown_subpixel_layout_is_refused(astronaut: np.ndarray) -> None:
    with pytest.raises(ValueError, match="subpixels"):
        recapture(astronaut[:100, :100], ScreenParams(subpixels="crt"), np.random.default_rng(0))


def test_sampled_parameters_stay_in_their_documented_ranges() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = sample_params(rng)
        assert 1.1 <= p.pitch_px <= 3.0 and 0.65 <= p.cover <= 0.95 and p.subpixels in ("stripe", "pentile")
        assert 70 <= p.jpeg_quality <= 95
    assert screen_replay.SAMPLES >= 3
