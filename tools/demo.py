#!/usr/bin/env python3
"""A self-contained demo on images the project may ship (scikit-image's astronaut photo and non-face pictures).

Enrols the astronaut from two augmented photos, then identifies a handful of other augmented frames and some
pictures with no face or a stranger-like crop, printing one JSON line per frame.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "device"))

from facegate.gallery.store import Gallery, NewTemplate  # noqa: E402
from facegate.thresholds import DEFAULT_FAR, ThresholdTable  # noqa: E402
from facegate.vision.pipeline import FacePipeline  # noqa: E402


def augment(image: np.ndarray, angle: float, gain: float, flip: bool, scale: float = 1.0) -> np.ndarray:
    """Rotation, exposure, mirror and zoom: what the same person looks like on another day at the door."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 3), angle, scale)
    out = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    out = np.clip(out.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out[:, ::-1]) if flip else out


def demo_frames() -> tuple[list[np.ndarray], list[tuple[str, np.ndarray]]]:
    from skimage import data

    astronaut = data.astronaut()
    enrol = [augment(astronaut, 0, 1.0, False), augment(astronaut, 4, 0.9, True)]
    frames = [(f"astronaut_{i}", augment(astronaut, a, g, f, s))
              for i, (a, g, f, s) in enumerate([(7, 0.75, False, 1.0), (-6, 1.2, True, 0.8), (2, 0.6, False, 1.2)])]
    frames += [("coffee", data.coffee()), ("cat", data.chelsea()), ("rocket", data.rocket())]
    return enrol, frames


def main() -> int:
    pipeline = FacePipeline.from_models_dir()
    table = ThresholdTable.load(pipeline.manifest.directory / "thresholds.json")
    threshold = table.for_far(DEFAULT_FAR)
    enrol, frames = demo_frames()
    out = ROOT / "build" / "demo"
    out.mkdir(parents=True, exist_ok=True)
    db = out / "gallery.db"
    db.unlink(missing_ok=True)
    with Gallery(db) as gallery:
        templates = []
        for image in enrol:
            best = pipeline.process(image, largest_only=True)[0]
            assert best.embedding is not None
            templates.append(NewTemplate(best.embedding, best.quality.as_dict(), "astronaut"))
        gallery.enroll("astronaut", templates, pipeline.embedder_sha256, name="Eileen Collins")
        index = gallery.build_index()
    print(f"enrolled 'astronaut' ({len(templates)} templates); threshold {threshold:.3f} "
          f"(FAR {DEFAULT_FAR:g})", file=sys.stderr)
    for name, frame in frames:
        cv2.imwrite(str(out / f"{name}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        faces = []
        for r in pipeline.process(frame):
            assert r.embedding is not None
            best = index.search(r.embedding, k=1)[0]
            faces.append({"box": r.detection.box_int(), "similarity": round(best.similarity, 3),
                          "person_id": best.person_id if best.similarity >= threshold else None})
        print(json.dumps({"frame": name, "faces": faces}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
