#!/usr/bin/env python3
"""Screen-replay simulator: live frames turned into physically plausible re-captures of a phone screen.

An attacker holds a phone showing a recording of the person in front of the door camera. What the camera then
sees differs from the person in ways this simulator reproduces, each with a parameter (``ScreenParams``; the
ranges ``sample_params`` draws from are the defaults documented there):

- **the display's sub-pixel grid**: the recording is resampled to the phone's resolution and shown as RGB
  stripes or a PenTile RGBG diamond with dark gaps between pixel rows; the camera sees that grid at
  ``pitch_px`` camera pixels per display pixel, and where the pitch is near the camera's own sampling the grid
  aliases into **moiré** (the grid is rendered at 6x6 samples per display pixel and area-averaged onto the
  camera's pixels, so the moiré comes from the geometry, not from a painted pattern);
- **the display's tone and colour**: an OLED/LCD gamma different from the camera's (``gamma``), a wider gamut
  that over-saturates skin (``saturation``), a blue-ish white point (``white_point``), a raised black level
  (``black_level``, the screen's own glow and reflections);
- **glare**: a soft specular reflection of a room light on the glass (``glare``: peak, in linear light);
- **the bezel and the hand**: a dark rounded frame around the screen and a skin-coloured thumb over its lower
  edge, in front of a blurred room (the original frame);
- **defocus**: the camera focused at the door, the phone nearer (``defocus_px``, Gaussian sigma in camera
  pixels) and a slight rotation of the phone (``angle_deg``);
- **refresh banding**: a rolling-shutter beat between the screen's PWM/refresh and the camera's line readout:
  horizontal brightness bands (``banding``: amplitude, ``banding_period_px``);
- **the camera**: sensor noise and JPEG (``noise``, ``jpeg_quality``).

Not simulated: the screen's own viewing-angle colour shift, reflections of the attacker, and video compression
of the recording. It is a plausible attack for measurement, *not* a substitute for real replays.

    python tools/eval/screen_replay.py IN_DIR OUT_DIR [--seed 0]   # one re-capture per image, parameters in JSON
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]

from facegate.base.imageio import read_image

SAMPLES = 6  # rendering samples per display pixel and axis (the grid is drawn, then area-averaged)


@dataclass(frozen=True)
class ScreenParams:
    subpixels: str = "stripe"  # "stripe" (RGB columns, LCD) | "pentile" (RGBG diamond, OLED)
    pitch_px: float = 1.6  # camera pixels per display pixel (1-3: moiré; larger: the grid is resolved)
    cover: float = 0.8  # share of the frame's width the screen's picture covers
    angle_deg: float = 2.0  # the phone's rotation in the camera's image
    gamma: float = 1.25  # display tone curve applied on top of the recording's (1 = same as the camera)
    saturation: float = 1.2  # gamut: chroma scale (> 1 = wide-gamut over-saturation)
    white_point: tuple[float, float, float] = (0.95, 1.0, 1.08)  # R, G, B gains (a cool phone white)
    black_level: float = 0.06  # linear light added everywhere on the screen (glow, reflections)
    brightness: float = 1.0  # screen brightness relative to the scene
    glare: float = 0.35  # peak of the specular reflection (linear light); 0 = none
    glare_at: tuple[float, float] = (0.3, 0.25)  # its centre, as fractions of the screen's width and height
    defocus_px: float = 0.9  # Gaussian sigma in camera pixels
    banding: float = 0.05  # amplitude of the refresh bands (share of brightness)
    banding_period_px: float = 37.0  # their period in camera rows
    bezel: float = 0.05  # bezel width as a share of the screen's width
    hand: bool = True  # a thumb over the lower bezel
    noise: float = 2.0  # sensor noise (8-bit levels, sigma)
    jpeg_quality: int = 88


def sample_params(rng: np.random.Generator) -> ScreenParams:
    """A random phone, pose and room within plausible ranges (uniform unless stated)."""
    return ScreenParams(
        subpixels="pentile" if rng.random() < 0.5 else "stripe",
        pitch_px=float(rng.uniform(1.1, 3.0)),
        cover=float(rng.uniform(0.65, 0.95)),
        angle_deg=float(rng.uniform(-6, 6)),
        gamma=float(rng.uniform(1.0, 1.5)),
        saturation=float(rng.uniform(1.0, 1.4)),
        white_point=(float(rng.uniform(0.88, 1.0)), 1.0, float(rng.uniform(1.0, 1.15))),
        black_level=float(rng.uniform(0.02, 0.12)),
        brightness=float(rng.uniform(0.8, 1.3)),
        glare=float(rng.uniform(0.0, 0.6)),
        glare_at=(float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.1, 0.9))),
        defocus_px=float(rng.uniform(0.4, 1.8)),
        banding=float(rng.uniform(0.0, 0.12)),
        banding_period_px=float(rng.uniform(15, 80)),
        bezel=float(rng.uniform(0.03, 0.08)),
        hand=bool(rng.random() < 0.7),
        noise=float(rng.uniform(1.0, 4.0)),
        jpeg_quality=int(rng.uniform(70, 95)),
    )


def _subpixel_mask(kind: str) -> np.ndarray:
    """SAMPLES x SAMPLES x 3 emission mask of one display pixel, mean 1 per channel where it emits."""
    m = np.zeros((SAMPLES, SAMPLES, 3), np.float32)
    lit = SAMPLES - 1  # the last sample row is the dark gap between pixel rows
    if kind == "pentile":  # RGBG: red and blue on one diagonal, two greens on the other, round emitters
        half = SAMPLES // 2
        m[:half, :half, 0] = 1.0
        m[half:lit, half:, 2] = 1.0
        m[:half, half:, 1] = 1.0
        m[half:lit, :half, 1] = 1.0
    elif kind == "stripe":
        third = SAMPLES // 3
        for c in range(3):
            m[:lit, c * third : (c + 1) * third, c] = 1.0
    else:
        raise ValueError(f"subpixels must be 'stripe' or 'pentile', not {kind!r}")
    return m / m.mean(axis=(0, 1), keepdims=True)


def recapture(image: np.ndarray, p: ScreenParams, rng: np.random.Generator) -> np.ndarray:
    """The RGB uint8 frame ``image`` shown on a phone (``p``) and captured again by a camera of the same size."""
    h, w = image.shape[:2]
    lin = (image.astype(np.float32) / 255.0) ** 2.2  # the recording, to linear light
    # The screen's picture: cover x frame width on the camera, at pitch_px camera pixels per display pixel.
    shown_w = p.cover * w
    dw, dh = max(8, round(shown_w / p.pitch_px)), max(8, round(shown_w * h / w / p.pitch_px))
    display = cv2.resize(lin, (dw, dh), interpolation=cv2.INTER_AREA)
    # Display tone and colour: gamma on top, gamut (chroma around the luminance), white point, black level.
    display = np.clip(display, 0, 1) ** p.gamma
    luma = display @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    display = luma[..., None] + p.saturation * (display - luma[..., None])
    display = np.clip(display * np.array(p.white_point, np.float32) * p.brightness + p.black_level, 0, None)
    # The sub-pixel grid, rendered at SAMPLES per display pixel.
    grid = np.repeat(np.repeat(display, SAMPLES, 0), SAMPLES, 1) * np.tile(_subpixel_mask(p.subpixels), (dh, dw, 1))
    # Glare on the glass (additive, in front of the grid).
    gy, gx = np.mgrid[0:dh * SAMPLES, 0:dw * SAMPLES].astype(np.float32)
    cx, cy = p.glare_at[0] * dw * SAMPLES, p.glare_at[1] * dh * SAMPLES
    radius = 0.25 * dw * SAMPLES
    grid += p.glare * np.exp(-(((gx - cx) / radius) ** 2 + ((gy - cy) / (0.6 * radius)) ** 2))[..., None]
    # The phone with its bezel, in the room (the original frame blurred: the camera focused at the door).
    bezel = round(p.bezel * dw * SAMPLES)
    phone = cv2.copyMakeBorder(grid, bezel, bezel * 2, bezel, bezel, cv2.BORDER_CONSTANT, value=(0.01, 0.01, 0.012))
    if p.hand:  # a thumb over the lower bezel, a little into the picture
        ph, pw = phone.shape[:2]
        skin = np.array([0.55, 0.35, 0.27], np.float32) ** 2.2 * 1.3
        cv2.ellipse(phone, (round(pw * 0.78), ph - 1), (round(pw * 0.09), round(bezel * 2 + ph * 0.06)), -20, 0, 360,
                    skin.tolist(), -1)
    # Onto the camera: scale SAMPLES*pitch → 1 with rotation, centred; area-averaged (moiré from the geometry).
    scale = p.pitch_px / SAMPLES
    angle = np.radians(p.angle_deg)
    m = np.array([[scale * np.cos(angle), -scale * np.sin(angle), 0.0],
                  [scale * np.sin(angle), scale * np.cos(angle), 0.0]])
    centre = np.array([phone.shape[1] / 2, phone.shape[0] / 2])
    m[:, 2] = np.array([w / 2, h / 2]) - m[:, :2] @ centre
    # Pre-filter at the source scale so the warp integrates over the grid's samples like a sensor pixel does.
    phone = cv2.blur(phone, (max(1, round(1 / scale)), max(1, round(1 / scale))))
    inside = cv2.warpAffine(np.ones(phone.shape[:2], np.float32), m, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    captured = cv2.warpAffine(phone, m, (w, h), flags=cv2.INTER_LINEAR)
    room = cv2.GaussianBlur(lin, (0, 0), 6.0) * 0.7
    out = captured * inside + room * (1 - inside)
    if p.defocus_px > 0.05:
        out = cv2.GaussianBlur(out, (0, 0), p.defocus_px)
    rows = np.arange(h, dtype=np.float32)[:, None, None]
    out = out * (1 + p.banding * np.sin(2 * np.pi * rows / p.banding_period_px + rng.uniform(0, 2 * np.pi)))
    out = 255.0 * np.clip(out, 0, 1) ** (1 / 2.2) + rng.normal(0, p.noise, out.shape)
    ok, buf = cv2.imencode(".jpg", np.clip(out, 0, 255).astype(np.uint8)[..., ::-1],
                           [cv2.IMWRITE_JPEG_QUALITY, p.jpeg_quality])
    assert ok
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return np.ascontiguousarray(decoded[..., ::-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", type=Path, help="folder of live frames (jpg/png)")
    parser.add_argument("out", type=Path, help="folder for the re-captures (and params.json)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    used = {}
    for path in sorted(p for p in args.inputs.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        params = sample_params(rng)
        shown = recapture(read_image(path), params, rng)
        cv2.imwrite(str(args.out / f"{path.stem}.jpg"), cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
        used[path.name] = asdict(params)
    (args.out / "params.json").write_text(json.dumps(used, indent=1) + "\n")
    print(f"{len(used)} re-captures in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
