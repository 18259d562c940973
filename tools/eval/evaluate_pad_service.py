#!/usr/bin/env python3
"""Liveness acceptance measurement end to end through the door service: APCER(print) and BPCER on nuaa_dev.

Leave-one-subject-out. For each held-out subject s:

1. the antispoof model is fitted on the other subjects only, by ``tools/eval/evaluate_pad.py``'s own
   ``write_model`` (the shipped recipe: all screen families, thresholds from a leave-one-subject-out over the
   training subjects), into a temporary models directory (``models/`` symlinked, the antispoof JSON replaced,
   its manifest entry's sha256/bytes updated, so the service loads it checksum-verified like the shipped one);
2. s is enrolled into a fresh gallery from the first ``--enrol-frames`` quality-passing live frames of s's
   first capture session (through the service's own pipeline and ``Gallery.enroll``);
3. every presentation of s (``evaluate_pad.presentations``: runs of ``--frames`` consecutive frames of one class
   and session, the enrolment frames left out) is replayed through a fresh, real ``Service`` (``ReplaySource``
   over symlinks to the frames, stamped with file time at ``--replay-fps`` (15) and never paced, so a run is
   identical under load; MockFactory relay, MQTT off) and its events decide the outcome:
   granted (access_granted), spoof (spoof_detected + access_denied "liveness"), unknown (unknown_face),
   denied (any other access_denied) or none (no decision).

BPCER = live presentations not granted (split into lost to recognition: unknown/none, and lost to liveness:
spoof). APCER(print) = print presentations granted. A presentation shorter than what the service needs
(max of ``liveness.min_frames`` and ``recognition.required_frames``: the same frames count for both) is padded
by repeating its frames. As a wiring check, each liveness decision of the service is compared with
``LivenessTrack`` fed offline (evaluate_pad's per-frame feature cache) with the frames the service had seen.

The stored NUAA frames are ~1.5 s apart. Two service settings are therefore changed for the replay:
``recognition.cooldown_seconds = 0`` (irrelevant with one Service per presentation) and
``recognition.track_iou = 0.01`` (``--track-iou``; service default 0.3): a moved print jumps further between two
stored frames than the tracker accepts, so with 0.3 four in ten print presentations open a new track per frame
and end without any decision: untested, not rejected. A 15 fps camera would keep one track. The planar-motion
veto also sees seconds of motion here instead of the ~200 ms a door has before it decides:
``--no-planar-veto`` gives the texture-only figures.

With ``--screens N`` each live presentation is also shown on N simulated phones (tools/eval/screen_replay.py) and
replayed as the attack type ``spoof_screen_sim``; ``--challenge off|doubt|always`` sets the head-turn challenge
(default: the configuration's, "doubt"); presentations left asking for a turn, or without any decision, are
reported apart from rejects; every rate has a 95% Wilson interval over presentations and a subject-cluster
bootstrap interval (presentations of one person, and overlapping windows of one session, are not independent:
``--stride 1`` replays every window the data allows, and the cluster interval and the subject/session counts
say how much evidence that is). ``--lfw N`` adds, per fold, N LFW people the model never saw, enrolled from a
photo and attacking with that photo held over the held-out subject's live frames, printed and on a phone
(``tools/eval/pad_composites.py``). ``--repeat-check N`` replays the first N presentations of each fold twice and
counts identical outcomes and events. With ``--out``, ``det.png`` is the DET of the liveness score at the
decision per attack type.

    python tools/eval/evaluate_pad_service.py [--operating-point balanced] [--screens 1] [--out reports/pad_service]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "device")]

import cv2
from facegate.base.imageio import read_image
from facegate.camera.replay import ReplaySource
from facegate.config import Config, parse_config
from facegate.gallery.store import Gallery, NewTemplate
from facegate.liveness.gate import ROLE
from facegate.liveness.model import OPERATING_POINTS, ActiveParams, TextureClassifier
from facegate.service import Service
from facegate.vision.models import Manifest, default_models_dir, sha256_file
from facegate.vision.pipeline import FacePipeline
from facegate.wiring.recognition import build_pipeline
from gpiozero.pins.mock import MockFactory

from tools import ROOT
from tools.eval import evaluate_pad as pad
from tools.eval import pad_composites, screen_replay

OUTCOMES = ("granted", "spoof", "unknown", "denied", "challenge_pending", "none")
ATTACKS = ("spoof_print", "spoof_screen_sim", "lfw_held_print", "lfw_held_screen")
BOOTSTRAP = 2000  # resamples of the subject-cluster bootstrap (seeded: two runs give the same intervals)
IGNORED_IN_REPEAT = ("ts", "event_id", "seq")  # wall-clock stamps and ids: everything else must repeat


def wilson(k: float, n: int, z: float = 1.96) -> list[float] | None:
    """95% Wilson score interval of k successes in n (presentations are the unit)."""
    if n == 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def cluster_interval(hits: list[bool], clusters: list[str], seed: int = 0) -> list[float] | None:
    """95% percentile interval of a rate by resampling whole clusters (subjects) with replacement.

    Overlapping windows of one session, and sessions of one person, are not independent: a Wilson interval over
    presentations is then too narrow. Resampling subjects keeps each one's presentations together, so the
    interval is as wide as the spread between people allows (with 8 subjects, it is itself rough).
    """
    if not hits:
        return None
    names = sorted(set(clusters))
    per = {c: (sum(h for h, cc in zip(hits, clusters, strict=True) if cc == c),
               sum(1 for cc in clusters if cc == c)) for c in names}
    k = np.array([per[c][0] for c in names], float)
    n = np.array([per[c][1] for c in names], float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(names), size=(BOOTSTRAP, len(names)))
    rates = k[picks].sum(axis=1) / np.maximum(n[picks].sum(axis=1), 1)
    return [round(float(np.quantile(rates, 0.025)), 4), round(float(np.quantile(rates, 0.975)), 4)]


TRACK_IOU = 0.01


class ErrorCounter(logging.Handler):
    """The frame loop logs and skips a frame whose processing raised: count those (a wiring bug hides there)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        print(f"service error: {record.getMessage()}", file=sys.stderr)


