#!/usr/bin/env python3
"""Mixed presentation attacks end to end through the door service: a live face, then a print of someone else.

A track follows a box, not a person. The attack: an unenrolled attacker shows their own live face, then holds up a
printed photo of an enrolled person in the same spot, hoping the door fuses the live face's liveness with the
photo's identity. For every ordered pair (attacker subject a, printed subject p, a != p) of nuaa_dev:

- ``live_then_print``: ``--live-frames`` live frames of a, then ``--print-frames`` print frames of p, each print
  frame shifted so that its face's centre lands on the centre of a's last live face (same spot: one track);
- ``gap``: the same with ``--gap-seconds`` of empty frames (no face) between them;
- ``interleaved``: live and print frames alternating (a's live, p's print, a's live, ...);

each replayed through a fresh, real ``Service`` with p enrolled (from the first ``--enrol-frames`` quality-passing
live frames of p's first session, as tools/eval/evaluate_pad_service.py does) at every liveness operating point. The
frames carry file time at ``--fps`` (``ReplaySource`` stamps frame k with k / fps; no pacing, so the run is fast and
deterministic). Reference rows, same settings: ``attack_prints_alone`` (the print frames of each live_then_print
sequence without the live face before them: what the print achieves on its own), ``prints_alone`` (p's print
presentations, no attacker) and ``live`` (p's own live presentations: BPCER = share not granted).

The antispoof model is the shipped one, which was fitted on these subjects: absolute APCER/BPCER are optimistic
(person-disjoint figures: tools/eval/evaluate_pad_service.py). What this tool measures is whether the *decision logic*
can be made to fuse one face's liveness with another's identity; run it on two versions of the code to compare.
As in evaluate_pad_service.py, ``recognition.track_iou`` is 0.01 (the stored NUAA frames are ~1.5 s apart, a
live face moves further between two of them than a 15 fps camera would ever show) and the cooldown is 0.

    python tools/eval/evaluate_pad_mixed.py [--operating-point secure ...] [--attackers 0003] [--printed 0005]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]

from facegate.base.imageio import read_image
from facegate.camera.replay import ReplaySource
from facegate.config import Config, parse_config
from facegate.liveness.model import OPERATING_POINTS
from facegate.service import Service
from facegate.vision.pipeline import FacePipeline
from facegate.wiring.recognition import build_pipeline
from gpiozero.pins.mock import MockFactory

from tools.eval import evaluate_pad as pad
from tools.eval import evaluate_pad_service as pad_service

VARIANTS = ("live_then_print", "gap", "interleaved")
ATTACK_PRINTS = "attack_prints_alone"  # the print frames of each live_then_print sequence, without the live face
DECISION_EVENTS = ("access_granted", "access_denied", "spoof_detected", "unknown_face", "visit_undecided")


# ---------------------------------------------------------------- frames


def runs(samples: list[pad.Sample], kind: str, subject: str, frames: int, skip: set[int] | None = None
         ) -> list[list[int]]:
    """Runs of ``frames`` consecutive frames of one session (``evaluate_pad.presentations``), fully ``frames`` long."""
    chosen = [i for i, s in enumerate(samples) if s.kind == kind and s.subject == subject and i not in (skip or ())]
    out = [[chosen[j] for j in run] for run in pad.presentations([samples[i] for i in chosen], frames)]
    return [r[:frames] for r in out if len(r) >= frames]


def face_box(pipeline: FacePipeline, image: np.ndarray) -> tuple[float, float, float, float] | None:
    found = pipeline.detect(image)
    return found[0].box if found else None


def shifted(image: np.ndarray, src: tuple[float, float, float, float], dst: tuple[float, float, float, float]
            ) -> np.ndarray:
    """``image`` translated so that the centre of box ``src`` lands on the centre of box ``dst`` (no rescaling:
    the print's texture stays as the camera saw it); the uncovered border is mid-grey."""
    dx = round((dst[0] + dst[2] / 2) - (src[0] + src[2] / 2))  # whole pixels: the print's pixels, moved
    dy = round((dst[1] + dst[3] / 2) - (src[1] + src[3] / 2))
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    h, w = image.shape[:2]
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(128, 128, 128))


def empty_frame(shape: tuple[int, ...]) -> np.ndarray:
    """A frame without a face (a mid-grey wall)."""
    return np.full(shape, 128, dtype=np.uint8)


