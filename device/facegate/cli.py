"""The ``facegate`` command: JSON results on stdout, human messages on stderr.

Exit codes are part of the interface: 0 ok, 2 bad input (the message names the file and the reason),
1 for anything unexpected.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from facegate import __version__
from facegate.base.imageio import read_image
from facegate.base.output import Output
from facegate.config import EXIT_CONFIG, Config, ConfigError, load_config
from facegate.enrolment.negatives_cli import add_gallery_negative_commands
from facegate.enrolment.photo import assess
from facegate.errors import FacegateError, GalleryError, ImageError
from facegate.events.ha_cli import add_code_commands
from facegate.fairness.cli import add_fairness_command
from facegate.fleet.cli import add_fleet_commands
from facegate.gallery.store import Gallery, NewTemplate
from facegate.journal.cli import (
    add_events_command,
    add_purge_options,
    outbox_target,
    purge_events,
    purge_target,
    scrub_outbox,
)
from facegate.panel.cli import add_gallery_card_command, card_number_arg
from facegate.recognition.calibration import FairCalibration
from facegate.recognition.thresholds import DEFAULT_FAR, ForeignTableError, table_for
from facegate.rights.cli import add_consent_options, add_gallery_privacy_commands, consent_arg
from facegate.sync.cli import add_gallery_sync_commands
from facegate.vision.models import Manifest
from facegate.vision.pipeline import FacePipeline, FaceResult, PipelineOptions
from facegate.vision.runtime import without_delegate_notice
from facegate.web.users_cli import add_user_commands

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2


def _pipeline(args: argparse.Namespace) -> FacePipeline:
    options = PipelineOptions(threads=args.threads, detector=args.detector, embedder=args.embedder)
    with without_delegate_notice():  # LiteRT's "Created ... XNNPACK delegate" INFO line (facegate/vision/runtime.py)
        return FacePipeline(Manifest.load(args.models), options)


def _calibration(args: argparse.Namespace, pipeline: FacePipeline) -> FairCalibration | None:
    """The fair score calibration with ``--fair-calibration``, as a door with ``recognition.fair_calibration``."""
    if not args.fair_calibration:
        return None
    return FairCalibration.load(pipeline.manifest, pipeline.embedder_sha256)


def _thresholds(args: argparse.Namespace, pipeline: FacePipeline,
                calibration: FairCalibration | None = None) -> tuple[float, float | None]:
    """The match threshold and the false-match rate it stands for (None when given by hand)."""
    if args.threshold is not None:
        return args.threshold, None
    try:
        table = table_for(pipeline.manifest.directory, pipeline.embedder_sha256,
                          calibration.sha256 if calibration is not None else None)
    except ForeignTableError as exc:
        raise FacegateError(f"{exc}; pass --threshold or re-run tools/eval/evaluate.py --write-thresholds") from None
    return table.for_far(args.far), args.far


def _face_json(result: FaceResult, with_embedding: bool) -> dict[str, Any]:
    det = result.detection
    obj: dict[str, Any] = {
        "box": det.box_int(),
        "score": round(det.score, 4),
        "quality": {**result.quality.as_dict(), "failures": result.failures},
    }
    if with_embedding and result.embedding is not None:
        obj["embedding"] = [round(float(v), 6) for v in result.embedding]
    return obj


class ImageRun:
    """The per-image loop of ``embed`` and ``identify``: an unreadable image is reported (a result naming it and a
    message) and counted, and the run goes on with the next; any failure makes the exit code 2."""

    def __init__(self, pipeline: FacePipeline, io: Output, all_faces: bool) -> None:
        self.pipeline, self.io, self.all_faces = pipeline, io, all_faces
        self.failed = 0

    def faces(self, paths: list[Path]) -> Iterator[tuple[Path, list[FaceResult]]]:
        for path in paths:
            try:
                results = self.pipeline.process(read_image(path), largest_only=not self.all_faces)
            except ImageError as exc:
                self.failed += 1
                self.io.result({"image": str(path), "error": str(exc)})
                self.io.message(str(exc))
                continue
            yield path, results

    @property
    def exit_code(self) -> int:
        return EXIT_BAD_INPUT if self.failed else EXIT_OK


def cmd_embed(args: argparse.Namespace, io: Output) -> int:
    run = ImageRun(_pipeline(args), io, args.all_faces)
    for image_path, results in run.faces(args.images):
        if not results:
            run.failed += 1
            io.result({"image": str(image_path), "error": "no face found"})
            io.message(f"{image_path}: no face found")
        elif args.all_faces:
            io.result({"image": str(image_path), "faces": [_face_json(r, True) for r in results]})
        else:
            io.result({"image": str(image_path), **_face_json(results[0], True)})
    return run.exit_code


def _enroll_one(pipeline: FacePipeline, path: Path, largest: bool) -> tuple[NewTemplate | None, str]:
    """A template from one enrolment photo, or the reason it was refused."""
    try:
        image = read_image(path)
    except ImageError as exc:
        return None, str(exc)
    return assess(pipeline, image, path.name, largest)


def cmd_enroll(args: argparse.Namespace, io: Output) -> int:
    if args.folder is not None or args.zip is not None:  # bulk: one sub-folder per person (issue 9)
        from facegate.enrolment.cli import cmd_enroll_bulk

        return cmd_enroll_bulk(args, io, _pipeline(args))
    if not args.id or not args.images:
        raise FacegateError("enroll needs --id ID and at least one IMAGE (or --folder DIR / --zip FILE)")
    _refuse_existing_without_update(args)
    pipeline = _pipeline(args)
    accepted: list[str] = []
    rejected: list[dict[str, str]] = []
    templates: list[NewTemplate] = []
    for path in args.images:
        template, reason = _enroll_one(pipeline, path, args.largest)
        if template is None:
            rejected.append({"image": str(path), "reason": reason})
            io.message(f"{path}: rejected: {reason}")
        else:
            templates.append(template)
            accepted.append(str(path))
    if not templates:
        io.result({"person_id": args.id, "accepted": [], "rejected": rejected, "templates_added": 0})
        io.message(f"no image of '{args.id}' was accepted; nothing enrolled")
        return EXIT_BAD_INPUT
    metadata = json.loads(args.metadata) if args.metadata else None
    with Gallery(args.gallery) as gallery:
        added = gallery.enroll(args.id, templates, pipeline.embedder_sha256, name=args.name, metadata=metadata,
                               card_number=args.card_number, dim=pipeline.embedder.dim, consent=consent_arg(args))
        version = gallery.version
    io.result({"person_id": args.id, "accepted": accepted, "rejected": rejected, "templates_added": added,
               "gallery_version": version})
    return EXIT_OK


def _refuse_existing_without_update(args: argparse.Namespace) -> None:
    """An id already in the gallery is changed only on request: a typo'd or reused id would otherwise rename
    that person (and add someone else's face to them) without a word."""
    if args.update or not args.gallery.is_file():
        return
    with Gallery(args.gallery) as gallery:
        existing = gallery.person(args.id)
    if existing is not None:
        as_name = f" as {existing['name']!r}" if existing.get("name") else ""
        raise FacegateError(f"{args.gallery}: person {args.id!r} is already enrolled{as_name}; nothing changed. "
                            "Add --update to add these photos to them (and set the --name, --metadata or "
                            "--card-number given), or choose another --id")


def _open_existing_gallery(path: Path) -> Gallery:
    if not path.is_file():
        raise GalleryError(f"{path}: no such gallery (create one with 'facegate enroll')")
    return Gallery(path)


def cmd_identify(args: argparse.Namespace, io: Output) -> int:
    pipeline = _pipeline(args)
    calibration = _calibration(args, pipeline)
    threshold, far = _thresholds(args, pipeline, calibration)
    with _open_existing_gallery(args.gallery) as gallery:
        gallery.check_embedder(pipeline.embedder_sha256)
        index = gallery.build_index(calibration)
    if index.templates == 0:
        raise GalleryError(f"{args.gallery}: gallery is empty (enrol someone first)")
    run = ImageRun(pipeline, io, args.all_faces)
    for path, results in run.faces(args.images):
        faces = []
        for r in results:
            assert r.embedding is not None
            top = index.search(r.embedding, k=2)
            best = top[0]
            matched = best.similarity >= threshold
            faces.append({
                "box": r.detection.box_int(),
                "person_id": best.person_id if matched else None,
                "similarity": round(best.similarity, 4),
                "candidate": best.person_id,
                "margin": round(best.similarity - top[1].similarity, 4) if len(top) > 1 else None,
                "quality_failures": r.failures,
            })
        io.result({"image": str(path), "faces": faces, "threshold": round(threshold, 4), "far": far,
                   "fair_calibration": calibration is not None})
    return run.exit_code


def cmd_verify(args: argparse.Namespace, io: Output) -> int:
    pipeline = _pipeline(args)
    calibration = _calibration(args, pipeline)
    threshold, far = _thresholds(args, pipeline, calibration)
    vectors: list[np.ndarray] = []
    for path in (args.a, args.b):
        results = pipeline.process(read_image(path), largest_only=True)
        if not results or results[0].embedding is None:
            raise ImageError(f"{path}: no face found")
        vectors.append(results[0].embedding)
    similarity = (float(vectors[0] @ vectors[1]) if calibration is None
                  else calibration.score(vectors[0], vectors[1]))
    io.result({"similarity": round(similarity, 4), "match": similarity >= threshold,
               "threshold": round(threshold, 4), "far": far, "fair_calibration": calibration is not None})
    return EXIT_OK


def cmd_gallery_list(args: argparse.Namespace, io: Output) -> int:
    with _open_existing_gallery(args.gallery) as gallery:
        for person in gallery.persons():
            io.result(person)
        io.message(f"gallery version {gallery.version}, {len(gallery.persons())} persons")
    return EXIT_OK


def cmd_gallery_info(args: argparse.Namespace, io: Output) -> int:
    """Size and the match threshold a door with this config derives for it (recognition.fpir / far)."""
    from facegate.wiring.threshold_info import gallery_threshold

    config = load_config(args.config) if args.config else Config()
    if args.models is not None:
        config = config.model_copy(update={"models": config.models.model_copy(update={"dir": args.models})})
    if args.gallery is None and args.config is None:
        raise FacegateError("gallery info: pass --gallery DB or --config TOML")
    path = args.gallery or config.gallery_path
    if not path.is_file():
        raise GalleryError(f"{path}: no such gallery (create one with 'facegate enroll')")
    derived, version = gallery_threshold(config, path)
    io.result({"gallery": str(path), "version": version, "persons": derived.persons,
               "templates": derived.templates, "recognition": derived.as_dict()})
    if derived.warning:
        io.message(f"warning: {derived.warning}")
    return EXIT_OK


def cmd_gallery_remove(args: argparse.Namespace, io: Output) -> int:
    journal = purge_target(args)  # --purge-events / --anonymise-events: found before anything is removed
    with _open_existing_gallery(args.gallery) as gallery:
        try:
            removed = gallery.remove(args.id)
        except GalleryError:
            if journal is None:
                raise
            removed = 0  # removed earlier: their journal entries can still be purged
            io.message(f"no person '{args.id}' in gallery {args.gallery}; purging their journal entries only")
        result: dict[str, Any] = {"person_id": args.id, "templates_removed": removed,
                                  "gallery_version": gallery.version}
        if journal is not None:  # an erasure: not even the sync change log or the WAL may name them
            result["sync_history_erased"] = gallery.erase_history(args.id)
    if journal is not None:
        result.update(purge_events(journal, args.id, args.anonymise_events))
        result.update(scrub_outbox(outbox_target(args)))
        result["grant_embeddings_purged"] = purge_grant_embeddings(outbox_target(args).parent, args.id)
    io.result(result)
    return EXIT_OK


def purge_grant_embeddings(state_dir: Path, person_id: str) -> int:
    """Erasure: the faces kept behind the person's grants ("This was not them") go with their events."""
    from facegate.recognition.grant_embeddings import FILE_NAME, GrantEmbeddings

    path = state_dir / FILE_NAME
    if not path.is_file():
        return 0
    with GrantEmbeddings(path, 0.0) as grants:
        return grants.purge_person(person_id)


def _load_config(args: argparse.Namespace) -> Config:
    overrides: dict[str, object] = {}
    if getattr(args, "source", None):
        overrides["camera.source"] = args.source
    return load_config(args.config, overrides)


def cmd_run(args: argparse.Namespace, io: Output) -> int:
    from facegate.process.logs import setup_logging
    from facegate.service import Service
    from facegate.wiring.startup import log_startup_notes

    config = _load_config(args)
    setup_logging(config.log_level)
    service = Service(config)
    log_startup_notes(config)  # the console's address and fingerprint; what is off (facegate/wiring/startup.py)
    service.install_signal_handlers()
    return service.run()


def cmd_doctor(args: argparse.Namespace, io: Output) -> int:
    from facegate.doctor import run_checks

    checks = run_checks(_load_config(args))
    for check in checks:
        io.result(check.as_dict())
        if not check.ok:
            warn = " (warning)" if args.installer and not check.blocking else ""
            io.message(f"{check.name}{warn}: {check.detail} -> {check.fix}")
    failed = [c for c in checks if not c.ok and (c.blocking or not args.installer)]
    return EXIT_OK if not failed else EXIT_ERROR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facegate", description="Face access control for unattended doors.")
    parser.add_argument("--version", action="version", version=f"facegate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    models = argparse.ArgumentParser(add_help=False)
    models.add_argument("--models", type=Path, default=None, help="models directory (default: the shipped one)")
    models.add_argument("--threads", type=int, default=2, help="interpreter threads (default 2)")
    models.add_argument("--detector", default=None, help="detector model name from the manifest")
    models.add_argument("--embedder", default=None, help="embedder model name from the manifest")

    match = argparse.ArgumentParser(add_help=False)
    match.add_argument("--threshold", type=float, default=None, help="cosine similarity needed for a match")
    match.add_argument("--far", type=float, default=DEFAULT_FAR,
                       help=f"false-accept rate to pick the threshold for (default {DEFAULT_FAR:g})")
    match.add_argument("--fair-calibration", dest="fair_calibration", action="store_true", default=False,
                       help="score as a door with recognition.fair_calibration = true (default: raw cosine)")
    match.add_argument("--no-fair-calibration", dest="fair_calibration", action="store_false",
                       help="raw cosine similarity and its thresholds (the default, as recognition.fair_calibration)")

    p = sub.add_parser("embed", parents=[models], help="embedding of the largest face in each image")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--all-faces", action="store_true", help="every face, not just the largest")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("enroll", parents=[models], help="add a person's photos to a gallery")
    p.add_argument("--gallery", type=Path, required=True)
    p.add_argument("--id", default=None, help="the person's id (not with --folder/--zip)")
    p.add_argument("--name", default=None)
    p.add_argument("--metadata", default=None, help="JSON object stored with the person")
    p.add_argument("--card-number", type=card_number_arg, default=None,
                   help="credential sent to an access panel (OSDP / Wiegand) when this person is recognised")
    p.add_argument("--largest", action="store_true", help="accept photos with several faces, using the largest")
    add_consent_options(p)  # --consent-how, --consent-notice, --consent-at (docs/privacy.md)
    p.add_argument("--update", action="store_true",
                   help="the --id is already enrolled: add these photos to them (refused without this flag)")
    bulk = p.add_mutually_exclusive_group()
    bulk.add_argument("--folder", type=Path, default=None,
                      help="bulk: one sub-folder per person (folder name = id), optional people.csv id,name,groups")
    bulk.add_argument("--zip", type=Path, default=None, help="bulk: the same layout in a zip archive")
    p.add_argument("--quiet", action="store_true", help="bulk: no progress bar")
    p.add_argument("images", nargs="*", type=Path)
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser("identify", parents=[models, match], help="who is in each image")
    p.add_argument("--gallery", type=Path, required=True)
    p.add_argument("--all-faces", action="store_true", help="every face, not just the largest")
    p.add_argument("images", nargs="+", type=Path)
    p.set_defaults(func=cmd_identify)

    p = sub.add_parser("verify", parents=[models, match], help="are A and B the same person")
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.set_defaults(func=cmd_verify)

    add_fairness_command(sub, [models, match])  # facegate fairness --gallery DB --groups CSV (issue 11)

    p = sub.add_parser("run", help="run the door service")
    p.add_argument("--config", type=Path, required=True, help="TOML config file")
    p.add_argument("--source", default=None, help="override camera.source (e.g. replay:DIR, 0, rtsp://...)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("doctor", help="check camera, GPIO, models, gallery, broker and clock")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--installer", action="store_true",
                   help="fail only on checks the install must fix (numpy, models, runtime, camera/pin library, groups)")
    p.set_defaults(func=cmd_doctor)

    gallery = sub.add_parser("gallery", help="inspect and edit a gallery").add_subparsers(dest="action",
                                                                                          required=True)
    p = gallery.add_parser("list", help="persons and their template counts")
    p.add_argument("--gallery", type=Path, required=True)
    p.set_defaults(func=cmd_gallery_list)
    p = gallery.add_parser("info", help="size, and the match threshold a door derives for it (recognition.fpir)")
    p.add_argument("--gallery", type=Path, default=None, help="default: the config's gallery")
    p.add_argument("--config", type=Path, default=None, help="the door's TOML config (default: built-in defaults)")
    p.add_argument("--models", type=Path, default=None, help="models directory (default: the config's)")
    p.set_defaults(func=cmd_gallery_info)
    p = gallery.add_parser("remove", help="remove a person and every template of theirs")
    p.add_argument("--gallery", type=Path, required=True)
    p.add_argument("id")
    add_purge_options(p)  # --purge-events / --anonymise-events, --config / --journal
    p.set_defaults(func=cmd_gallery_remove)
    add_gallery_card_command(gallery)  # card: the person's card number for an access panel
    add_gallery_sync_commands(gallery)  # keygen, export, publish, apply, export-templates, import-templates
    add_gallery_negative_commands(gallery, models, _pipeline)  # negative add|list|remove: "This was not them"
    add_gallery_privacy_commands(gallery)  # decrypt (docs/privacy.md)
    add_events_command(sub)  # facegate events: the access journal
    add_code_commands(sub)  # code hash: Home Assistant unlock codes
    add_user_commands(sub)  # web console accounts: user add|passwd|remove|list
    add_fleet_commands(sub)  # fleet serve|keys|user: the admin side of a multi-door site (docs/fleet.md)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    io = Output(out or sys.stdout, err or sys.stderr)
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace, Output], int] = args.func
    try:
        return func(args, io)
    except ConfigError as exc:
        io.message(f"config error: {exc}")
        return EXIT_CONFIG
    except FacegateError as exc:
        io.message(str(exc))
        return EXIT_BAD_INPUT
    except json.JSONDecodeError as exc:
        io.message(f"--metadata is not valid JSON: {exc}")
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
