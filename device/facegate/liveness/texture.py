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


# ---------------------------------------------------------------- person-independent cues of re-capture
#
# The LBP histograms above describe a face's texture and so partly *who* it is: with 8 training subjects they can
# learn those people's skin and those people's prints. The cues below measure the medium instead, each as a ratio
# within the frame (face against its own mid band, face against the scene around it) so that a person's skin,
# make-up or the room's light cancel out. A model lists the groups it was fitted with ("cues" in its JSON), and
# only those are computed at the door.

CUE_CROP = 128  # the cues look at finer detail than the 64-pixel texture crop (a moiré needs the pixels)
CONTEXT_SCALE = 2.2  # the scene crop: the face box and about as much again around it

_N = CUE_CROP
_yy, _xx = np.mgrid[:_N, :_N]
_RADIUS = np.hypot(_yy - _N / 2, _xx - _N / 2) / (_N / 2)  # spatial frequency, 1 = Nyquist along an axis
_ANGLE = np.arctan2(_yy - _N / 2, _xx - _N / 2)
_HANN = np.outer(np.hanning(_N), np.hanning(_N)).astype(np.float32)
_LOW = (_RADIUS >= 0.04) & (_RADIUS < 0.15)
_MID = (_RADIUS >= 0.15) & (_RADIUS < 0.35)
_HIGH = (_RADIUS >= 0.35) & (_RADIUS < 0.7)
_TOP = (_RADIUS >= 0.7) & (_RADIUS < 1.0)
_FINE = (_RADIUS >= 0.3) & (_RADIUS < 1.0)
_AXES = (np.abs(np.sin(_ANGLE)) < 0.2) | (np.abs(np.cos(_ANGLE)) < 0.2)
_INNER = (round(_N / 2 - _N / (2 * CONTEXT_SCALE)), round(_N / 2 + _N / (2 * CONTEXT_SCALE)))
_RING = np.ones((_N, _N), bool)  # the context crop without the face box
_RING[_INNER[0] : _INNER[1], _INNER[0] : _INNER[1]] = False


def _power(channel: np.ndarray) -> np.ndarray:
    g = channel.astype(np.float32)
    g = (g - g.mean()) * _HANN
    return np.asarray(np.abs(np.fft.fftshift(np.fft.fft2(g))) ** 2 + 1e-6)


def spectral_cues(face: np.ndarray) -> list[float]:
    """Re-capture in the spectrum of the face (CUE_CROP square, RGB): a print's halftone and a screen's
    sub-pixel grid add fine, peaky, axis-aligned energy (moiré) or remove it (defocus, ink spread), relative to
    the face's own mid frequencies, so skin tone and lighting cancel.

    High/mid, top/mid and mid/low band energies (log), the fine band's peak and 99th percentile over its median
    (grid peaks), energy near the axes over the diagonals (stripes, rows, refresh bands), and the chroma's fine
    energy relative to its mid band and to the luminance's (sub-pixel colour fringes)."""
    p = _power(cv2.cvtColor(face, cv2.COLOR_RGB2GRAY))
    low, mid, high, top = (float(p[m].sum()) for m in (_LOW, _MID, _HIGH, _TOP))
    fine = p[_FINE]
    ycc = cv2.cvtColor(face, cv2.COLOR_RGB2YCrCb)
    chroma = _power(ycc[..., 1]) + _power(ycc[..., 2])
    coarse_fine = _RADIUS >= 0.35
    return [
        math.log(high / mid), math.log(top / mid), math.log(mid / low),
        math.log(float(fine.max()) / float(np.median(fine))),
        math.log(float(np.percentile(fine, 99)) / float(np.median(fine))),
        math.log(float(p[_AXES & (_RADIUS >= 0.3)].mean()) / float(p[~_AXES & (_RADIUS >= 0.3)].mean())),
        math.log(float(chroma[coarse_fine].sum()) / float(chroma[_MID].sum())),
        math.log(float(chroma[coarse_fine].sum()) / float(p[coarse_fine].sum())),
    ]  # fmt: skip


