#!/usr/bin/env python3
"""Attacks with people the liveness model never saw: a face photo held up over a real person, on paper or a phone.

The antispoof model is fitted on NUAA's 8 subjects; a model that learned *those people* (their skin, their
prints) rather than the medium would stop their attacks and let a stranger's photo in. These composites put an
LFW photo (other people, other cameras) into live NUAA frames where the person's face is, as an attacker would
hold it, so the face crop the door scores is the stranger's photo and the scene around it is a real camera's:

- ``held_print``: the photo printed (paper white border, the ink's compressed tone range and duller colour, a
  little blur from the print's resolution), held at the face's place, sized to it, swaying a few degrees and
  pixels from frame to frame like a hand (each frame is different: identical frames count once at the door);
- ``held_screen``: the same held photo, then the whole frame seen through ``screen_replay.recapture`` (the
  phone's sub-pixel grid, gamma, glare, bezel and thumb, defocus, camera noise), one phone per presentation.

A plausible medium for measurement, like screen_replay: it says whether the gate generalises to unseen faces and
photos, not what real prints and phones of them do.

    python tools/eval/pad_composites.py PHOTO NUAA_LIVE_FRAME OUT.jpg [--kind held_print|held_screen] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]

from facegate.base.imageio import read_image

from tools.eval import screen_replay

KINDS = ("held_print", "held_screen")
# In LFW's deep-funneled 250x250 images the face is centred and about 0.45 of the image wide.
LFW_FACE_SHARE = 0.45


def printed(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The photo as a print: compressed tone range, duller colour, a slight blur, and a white paper border."""
    x = photo.astype(np.float32) / 255.0
    grey = x.mean(axis=2, keepdims=True)
    x = grey + float(rng.uniform(0.7, 0.9)) * (x - grey)  # inks cover a smaller gamut than the screen it came from
    x = float(rng.uniform(0.06, 0.12)) + float(rng.uniform(0.75, 0.88)) * x  # paper white and ink black
    x = cv2.GaussianBlur(x, (0, 0), float(rng.uniform(0.3, 0.9)))
    border = max(2, round(0.04 * photo.shape[1]))
    out = cv2.copyMakeBorder(np.clip(x * 255.0, 0, 255).astype(np.uint8), border, border, border, border,
                             cv2.BORDER_CONSTANT, value=(236, 236, 232))
    return np.asarray(out)


def held(frame: np.ndarray, face_box: tuple[float, float, float, float], photo: np.ndarray, angle_deg: float,
         shift: tuple[float, float], scale: float = 1.0) -> np.ndarray:
    """``photo`` (its face LFW_FACE_SHARE of its width) pasted over ``face_box`` of ``frame``, rotated by
    ``angle_deg`` and shifted by ``shift`` pixels; returns a new frame."""
    x, y, w, h = face_box
    size = scale * max(w, h) / LFW_FACE_SHARE
    k = size / photo.shape[1]
    cx, cy = x + w / 2 + shift[0], y + h / 2 + shift[1]
    m = cv2.getRotationMatrix2D((photo.shape[1] / 2, photo.shape[0] / 2), angle_deg, k)
    m[:, 2] += np.array([cx, cy]) - np.array([photo.shape[1] / 2, photo.shape[0] / 2])
    fh, fw = frame.shape[:2]
    pasted = cv2.warpAffine(photo, m, (fw, fh), flags=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
    inside = cv2.warpAffine(np.ones(photo.shape[:2], np.float32), m, (fw, fh), flags=cv2.INTER_LINEAR)[..., None]
    out = pasted.astype(np.float32) * inside + frame.astype(np.float32) * (1 - inside)
    return np.asarray(np.clip(out, 0, 255).astype(np.uint8))


def presentation(frames: list[np.ndarray], boxes: list[tuple[float, float, float, float]], photo: np.ndarray,
                 kind: str, rng: np.random.Generator) -> list[np.ndarray]:
    """One attack presentation: ``photo`` held over the face of each live frame (boxes: the live face's box)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    shown = printed(photo, rng) if kind == "held_print" else photo
    params = screen_replay.sample_params(rng) if kind == "held_screen" else None
    scale = float(rng.uniform(0.95, 1.15))
    out = []
    for frame, box in zip(frames, boxes, strict=True):
        angle = float(rng.uniform(-5, 5))
        shift = (float(rng.uniform(-0.05, 0.05) * box[2]), float(rng.uniform(-0.05, 0.05) * box[3]))
        composite = held(frame, box, shown, angle, shift, scale)
        out.append(composite if params is None else screen_replay.recapture(composite, params, rng))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photo", type=Path)
    parser.add_argument("frame", type=Path, help="a live frame; the photo is held over its largest face")
    parser.add_argument("out", type=Path)
    parser.add_argument("--kind", choices=KINDS, default="held_print")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from facegate.vision.pipeline import FacePipeline

    frame = read_image(args.frame)
    faces = FacePipeline.from_models_dir().detect(frame)
    if not faces:
        print(f"no face in {args.frame}", file=sys.stderr)
        return 1
    [shown] = presentation([frame], [faces[0].box], read_image(args.photo), args.kind, np.random.default_rng(args.seed))
    cv2.imwrite(str(args.out), cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
    return 0


if __name__ == "__main__":
    sys.exit(main())