def mixed_sequence(pipeline: FacePipeline, live: list[Path], prints: list[Path], variant: str,
                   gap_frames: int) -> list[tuple[str, np.ndarray]]:
    """(role, RGB image) of one attack: role L (attacker live), P (print, shifted onto the live face) or E (empty)."""
    live_images = [read_image(p) for p in live]
    anchor = face_box(pipeline, live_images[-1]) or face_box(pipeline, live_images[0])
    if anchor is None:
        raise ValueError(f"no face in the attacker's live frames {live[0].name}..")
    print_images = []
    for path in prints:
        image = read_image(path)
        box = face_box(pipeline, image)
        print_images.append(shifted(image, box, anchor) if box is not None else image)
    if variant == "interleaved":
        seq: list[tuple[str, np.ndarray]] = []
        for a, b in zip(live_images, print_images, strict=False):
            seq += [("L", a), ("P", b)]
        return seq
    gap = [("E", empty_frame(live_images[0].shape))] * (gap_frames if variant == "gap" else 0)
    return [("L", im) for im in live_images] + gap + [("P", im) for im in print_images]


def write_frames(folder: Path, frames: list[tuple[str, np.ndarray]], tail: int = 0) -> None:
    """Lossless PNGs named ``<k>_<role>.png``: the replay delivers them in this order, the role tells who decided.

    ``tail`` empty frames follow, so that the visit ends within the replay."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    frames = frames + [("E", empty_frame(frames[0][1].shape))] * tail
    for k, (role, image) in enumerate(frames):
        cv2.imwrite(str(folder / f"{k:04d}_{role}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


# ---------------------------------------------------------------- the service


def enrol(config: Config, pipeline: FacePipeline, samples: list[pad.Sample], subject: str, count: int) -> set[int]:
    """Enrol ``subject`` as the end-to-end evaluation does (evaluate_pad_service.enrol); their sample indices."""
    return set(pad_service.enrol(config, samples, subject, count, pipeline))


def replay(settings: dict[str, Any], gallery: Path, folder: Path, fps: float, work: Path) -> list[dict[str, Any]]:
    """A fresh Service (fresh state, ``gallery`` copied in) over the frames in ``folder``; its decision events."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    config = parse_config({**settings, "state_dir": str(work)})
    shutil.copy(gallery, config.gallery_path)
    source = ReplaySource(folder, fps, sleep=lambda _s: None)  # file time k / fps, no waiting
    service = Service(config, source=source, pin_factory=MockFactory())
    events: list[dict[str, Any]] = []
    service.emitter.add_listener(events.append)
    service.run()
    return [e for e in events if e["type"] in DECISION_EVENTS]


