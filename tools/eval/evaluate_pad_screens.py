#!/usr/bin/env python3
"""APCER for simulated screen replays (tools/eval/screen_replay.py), leave-one-subject-out on nuaa_dev, apart from
prints.

For each held-out subject, the antispoof model is fitted on the other subjects exactly as in
``tools/eval/evaluate_pad.py``'s cross-validation (its crude training screens included; the simulator here is a
different, unseen medium), with that fold's thresholds from an inner leave-one-subject-out. Every live
presentation of the held-out subject (5 consecutive frames, ``evaluate_pad.presentations``) is replayed on
``--phones`` simulated phones (parameters drawn per presentation and phone, ``screen_replay.sample_params``;
seeded, so a run is repeatable) and each re-captured frame goes through detection, the face mesh and the
texture score; the presentation is then decided by ``LivenessTrack`` as the door decides:

- passive: texture threshold, per-frame floor and planar veto (``challenge = "off"``);
- with the challenge (``challenge = "doubt"``, the shipped band): a presentation in doubt is asked for a head
  turn. A phone showing a recording can only answer with the recording: it passes when the recording turns the
  asked way (chance ½, direction drawn per visit) and turns at all (the recorded live frames contain a turn of
  ``challenge_min_turn`` or more). Counted as ½ for each such presentation (the expected APCER), 0 otherwise.

95% intervals are Wilson score intervals over presentations.

    python tools/eval/evaluate_pad_screens.py [--phones 2] [--out reports/pad_screens]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]

from facegate.base.imageio import read_image
from facegate.liveness.challenge import ChallengeParams, turn_ratio
from facegate.liveness.model import ActiveParams
from facegate.liveness.track import FrameEvidence, LivenessTrack, TrackParams
from facegate.vision.pipeline import FacePipeline, PipelineOptions

from tools.eval import evaluate_pad as pad
from tools.eval import screen_replay


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=pad.default_data_dir())
    parser.add_argument("--phones", type=int, default=2, help="simulated phones per live presentation")
    parser.add_argument("--operating-point", default="balanced")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/facegate-pad-cache"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    samples = pad.list_samples(args.data)
    frames = pad.cached_extract(samples, args.data, args.cache, augment=True)
    pres = pad.presentations(samples, 5)
    subjects = sorted({s.subject for s in samples})
    active = ActiveParams()
    cv = pad.cross_validate(samples, frames, pres, pad.subject_folds(subjects, None), 3, active)
    pipeline = FacePipeline.from_models_dir(None, PipelineOptions(five_point=True))
    assert pipeline.mesh is not None
    band = pad.CHALLENGE_BAND
    min_turn = ChallengeParams().min_turn
    subj = np.array([s.subject for s in samples])
    rows: list[dict[str, Any]] = []
    for fold in cv["folds"]:
        held = fold["test_subjects"]
        threshold = float(fold[args.operating_point])
        model = pad.fit(frames, samples, ~np.isin(subj, held), pad.SCREEN_TRAIN)
        for j in fold["_rows"]:
            p = pres[j]
            if samples[p[0]].kind != "live":
                continue
            recorded_turns = [turn_ratio(frames.mesh[i]) for i in p if frames.found[i]]
            turns = bool(recorded_turns) and max(recorded_turns) - min(recorded_turns) >= min_turn
            for phone in range(args.phones):
                rng = np.random.default_rng([j, phone])
                params = screen_replay.sample_params(rng)
                base = TrackParams(threshold=threshold, window_frames=8, active=active)
                passive = LivenessTrack(base)
                doubt = LivenessTrack(TrackParams(threshold=threshold, window_frames=8, active=active,
                                                  challenge="doubt", doubt_below=threshold - band.below,
                                                  doubt_above=threshold + band.above,
                                                  doubt_planarity=band.planarity_below))
                found = 0
                for order, i in enumerate(p):
                    shown = screen_replay.recapture(read_image(samples[i].path), params, rng)
                    faces = pipeline.detect(shown)
                    if not faces:
                        continue
                    found += 1
                    mesh = pipeline.mesh.landmarks(shown, faces[0])[0][:, :2]
                    logit = model.logit(model.features(shown, faces[0].box))
                    for track in (passive, doubt):
                        track.add(FrameEvidence(float(order), logit, mesh))
                live_passive = passive.decision().live is True
                d = doubt.decision()
                asked = d.reason == "challenge_pending"
                accepted = 1.0 if d.live is True else (0.5 if asked and turns else 0.0)
                rows.append({"subject": samples[p[0]].subject, "presentation": j, "phone": phone,
                             "faces_found": found, "score_margin": round(passive.score - threshold, 3),
                             "passive_accepted": live_passive, "asked": asked, "recording_turns": turns,
                             "with_challenge_accepted": accepted, "params": params.__dict__})
    n = len(rows)
    k_passive = sum(r["passive_accepted"] for r in rows)
    k_challenge = sum(r["with_challenge_accepted"] for r in rows)
    per_subject = {s: {"presentations": sum(r["subject"] == s for r in rows),
                       "passive_accepted": sum(r["passive_accepted"] for r in rows if r["subject"] == s)}
                   for s in subjects}
    rates = [v["passive_accepted"] / v["presentations"] for v in per_subject.values() if v["presentations"]]
    report = {
        "data": str(args.data), "operating_point": args.operating_point, "phones_per_presentation": args.phones,
        "presentations": n, "no_face_found": sum(r["faces_found"] == 0 for r in rows),
        "APCER_screen_simulated_passive": round(k_passive / n, 4) if n else None,
        "APCER_screen_simulated_passive_95ci": [round(v, 4) for v in wilson(k_passive, n)],
        "APCER_screen_simulated_with_challenge_expected": round(k_challenge / n, 4) if n else None,
        "APCER_screen_simulated_with_challenge_95ci": [round(v, 4) for v in wilson(k_challenge, n)],
        "asked_share": round(sum(r["asked"] for r in rows) / n, 4) if n else None,
        "per_subject": per_subject,
        "passive_APCER_across_subject_folds": {"mean": round(float(np.mean(rates)), 4),
                                               "std": round(float(np.std(rates)), 4)},
    }
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "pad_screens.json").write_text(json.dumps({**report, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