def context_cues(face: np.ndarray, scene: np.ndarray) -> list[float]:
    """The face against the scene around it (CONTEXT_SCALE crop): a print or a phone re-images the face with
    its own sharpness, noise and colour, unlike the room the camera sees directly around it.

    Log ratios of the median absolute Laplacian (noise and fine detail, robust to edges) of the face region and
    of the whole face crop to the ring around the face; saturation and brightness differences face - ring; the
    ring's contrast relative to the face's."""
    grey_face = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grey_scene = cv2.cvtColor(scene, cv2.COLOR_RGB2GRAY).astype(np.float32)
    lap_face = np.abs(cv2.Laplacian(grey_face, cv2.CV_32F))
    lap_scene = np.abs(cv2.Laplacian(grey_scene, cv2.CV_32F))
    ring = float(np.median(lap_scene[_RING])) + 0.1
    inner = float(np.median(lap_scene[~_RING])) + 0.1
    whole = float(np.median(lap_face)) + 0.1
    hsv_face = cv2.cvtColor(face, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv_scene = cv2.cvtColor(scene, cv2.COLOR_RGB2HSV).astype(np.float32)
    return [
        math.log(inner / ring), math.log(whole / ring),
        float(hsv_face[..., 1].mean() - hsv_scene[..., 1][_RING].mean()) / 255.0,
        float(hsv_face[..., 2].mean() - hsv_scene[..., 2][_RING].mean()) / 255.0,
        math.log((float(grey_scene[_RING].std()) + 1.0) / (float(grey_face.std()) + 1.0)),
    ]  # fmt: skip


def colour_cues(face: np.ndarray, scene: np.ndarray) -> list[float]:
    """Tone and gamut of a re-captured image: prints compress the tone range and lift the blacks, screens add
    their own gamma and over-saturate; clipping at either end, chroma correlation and hue spread of the skin.

    Luminance range (2nd-98th percentile), where the median sits in it, skewness; Cr-Cb correlation; share of
    pixels clipped bright or dark; the scene's black level and range; hue spread of the saturated pixels and the
    median saturation."""
    f = face.astype(np.float32) / 255.0
    y = f @ np.array([0.299, 0.587, 0.114], np.float32)
    p2, p50, p98 = (float(v) for v in np.percentile(y, [2, 50, 98]))
    ycc = cv2.cvtColor(face, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    cr, cb = ycc[..., 1].ravel(), ycc[..., 2].ravel()
    hsv = cv2.cvtColor(face, cv2.COLOR_RGB2HSV).astype(np.float32)
    grey_scene = cv2.cvtColor(scene, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    s1, s99 = (float(v) for v in np.percentile(grey_scene, [1, 99]))
    centred = y - y.mean()
    coloured = hsv[..., 1] > 40
    return [
        p98 - p2, (p50 - p2) / max(p98 - p2, 1e-3),
        float((centred**3).mean()) / max(float(centred.std()) ** 3, 1e-6),
        float(np.corrcoef(cr, cb)[0, 1]) if cr.std() > 0 and cb.std() > 0 else 0.0,
        float(np.mean(f.max(axis=2) > 0.97)), float(np.mean(f.min(axis=2) < 0.03)),
        s1, s99 - s1,
        float(np.std(hsv[..., 0][coloured])) / 180.0 if coloured.any() else 0.0,
        float(np.percentile(hsv[..., 1], 50)) / 255.0,
    ]  # fmt: skip


def edge_cues(scene: np.ndarray) -> list[float]:
    """Straight edges around the face (a held photo's border, a phone's bezel): total and longest length of the
    straight segments outside the face box, in crop widths, and their count (log)."""
    edges = cv2.Canny(cv2.cvtColor(scene, cv2.COLOR_RGB2GRAY), 50, 150)
    edges[~_RING] = 0
    lines = cv2.HoughLinesP(edges, 1, np.pi / 90, threshold=25, minLineLength=30, maxLineGap=3)
    if lines is None or np.size(lines) == 0:
        return [0.0, 0.0, 0.0]
    seg = np.asarray(lines, dtype=np.float32).reshape(-1, 4)
    length = np.hypot(seg[:, 2] - seg[:, 0], seg[:, 3] - seg[:, 1])
    return [math.log1p(float(length.sum()) / _N), float(length.max()) / _N, math.log1p(len(length))]


def specular_cues(face: np.ndarray) -> list[float]:
    """Highlights: skin has small, soft specular spots; glossy paper and screen glass give large or flat ones.
    Largest bright low-saturation blob (log pixels), blob count (log), and the brightest 0.5% above the 90th
    percentile of the smoothed brightness."""
    hsv = cv2.cvtColor(face, cv2.COLOR_RGB2HSV)
    v, s = hsv[..., 2].astype(np.float32), hsv[..., 1].astype(np.float32)
    mask = ((v > 230) & (s < 60)).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    largest = float(stats[1:, cv2.CC_STAT_AREA].max()) if count > 1 else 0.0
    smooth = cv2.GaussianBlur(v, (0, 0), 2)
    return [math.log1p(largest), math.log1p(count - 1),
            float(np.percentile(smooth, 99.5) - np.percentile(smooth, 90)) / 255.0]


CUE_DIMS = {"spectral": 8, "context": 5, "colour": 10, "edges": 3, "specular": 3}


def cue_features(image: np.ndarray, box: tuple[float, float, float, float], cues: tuple[str, ...]) -> np.ndarray:
    """The listed cue groups (CUE_DIMS order as listed) of the face at ``box``; non-finite values become 0."""
    if not cues:
        return np.zeros(0)
    face = face_crop(image, box, CUE_CROP, 1.0)
    scene = face_crop(image, box, CUE_CROP, CONTEXT_SCALE) if {"context", "colour", "edges"} & set(cues) else face
    compute = {
        "spectral": lambda: spectral_cues(face), "context": lambda: context_cues(face, scene),
        "colour": lambda: colour_cues(face, scene), "edges": lambda: edge_cues(scene),
        "specular": lambda: specular_cues(face),
    }  # fmt: skip
    values = np.concatenate([np.asarray(compute[name](), dtype=np.float64) for name in cues])
    return np.asarray(np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0))


def frame_features(image: np.ndarray, box: tuple[float, float, float, float], crop_size: int = CROP_SIZE,
                   crop_scale: float = CROP_SCALE, cues: tuple[str, ...] = ()) -> np.ndarray:
    """What a model with these cue groups scores: ``texture_features`` of the crop, then the cues."""
    base = texture_features(face_crop(image, box, crop_size, crop_scale))
    return np.asarray(np.concatenate([base, cue_features(image, box, cues)]))