# ---------------------------------------------------------------- per fold: model, models dir, gallery


def subset(frames: pad.Frames, rows: np.ndarray) -> pad.Frames:
    return pad.Frames(frames.found[rows], frames.quality_ok[rows], frames.features[rows], frames.nuisance[rows],
                      {k: v[rows] for k, v in frames.screens.items()}, frames.mesh[rows], frames.feature_ms)


def fold_models_dir(dest: Path, samples: list[pad.Sample], frames: pad.Frames, held: str, frames_per_pres: int,
                    data: Path, model_name: str | None) -> Path:
    """models/ with the antispoof model refitted without subject ``held`` (and its manifest entry updated)."""
    source = default_models_dir()
    entry = Manifest.load(source).get(ROLE, model_name)
    dest.mkdir(parents=True)
    for path in source.iterdir():
        if path.name not in ("manifest.json", entry.path.name):
            (dest / path.name).symlink_to(path.resolve())
    rows = np.array([s.subject != held for s in samples])
    train = [s for s, keep in zip(samples, rows, strict=True) if keep]
    pad._PLANARITY.clear()  # keyed by sample indices, which differ between the training subset and the full list
    pad.write_model(dest / entry.path.name, train, subset(frames, rows), pad.presentations(train, frames_per_pres),
                    ActiveParams(), data)
    pad._PLANARITY.clear()
    manifest = json.loads((source / "manifest.json").read_text())
    for item in manifest["models"]:
        if item["name"] == entry.name:
            item["sha256"] = sha256_file(dest / entry.path.name)
            item["bytes"] = (dest / entry.path.name).stat().st_size
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return dest


def session_key(sample: pad.Sample) -> tuple[str, str]:
    parts = sample.group.split("_")  # NUAA: glasses_position_session
    return (parts[-1], sample.group)