def outcome(events: list[dict[str, Any]]) -> str:
    kinds = {e["type"] for e in events}
    for kind, name in (("access_granted", "granted"), ("spoof_detected", "spoof"), ("access_denied", "denied"),
                       ("unknown_face", "unknown"), ("visit_undecided", "undecided")):
        if kind in kinds:
            return name
    return "none"


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=pad.default_data_dir())
    parser.add_argument("--operating-point", choices=OPERATING_POINTS, action="append",
                        help="liveness operating point(s) to run (repeatable; default: all)")
    parser.add_argument("--attackers", nargs="*", help="attacker subjects (default: all)")
    parser.add_argument("--printed", nargs="*", help="printed (enrolled) subjects (default: all)")
    parser.add_argument("--live-frames", type=int, default=4, help="attacker live frames before the print")
    parser.add_argument("--print-frames", type=int, default=6, help="print frames of the attack")
    parser.add_argument("--gap-seconds", type=float, default=0.4, help="empty frames between live and print (gap)")
    parser.add_argument("--fps", type=float, default=15.0, help="file time of the replayed frames")
    parser.add_argument("--tail-seconds", type=float, default=2.0,
                        help="empty frames after each sequence, so that its visit ends (and is reported) in the replay")
    parser.add_argument("--enrol-frames", type=int, default=2)
    parser.add_argument("--reference-runs", type=int, default=4,
                        help="print-alone and live presentations per printed subject (5 frames each)")
    parser.add_argument("--out", type=Path, help="also write report.json (every sequence) here")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"no data at {args.data} (set FACEGATE_SHARED or --data)", file=sys.stderr)
        return 2
    logging.getLogger("facegate").setLevel(logging.ERROR)
    started = time.time()
    samples = pad.list_samples(args.data)
    subjects = sorted({s.subject for s in samples})
    attackers = args.attackers or subjects
    printed = args.printed or subjects
    points = args.operating_point or list(OPERATING_POINTS)
    gap_frames = round(args.gap_seconds * args.fps)
    tail = round(args.tail_seconds * args.fps)
    base: dict[str, Any] = {
        "device_id": "pad-mixed", "door": {"relay_pin": 17, "unlock_seconds": 0.05}, "mqtt": {"enabled": False},
        "outbox": {"flush_timeout_seconds": 0}, "journal": {"enabled": False},
        "recognition": {"cooldown_seconds": 0, "track_iou": 0.01},
    }
    pipeline = build_pipeline(parse_config({**base, "state_dir": "/nonexistent"}))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="facegate-pad-mixed-") as tmp_name:
        tmp = Path(tmp_name)
        galleries, enrolled = {}, {}
        for p in printed:
            config = parse_config({**base, "state_dir": str(tmp / f"gallery-{p}")})
            enrolled[p] = enrol(config, pipeline, samples, p, args.enrol_frames)
            galleries[p] = config.gallery_path
        jobs: list[tuple[str, str, str, Path]] = []  # (kind, attacker, printed, folder)
        for p in printed:
            print_runs = runs(samples, "spoof_print", p, args.print_frames)
            for a in (x for x in attackers if x != p):
                k = subjects.index(a) + subjects.index(p)  # which runs: fixed per pair, whatever subset is run
                live_runs = runs(samples, "live", a, args.live_frames)
                if not live_runs or not print_runs:
                    continue
                live = [samples[i].path for i in live_runs[k % len(live_runs)]]
                prints = [samples[i].path for i in print_runs[k % len(print_runs)]]
                for variant in VARIANTS:
                    if variant == "interleaved":  # as many live frames as print frames, alternating
                        longer = runs(samples, "live", a, args.print_frames)
                        live_v = [samples[i].path for i in longer[k % len(longer)]] if longer else live
                    else:
                        live_v = live
                    folder = tmp / "seq" / f"{variant}-{a}-{p}"
                    frames = mixed_sequence(pipeline, live_v, prints, variant, gap_frames)
                    write_frames(folder, frames, tail)
                    jobs.append((variant, a, p, folder))
                    if variant == "live_then_print":  # its print part on its own: the print's own APCER
                        folder = tmp / "seq" / f"{ATTACK_PRINTS}-{a}-{p}"
                        write_frames(folder, [f for f in frames if f[0] == "P"], tail)
                        jobs.append((ATTACK_PRINTS, a, p, folder))
            for kind, name in (("spoof_print", "prints_alone"), ("live", "live")):
                for j, run in enumerate(runs(samples, kind, p, 5, enrolled[p])[: args.reference_runs]):
                    folder = tmp / "seq" / f"{name}-{p}-{j}"
                    write_frames(folder, [(kind[0].upper(), read_image(samples[i].path)) for i in run], tail)
                    jobs.append((name, p, p, folder))
        for point in points:
            settings = {**base, "liveness": {"operating_point": point}}
            for kind, a, p, folder in jobs:
                events = replay(settings, galleries[p], folder, args.fps, tmp / "state")
                granted = next((e for e in events if e["type"] == "access_granted"), None)
                rows.append({"operating_point": point, "kind": kind, "attacker": a, "printed": p,
                             "outcome": outcome(events), "events": [e["type"] for e in events],
                             "granted_frame": granted["frame"] if granted else None,
                             "granted_liveness": granted.get("liveness_score") if granted else None,
                             "granted_similarity": granted.get("similarity") if granted else None})
            print(f"{point}: {sum(1 for r in rows if r['operating_point'] == point)} sequences "
                  f"({time.time() - started:.0f} s)", file=sys.stderr)

    table = []
    for point in points:
        mine = [r for r in rows if r["operating_point"] == point]
        line: dict[str, Any] = {"operating_point": point}
        for kind in (*VARIANTS, ATTACK_PRINTS, "prints_alone"):
            chosen = [r for r in mine if r["kind"] == kind]
            line[kind] = f"{sum(r['outcome'] == 'granted' for r in chosen)}/{len(chosen)}"
            # Granted on one of the attacker's own live frames: their face matched the printed subject (a false
            # match of the embedder), not a fusion of their liveness with the print.
            on_live = sum(r["outcome"] == "granted" and str(r["granted_frame"]).endswith("_L.png") for r in chosen)
            if on_live:
                line[kind] += f" ({on_live} L)"
        live = [r for r in mine if r["kind"] == "live"]
        missed = sum(r["outcome"] != "granted" for r in live)
        line["live_BPCER"] = f"{missed}/{len(live)} = {missed / len(live):.3f}" if live else "-"
        line["attack_outcomes"] = dict(Counter(r["outcome"] for r in mine if r["kind"] in VARIANTS))
        table.append(line)
    columns = (*VARIANTS, ATTACK_PRINTS, "prints_alone", "live_BPCER")
    print(f"{'operating point':<16}" + "".join(f"{k:>20}" for k in columns))
    for line in table:
        print(f"{line['operating_point']:<16}" + "".join(f"{line[k]:>20}" for k in columns))
    for line in table:
        print(f"{line['operating_point']}: attack outcomes {line['attack_outcomes']}")
    print(f"({time.time() - started:.0f} s; granted counts: goal 0; '(n L)': n of them granted on the attacker's own "
          "live frame, i.e. their face matched the printed subject: a false match, not a mixed-face decision)")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "report.json").write_text(json.dumps({"table": table, "sequences": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
