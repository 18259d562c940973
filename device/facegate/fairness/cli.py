"""``facegate fairness --gallery DB --groups CSV``: per-group FMR/FNMR of a site's enrolled people.

Registered by facegate.cli with one call; same conventions: JSON on stdout, messages on stderr, exit 0 ok,
2 bad input (a missing file, a gallery for another embedder, a malformed CSV).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

import numpy as np

from facegate.base.output import Output
from facegate.errors import GalleryError
from facegate.fairness.report import Templates, group_rates
from facegate.gallery.store import Gallery
from facegate.recognition.calibration import FairCalibration
from facegate.recognition.thresholds import table_for
from facegate.vision.models import Manifest

__all__ = ["add_fairness_command"]


def read_groups(path: Path) -> dict[str, str]:
    """``person_id,group`` per line (header ``identity,group`` or ``person_id,group`` allowed)."""
    if not path.is_file():
        raise GalleryError(f"{path}: no such groups file")
    groups: dict[str, str] = {}
    with path.open(newline="") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or row[0].startswith("#"):
                continue
            if len(row) < 2 or not row[1].strip():
                raise GalleryError(f"{path}:{number}: expected 'person_id,group', got {','.join(row)!r}")
            if number == 1 and row[0] in ("identity", "person_id", "id") and row[1] == "group":
                continue
            groups[row[0].strip()] = row[1].strip()
    return groups


def load_templates(gallery_path: Path) -> tuple[Templates, str | None]:
    if not gallery_path.is_file():
        raise GalleryError(f"{gallery_path}: no such gallery")
    with Gallery(gallery_path) as gallery, gallery.snapshot() as db:
        rows = db.execute("SELECT person_id, embedding FROM templates ORDER BY person_id, id").fetchall()
        embedder = gallery.embedder_sha256
    vectors = (np.stack([np.frombuffer(r[1], dtype="<f4") for r in rows]) if rows
               else np.zeros((0, 0), dtype=np.float32))
    return Templates([str(r[0]) for r in rows], vectors), embedder


def cmd_fairness(args: argparse.Namespace, io: Output) -> int:
    manifest = Manifest.load(args.models)
    embedder = manifest.get("embedder", args.embedder)
    templates, gallery_embedder = load_templates(args.gallery)
    if gallery_embedder is not None and gallery_embedder != embedder.sha256:
        raise GalleryError(f"{args.gallery}: templates were made by another embedder (sha256 "
                           f"{gallery_embedder[:12]}…); pass --embedder NAME of the one the door uses")
    group_of = read_groups(args.groups)
    calibration = FairCalibration.load(manifest, embedder.sha256) if args.fair_calibration else None
    if args.threshold is not None:
        points = [(args.far, args.threshold)]
    else:
        table = table_for(manifest.directory, embedder.sha256, calibration.sha256 if calibration is not None else None)
        points = [(p.far, p.similarity) for p in table.points]
    report = group_rates(templates, group_of, points, calibration)
    persons = sorted(set(templates.person_ids))
    io.result({"gallery": str(args.gallery), "persons": len(persons), "templates": len(templates.person_ids),
               "fair_calibration": calibration is not None, **report})
    for line in report["warnings"]:
        io.message(line)
    if report["ungrouped_persons"]:
        io.message(f"{len(report['ungrouped_persons'])} enrolled person(s) have no group in {args.groups} "
                   "and are left out")
    return 0


def add_fairness_command(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("fairness", parents=parents,
                       help="per-group false match / non-match rates of the enrolled people (from their templates)")
    p.add_argument("--gallery", type=Path, required=True)
    p.add_argument("--groups", type=Path, required=True, help="CSV person_id,group (e.g. female/male)")
    p.set_defaults(func=cmd_fairness)