def enrol(config: Config, samples: list[pad.Sample], subject: str, count: int,
          pipeline: FacePipeline | None = None) -> list[int]:
    """Enrol ``subject`` from the first quality-passing live frames of their first session; returns their indices.

    ``pipeline``: one already built (a caller enrolling many subjects), else the config's."""
    live = [i for i, s in enumerate(samples) if s.subject == subject and s.kind == "live"]
    first = min(session_key(samples[i]) for i in live)[1]
    pipeline = pipeline or build_pipeline(config)
    templates, used = [], []
    for i in sorted((i for i in live if samples[i].group == first), key=lambda i: samples[i].order):
        found = pipeline.process(read_image(samples[i].path), largest_only=True)
        if found and not found[0].failures and found[0].embedding is not None:
            templates.append(NewTemplate(found[0].embedding, found[0].quality.as_dict(), samples[i].path.name))
            used.append(i)
            if len(used) == count:
                break
    if not used:
        raise SystemExit(f"subject {subject}: no quality-passing live frame to enrol in session {first}")
    config.state_dir.mkdir(parents=True, exist_ok=True)
    with Gallery(config.gallery_path) as gallery:
        gallery.enroll(subject, templates, pipeline.embedder_sha256, name=f"NUAA {subject}")
    return used


# ---------------------------------------------------------------- one presentation through the service


def replay(config: Config, paths: list[Path], folder: Path, fps: float,
           images: list[np.ndarray] | None = None) -> tuple[str, list[dict[str, Any]], int]:
    """Run a fresh Service over these frames (symlinked as ``<k>_<name>`` in order, or ``images`` written so).

    Frames carry file time ``k / fps`` and are never paced (ReplaySource's sleep is a no-op): the service sees a
    15 fps camera however loaded the machine is, so a run is identical under load. Returns (outcome, decision
    and challenge events, face tracks the service opened).
    """
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for k, path in enumerate(paths):
        if images is None:
            (folder / f"{k:04d}_{path.name}").symlink_to(path.resolve())
        else:
            cv2.imwrite(str(folder / f"{k:04d}_{path.stem}.jpg"), cv2.cvtColor(images[k], cv2.COLOR_RGB2BGR))
    source = ReplaySource(folder, fps, sleep=lambda _seconds: None)
    service = Service(config, source=source, pin_factory=MockFactory())
    events: list[dict[str, Any]] = []
    service.emitter.add_listener(events.append)
    service.run()
    decisions = [e for e in events if e["type"] in ("access_granted", "spoof_detected", "access_denied",
                                                     "unknown_face", "liveness_challenge")]
    kinds = {e["type"] for e in decisions}
    outcome = ("granted" if "access_granted" in kinds else "spoof" if "spoof_detected" in kinds
               else "denied" if "access_denied" in kinds else "unknown" if "unknown_face" in kinds
               else "challenge_pending" if "liveness_challenge" in kinds else "none")
    return outcome, decisions, len(service.engine.tracker.tracks)  # all still there: a replay takes < 1 s


def offline_liveness(model: TextureClassifier, frames: pad.Frames, seen: list[int], config: Config) -> bool:
    """``LivenessTrack`` fed offline (evaluate_pad's cached per-frame features) with these frames."""
    scored = pad.score_presentation(model, frames, seen, model.active)
    veto = model.active if config.liveness.active else None
    return pad.decide(scored, model.threshold(config.liveness.operating_point), config.liveness.min_frames, veto)


