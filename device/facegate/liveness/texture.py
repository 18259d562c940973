"""Colour-texture features of a face crop: the passive cue that tells a printed photo from skin.

A print (and a screen) re-images the face through ink or pixels: the recapture changes the fine texture and,
above all, the *colour* texture — chroma micro-patterns that a camera sees on skin are flattened or replaced by
the halftone/sub-pixel structure of the medium (Boulkenafet, Komulainen, Hadid, "Face anti-spoofing based on
color texture analysis", ICIP 2015). Local binary pattern histograms in YCrCb and HSV capture exactly that,
cost ~1 ms on a 64x64 crop, and generalised across subjects in cross-validation where a pretrained deep model
did not (see models/README.md and tools/eval/evaluate_pad.py).

Everything here is numpy + OpenCV so the door needs no extra dependency; the training tool uses the same code,
so features at training and at the door are the same by construction.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

CROP_SIZE = 64  # texture is measured at a fixed scale so near and far faces are comparable
CROP_SCALE = 1.0  # square side = the detector box's longer side: skin only, little background

# 8 neighbours at radius 1, clockwise from the right (offsets into a 1-pixel padded image).
_NEIGHBOURS = ((0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1))


def _uniform_table() -> np.ndarray:
    """256 LBP codes → 59 bins: one per 'uniform' pattern (≤ 2 circular 0/1 transitions), one for all the rest.

    Uniform patterns (edges, corners, spots, flat areas) carry ~90% of the codes of natural images; pooling the
    rest keeps the histogram short and stable.
    """
    table = np.full(256, 58, dtype=np.int64)
    next_bin = 0
    for code in range(256):
        bits = [(code >> i) & 1 for i in range(8)]
        transitions = sum(bits[i] != bits[(i + 1) % 8] for i in range(8))
        if transitions <= 2:
            table[code] = next_bin
            next_bin += 1
    assert next_bin == 58
    return table


_UNIFORM = _uniform_table()
LBP_BINS = 59
CHANNELS = ("Y", "Cr", "Cb", "H", "S", "V")
STAT_NAMES = (
    "sat_mean", "sat_std", "sat_p95", "specular_frac", "laplacian_var", "hf_ratio",
    "cr_mean", "cr_std", "cb_mean", "cb_std", "grey_mean", "grey_std",
)  # fmt: skip
FEATURE_DIM = LBP_BINS * len(CHANNELS) + len(STAT_NAMES)


def lbp_histogram(channel: np.ndarray) -> np.ndarray:
    """Normalised 59-bin uniform LBP(8,1) histogram of one 2-D uint8 channel (border pixels excluded)."""
    c = channel.astype(np.int16)
    padded = np.pad(c, 1, mode="edge")
    h, w = c.shape
    code = np.zeros((h, w), dtype=np.int64)
    for bit, (dy, dx) in enumerate(_NEIGHBOURS):
        neighbour = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        code |= (neighbour >= c).astype(np.int64) << bit
    hist = np.bincount(_UNIFORM[code[1:-1, 1:-1]].ravel(), minlength=LBP_BINS).astype(np.float64)
    return np.asarray(hist / max(float(hist.sum()), 1.0))


def face_crop(image: np.ndarray, box: tuple[float, float, float, float], size: int = CROP_SIZE,
              scale: float = CROP_SCALE) -> np.ndarray:
    """Square crop around the detector box, area-resampled to size x size (replicated border off-frame).

    Area resampling (not bilinear) so the crop's texture is an average over the source pixels whatever the
    face's distance, instead of aliased samples of it.
    """
    x, y, w, h = box
    side = max(w, h) * scale
    x0, y0 = math.floor(x + w / 2 - side / 2 + 0.5), math.floor(y + h / 2 - side / 2 + 0.5)
    s = max(math.floor(side + 0.5), 1)
    ih, iw = image.shape[:2]
    pad = max(0, -x0, -y0, x0 + s - iw, y0 + s - ih)
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0 = x0 + pad, y0 + pad
    patch = image[y0 : y0 + s, x0 : x0 + s]
    interp = cv2.INTER_AREA if s > size else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(patch, (size, size), interpolation=interp))


def texture_features(crop: np.ndarray) -> np.ndarray:
    """FEATURE_DIM vector: LBP histograms of Y, Cr, Cb, H, S, V and a dozen colour/sharpness statistics."""
    ycc = cv2.cvtColor(crop, cv2.COLOR_RGB2YCrCb)
    hsv = cv2.cvtColor(crop, cv2.COLOR_RGB2HSV)
    hists = [lbp_histogram(ycc[..., i]) for i in range(3)] + [lbp_histogram(hsv[..., i]) for i in range(3)]
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32)
    size = grey.shape[0]
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(grey - grey.mean())))
    yy, xx = np.mgrid[: grey.shape[0], : grey.shape[1]]
    radius = np.hypot(yy - grey.shape[0] / 2, xx - grey.shape[1] / 2)
    high = float(spectrum[radius > size / 4].sum()) / max(float(spectrum[radius <= size / 4].sum()), 1e-6)
    sat = hsv[..., 1] / 255.0
    val = hsv[..., 2] / 255.0
    stats = np.array(
        [
            sat.mean(), sat.std(), np.percentile(sat, 95), np.mean((val > 0.94) & (sat < 0.15)),
            float(cv2.Laplacian(grey, cv2.CV_32F).var()), high,
            ycc[..., 1].mean(), ycc[..., 1].std(), ycc[..., 2].mean(), ycc[..., 2].std(), grey.mean(), grey.std(),
        ],
        dtype=np.float64,
    )  # fmt: skip
    return np.asarray(np.concatenate([*hists, stats]))