# ---------------------------------------------------------------- figures


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """BPCER and APCER per attack type, with 95% intervals, and where each presentation ended.

    Presentations that got no decision are reported apart from rejects: "none" split by cause (``track_broken``:
    the service opened several face tracks and none collected enough matching frames) and
    "challenge_pending": the door asked for a head turn and the presentation ended before the time limit.
    Nobody in NUAA answers a prompt, so a live presentation left asking is counted both ways: BPCER assumes
    it failed (every asked person refused: the upper bound), ``BPCER_if_asked_turn`` assumes the person turned
    (the challenge passed every real nuaa_dev turn, tests/liveness/test_liveness_challenge.py).
    """

    def outcomes(kind: str) -> tuple[int, Counter[str], list[dict[str, Any]]]:
        chosen = [r for r in rows if r["kind"] == kind]
        counts = Counter(r["outcome"] for r in chosen)
        counts["track_broken"] = sum(1 for r in chosen if r["outcome"] == "none" and r["tracks"] > 1)
        counts["asked"] = sum(1 for r in chosen if r.get("challenge"))
        return len(chosen), counts, chosen

    def clustering(chosen: list[dict[str, Any]]) -> dict[str, int]:
        return {"subjects": len({r["subject"] for r in chosen}),
                "sessions": len({(r["subject"], r["session"]) for r in chosen})}

    n_live, live, live_rows = outcomes("live")
    asked_seconds = sorted(r["challenge_seconds"] for r in live_rows if r.get("challenge_seconds") is not None)
    out: dict[str, Any] = {
        "BPCER": round((n_live - live["granted"]) / n_live, 4) if n_live else None,
        "BPCER_95ci": wilson(n_live - live["granted"], n_live),
        "BPCER_95ci_subject_clusters": cluster_interval([r["outcome"] != "granted" for r in live_rows],
                                                        [r["subject"] for r in live_rows]),
        "BPCER_if_asked_turn": round((n_live - live["granted"] - live["challenge_pending"]) / n_live, 4)
        if n_live else None,
        "live_asked_share": round(live["asked"] / n_live, 4) if n_live else None,
        "live_asked_median_seconds_to_settle": asked_seconds[len(asked_seconds) // 2] if asked_seconds else None,
        "live": {"presentations": n_live, **clustering(live_rows), "granted": live["granted"],
                 "lost_to_recognition": live["unknown"] + live["none"], "lost_to_liveness": live["spoof"],
                 "asked_for_a_turn": live["asked"], "denied_by_policy": live["denied"],
                 "outcomes": {k: live[k] for k in (*OUTCOMES, "track_broken")}},
    }
    for attack in ATTACKS:
        n, counts, chosen = outcomes(attack)
        if not n:
            continue
        reached = counts["granted"] + counts["spoof"] + counts["challenge_pending"]
        out[f"APCER_{attack}"] = round(counts["granted"] / n, 4)
        out[f"APCER_{attack}_95ci"] = wilson(counts["granted"], n)
        out[f"APCER_{attack}_95ci_subject_clusters"] = cluster_interval(
            [r["outcome"] == "granted" for r in chosen], [r["subject"] for r in chosen])
        # The gate's own APCER: of the attacks that recognition took for the enrolled person, how many got in.
        out[f"APCER_{attack}_recognised"] = round(counts["granted"] / reached, 4) if reached else None
        out[attack] = {"presentations": n, **clustering(chosen), "granted": counts["granted"],
                       "stopped_by_liveness": counts["spoof"],
                       "asked_for_a_turn": counts["asked"], "unknown_or_undecided": counts["unknown"] + counts["none"],
                       "outcomes": {k: counts[k] for k in (*OUTCOMES, "track_broken")}}
    return out


def across_folds(folds: dict[str, Any]) -> dict[str, Any]:
    """Mean, sd, min and max of each rate over the subject folds (how much it depends on who is held out)."""
    out = {}
    for key in ("BPCER", "live_asked_share", *(f"APCER_{a}" for a in ATTACKS)):
        values = [f[key] for f in folds.values() if f.get(key) is not None]
        if values:
            out[key] = {"mean": round(float(np.mean(values)), 4), "sd": round(float(np.std(values)), 4),
                        "min": round(min(values), 4), "max": round(max(values), 4), "folds": len(values)}
    return out


def det_plot(path: Path, rows: list[dict[str, Any]], title: str) -> None:
    """DET of the liveness score at the decision (mean texture log-odds) per attack type, presentations that
    reached the gate only (recognised as the enrolled person); the door's own outcome as a point per type."""
    from statistics import NormalDist

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probit = NormalDist().inv_cdf

    def at(v: float) -> float:
        return probit(min(max(v, 1e-3), 1 - 1e-3))

    live_rows = [r for r in rows if r["kind"] == "live"]
    live = np.array([r["liveness_score"] for r in live_rows if "liveness_score" in r])
    fig, ax = plt.subplots(figsize=(6, 6))
    if len(live):
        for attack in ATTACKS:
            chosen = [r for r in rows if r["kind"] == attack]
            scores = np.array([r["liveness_score"] for r in chosen if "liveness_score" in r])
            if not len(scores):
                continue
            cuts = np.unique(np.concatenate([live, scores, [np.inf]]))
            ax.plot([at(float(np.mean(live < t))) for t in cuts], [at(float(np.mean(scores >= t))) for t in cuts],
                    label=f"{attack} ({len(scores)} scored)")
            bpcer = sum(r["outcome"] != "granted" for r in live_rows) / len(live_rows)
            apcer = sum(r["outcome"] == "granted" for r in chosen) / len(chosen)
            ax.plot(at(bpcer), at(apcer), "o", color=ax.lines[-1].get_color())
    ticks = [0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6]
    ax.set_xticks([probit(t) for t in ticks], [f"{t:.1%}" for t in ticks], rotation=45)
    ax.set_yticks([probit(t) for t in ticks], [f"{t:.1%}" for t in ticks])
    ax.set_xlim(probit(0.0008), probit(0.7))
    ax.set_ylim(probit(0.0008), probit(0.7))
    ax.set_xlabel("BPCER (live presentations with a score; 0 drawn at 0.1%)")
    ax.set_ylabel("APCER")
    ax.set_title(f"Liveness DET through the service, leave-one-subject-out\n({title}; points: the door's outcome)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- main


def windows(samples: list[pad.Sample], frames: int, stride: int) -> list[list[int]]:
    """``evaluate_pad.presentations`` with a stride: every ``stride``-th start within each session."""
    if stride >= frames:
        return pad.presentations(samples, frames)
    groups: dict[tuple[str, str, str], list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault((s.kind, s.subject, s.group), []).append(i)
    out = []
    for key in sorted(groups):
        idx = sorted(groups[key], key=lambda i: samples[i].order)
        out.extend(idx[k : k + frames] for k in range(0, max(1, len(idx) - frames + 1), stride))
    return out


def strip(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k not in IGNORED_IN_REPEAT} for e in events]


def face_box(pipeline: Any, image: np.ndarray) -> tuple[float, float, float, float]:
    """The largest face's detector box (the composite is held over it); the frame's centre when none is found."""
    faces = pipeline.detect(image)
    if faces:
        x, y, w, h = faces[0].box
        return (float(x), float(y), float(w), float(h))
    h0, w0 = image.shape[:2]
    return (w0 * 0.35, h0 * 0.25, w0 * 0.3, h0 * 0.4)


def lfw_people(args: argparse.Namespace, held: str, samples: list[pad.Sample]) -> list[Path]:
    """``--lfw`` people for this fold: each fold gets its own (no person is shown twice), seeded order."""
    people = sorted(p for p in args.lfw_dir.iterdir() if p.is_dir())
    if not people:
        raise SystemExit(f"no LFW people under {args.lfw_dir}")
    subjects = sorted({s.subject for s in samples})
    order = np.random.default_rng(0).permutation(len(people))
    start = subjects.index(held) * args.lfw
    return [people[i] for i in order[start : start + args.lfw]]


def enrol_strangers(config: Config, people: list[Path]) -> list[tuple[str, np.ndarray]]:
    """Enrol each person from their first photo and return (name, that photo): the attack shows the very photo
    the person was enrolled from, so recognition matches and liveness alone must refuse it (the worst case)."""
    pipeline = build_pipeline(config)
    out = []
    with Gallery(config.gallery_path) as gallery:
        for person in people:
            photo_path = sorted(person.glob("*.jpg"))[0]
            photo = read_image(photo_path)
            found = pipeline.process(photo, largest_only=True)
            if not found or found[0].embedding is None:
                continue
            gallery.enroll(f"lfw_{person.name}", [NewTemplate(found[0].embedding, found[0].quality.as_dict(),
                                                              photo_path.name)],
                           pipeline.embedder_sha256, name=person.name)
            out.append((person.name, photo))
    return out


def run_kind(sample_kind: str, phone: int | None, composite: str | None) -> str:
    """The attack type (or "live") a planned presentation is reported as."""
    if composite is not None and phone is not None:
        return f"lfw_{composite}"
    return "spoof_screen_sim" if phone is not None else sample_kind


def run_fold(held: str, samples: list[pad.Sample], frames: pad.Frames, settings: dict[str, Any], tmp: Path,
             args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One held-out subject: refit, enrol, replay each of their presentations; (rows, fold summary)."""
    started = time.time()
    model_name = parse_config(settings).liveness.model
    models = fold_models_dir(tmp / "models", samples, frames, held, args.frames, args.data, model_name)
    config = parse_config({**settings, "state_dir": str(tmp / "state"), "models": {"dir": str(models)}})
    model = TextureClassifier.load(Manifest.load(models).get(ROLE, model_name))
    need = args.min_replay_frames or max(config.liveness.min_frames, config.recognition.required_frames)
    enrolled = enrol(config, samples, held, args.enrol_frames)
    kept = [i for i, s in enumerate(samples) if s.subject == held and i not in enrolled]
    strangers = enrol_strangers(config, lfw_people(args, held, samples)) if args.lfw else []
    detector = build_pipeline(config) if strangers else None
    rows = []
    runs: list[tuple[list[int], int | None, str | None]] = [
        (run, None, None) for run in windows([samples[i] for i in kept], args.frames, args.stride)]
    live_runs = [run for run in windows([samples[i] for i in kept], args.frames, args.frames)
                 if samples[kept[run[0]]].kind == "live"]
    runs += [(run, phone, None) for run in live_runs for phone in range(args.screens)]
    # Each stranger's photo held over a live presentation of this subject, on paper and on a phone.
    runs += [(live_runs[k % len(live_runs)], k, kind) for k in range(len(strangers))
             for kind in pad_composites.KINDS] if live_runs else []
    if args.kinds:  # only these presentation kinds (e.g. every print window, without the live ones)
        runs = [r for r in runs if run_kind(samples[kept[r[0][0]]].kind, r[1], r[2]) in args.kinds]
    repeats = 0
    for number, (run, phone, composite) in enumerate(runs):
        idx = [kept[j] for j in run]
        order = [idx[k % len(idx)] for k in range(max(need, len(idx)))]
        images = None
        kind = run_kind(samples[idx[0]].kind, phone, composite)
        if composite is not None and phone is not None:  # a stranger's photo held up (tools/eval/pad_composites.py)
            rng = np.random.default_rng([int(held) if held.isdigit() else 0, kept[run[0]], phone,
                                         pad_composites.KINDS.index(composite), 1])
            live = [read_image(samples[i].path) for i in order]
            boxes = [face_box(detector, image) for image in live]
            images = pad_composites.presentation(live, boxes, strangers[phone][1], composite, rng)
        elif phone is not None:  # the live presentation shown on a simulated phone (tools/eval/screen_replay.py)
            rng = np.random.default_rng([int(held) if held.isdigit() else 0, kept[run[0]], phone])
            params = screen_replay.sample_params(rng)
            images = [screen_replay.recapture(read_image(samples[i].path), params, rng) for i in order]
        outcome, decisions, tracks = replay(config, [samples[i].path for i in order], tmp / "replay", args.replay_fps,
                                            images)
        if number < args.repeat_check:  # the same presentation again: file time makes it decide the same
            again = replay(config, [samples[i].path for i in order], tmp / "replay", args.replay_fps, images)
            repeats += int(again[0] == outcome and strip(again[1]) == strip(decisions))
        first = samples[idx[0]]
        challenge = [e for e in decisions if e["type"] == "liveness_challenge"]
        decisions = [e for e in decisions if e["type"] != "liveness_challenge"]
        row: dict[str, Any] = {
            "subject": held, "kind": kind, "session": first.group,
            "frames": [samples[i].path.name for i in idx], "replayed": len(order), "outcome": outcome,
            "events": [e["type"] for e in decisions], "tracks": tracks,
            "challenge": [(e["direction"], e["outcome"]) for e in challenge],
        }
        settled = [e for e in challenge if e["outcome"] != "asked"]
        if settled:
            row["challenge_seconds"] = settled[0]["seconds"]
        if composite is not None and phone is not None:
            row["stranger"] = strangers[phone][0]
        spoof = next((e for e in decisions if e["type"] == "spoof_detected"), None)
        if spoof is not None:
            row["liveness_reason"] = spoof["liveness_reason"]
        scored = next((e for e in decisions if e.get("liveness_score") is not None), None)
        if scored is not None:  # the track's mean texture log-odds at the decision (the DET's score)
            row["liveness_score"] = scored["liveness_score"]
        asked = next((e for e in decisions if e["type"] in ("access_granted", "spoof_detected")), None)
        # The frames the service had seen when it asked the track's liveness (passive decisions only).
        if asked is not None and phone is None and not challenge:
            seen = order[: int(asked["frame"][:4]) + 1]
            row["decided_after_frames"] = len(seen)
            row["offline_live_same_frames"] = offline_liveness(model, frames, seen, config)
            row["agrees_with_offline"] = row["offline_live_same_frames"] == (outcome == "granted")
        if phone is None:
            row["offline_live_whole_presentation"] = offline_liveness(model, frames, idx, config)
        rows.append(row)
    summary = summarise(rows)
    attacks = ", ".join(f"{a} {summary[a]['granted']}/{summary[a]['presentations']}" for a in ATTACKS if a in summary)
    print(f"subject {held}: live {summary['live']['granted']}/{summary['live']['presentations']} granted "
          f"({summary['live']['asked_for_a_turn']} asked), granted attacks: {attacks} ({time.time() - started:.0f} s)",
          file=sys.stderr)
    fold = {"enrolled": [samples[i].path.name for i in enrolled], "strangers": [name for name, _ in strangers],
            "repeat_check": f"{repeats}/{min(args.repeat_check, len(runs))} replayed twice with identical events",
            "thresholds": {op: round(model.thresholds[op], 4) for op in OPERATING_POINTS},
            **summary, "seconds": round(time.time() - started, 1)}
    return rows, fold


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=pad.default_data_dir())
    parser.add_argument("--operating-point", choices=OPERATING_POINTS, default="balanced")
    parser.add_argument("--frames", type=int, default=5, help="frames per presentation (as evaluate_pad)")
    parser.add_argument("--enrol-frames", type=int, default=2, help="live frames of the first session to enrol")
    parser.add_argument("--min-replay-frames", type=int, default=0,
                        help="pad shorter presentations by repeating frames (default: what the service needs)")
    parser.add_argument("--replay-fps", type=float, default=15.0,
                        help="file time between replayed frames (1/fps s; never paced in wall time): the door's "
                        "camera rate, which the challenge's time limit is measured in")
    parser.add_argument("--stride", type=int, default=0,
                        help="start a presentation every STRIDE frames (default: --frames, disjoint runs; 1 = every "
                        "window the data allows: more presentations, but overlapping ones are not independent)")
    parser.add_argument("--kinds", nargs="*", choices=("live", *ATTACKS), default=None,
                        help="replay only these presentation kinds (default: all), e.g. --stride 1 --kinds "
                        "spoof_print for every print window without the live ones")
    parser.add_argument("--screens", type=int, default=0,
                        help="also replay each live presentation on this many simulated phones "
                        "(tools/eval/screen_replay.py) as the attack type spoof_screen_sim")
    parser.add_argument("--challenge", choices=("off", "doubt", "always"), default=None,
                        help="liveness.challenge for the replay (default: the configuration's default)")
    parser.add_argument("--track-iou", type=float, default=TRACK_IOU,
                        help="recognition.track_iou for the replay (the service's default is 0.3): the stored frames "
                        "are ~1.5 s apart, so a moved print jumps further than a 15 fps camera would ever see and the "
                        "track breaks before any decision; one face per frame, so a low value only keeps its track")
    parser.add_argument("--no-planar-veto", action="store_true",
                        help="liveness.active = false: texture only (the veto sees ~1.5 s of motion between stored "
                        "frames here, far more than the 200 ms a door has before deciding)")
    parser.add_argument("--lfw", type=int, default=0,
                        help="per held-out subject, this many LFW people (never seen by the model) enrolled from a "
                        "photo and attacking with it held over the subject's live frames, printed and on a phone "
                        "(tools/eval/pad_composites.py; attack types lfw_held_print, lfw_held_screen)")
    parser.add_argument("--lfw-dir", type=Path,
                        default=Path(os.environ.get("FACEGATE_SHARED", ROOT.parent / "shared")) / "faces" / "lfw_dev")
    parser.add_argument("--repeat-check", type=int, default=0,
                        help="replay the first N presentations of each fold twice and count identical outcomes and "
                        "events (file time: a run must not depend on the machine's load)")
    parser.add_argument("--subjects", nargs="*", help="held-out subjects to run (default: all)")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "facegate-pad-cache",
                        help="evaluate_pad's per-frame feature cache (never inside the repo)")
    parser.add_argument("--out", type=Path, help="also write report.json (with every presentation) here")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"no data at {args.data} (set FACEGATE_SHARED or --data)", file=sys.stderr)
        return 2
    started = time.time()
    errors = ErrorCounter()
    facegate_log = logging.getLogger("facegate")
    facegate_log.addHandler(errors)
    facegate_log.setLevel(logging.ERROR)  # not the per-event INFO lines nor "events stay in the outbox"
    settings: dict[str, Any] = {
        "device_id": "pad-eval", "door": {"relay_pin": 17, "unlock_seconds": 0.05}, "mqtt": {"enabled": False},
        "outbox": {"flush_timeout_seconds": 0}, "liveness": {"operating_point": args.operating_point},
        "recognition": {"cooldown_seconds": 0, "track_iou": args.track_iou},
    }
    if args.no_planar_veto:
        settings["liveness"]["active"] = False
    if args.challenge is not None:
        settings["liveness"]["challenge"] = args.challenge
    args.stride = args.stride or args.frames
    defaults = parse_config(settings)

    samples = pad.list_samples(args.data)
    frames = pad.cached_extract(samples, args.data, args.cache, augment=True)
    rows: list[dict[str, Any]] = []
    folds: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="facegate-pad-service-") as tmp:
        for held in args.subjects or sorted({s.subject for s in samples}):
            fold_rows, folds[held] = run_fold(held, samples, frames, settings, Path(tmp) / held, args)
            rows.extend(fold_rows)

    checked = [r for r in rows if "agrees_with_offline" in r]
    live = [r["offline_live_whole_presentation"] for r in rows if r["kind"] == "live"]
    prints = [r["offline_live_whole_presentation"] for r in rows if r["kind"] == "spoof_print"]
    report: dict[str, Any] = {
        "data": str(args.data),
        "protocol": f"leave-one-subject-out; antispoof model refitted without the held-out subject "
        f"(evaluate_pad.write_model on the others); held-out subject enrolled from {args.enrol_frames} live frames "
        f"of their first session; presentations = runs of {args.frames} consecutive frames of one session "
        f"(enrolment frames excluded), each replayed through a fresh Service",
        "operating_point": args.operating_point,
        "recognition": {k: getattr(defaults.recognition, k) for k in ("far", "required_frames", "window_frames",
                                                                       "track_iou")},
        "liveness": {k: getattr(defaults.liveness, k) for k in ("min_frames", "window_frames", "active", "challenge",
                                                                 "challenge_timeout_seconds", "challenge_min_turn")},
        "replay": {"frame_time_fps": args.replay_fps, "stride": args.stride, "screens_per_live": args.screens},
        "overall": summarise(rows),
        "per_subject": folds,
        "across_folds": across_folds(folds),
        # The liveness decision alone, offline over each whole presentation (not only up to the service's decision).
        "liveness_only_offline_whole_presentations": {
            "BPCER": round(1 - float(np.mean(live)), 4) if live else None,
            "APCER_spoof_print": round(float(np.mean(prints)), 4) if prints else None,
        },
        "wiring_check": {
            "service_liveness_decisions_matching_offline_LivenessTrack":
                f"{sum(r['agrees_with_offline'] for r in checked)}/{len(checked)}",
            "frames_failed_in_service": errors.count,
        },
        "seconds": round(time.time() - started, 1),
    }
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        det_plot(args.out / "det.png", rows, f"{args.operating_point}, challenge {defaults.liveness.challenge}")
        (args.out / "report.json").write_text(json.dumps({**report, "presentations": rows}, indent=1) + "\n")
        print(f"report: {args.out / 'report.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
