"""``facegate gallery negative add|list|remove``: "This was not them" from the command line (docs/decision.md).

``add`` marks faces that the door took for a person as NOT that person: the face behind a grant
(``--event EVENT_ID``, kept in the state directory for ``recognition.keep_grant_embeddings_days``) or the faces
of photos (``--person ID IMAGE...``). Each mark is a ``false_accept_reported`` event, written to the door's
outbox (delivered by the running service over MQTT) and its journal. ``--config`` finds the state directory,
device id and journal; without it they are taken beside the gallery (device id ``door``), and where no door
has run (an admin machine: no ``outbox.db`` there) the mark is stored and no event is written.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from facegate.base.output import Output
from facegate.config import Config, load_config
from facegate.errors import FacegateError, GalleryError

__all__ = ["add_gallery_negative_commands"]

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def _door(args: argparse.Namespace) -> Config:
    if args.config is not None:
        return load_config(args.config)
    return Config(state_dir=Path(args.gallery).resolve().parent)


def _open_gallery(path: Path) -> Any:
    from facegate.gallery.store import Gallery

    if not Path(path).is_file():
        raise GalleryError(f"{path}: no such gallery (create one with 'facegate enroll')")
    return Gallery(path)


def report(config: Config, fields: dict[str, Any]) -> dict[str, Any] | None:
    """Emit ``false_accept_reported`` into the door's outbox and journal; returns the event (None: not stored)."""
    from facegate.events.emitter import EventEmitter
    from facegate.events.outbox import Outbox
    from facegate.gallery.negatives import FALSE_ACCEPT_EVENT

    with Outbox(config.state_dir / "outbox.db", config.outbox.max_events) as outbox:
        emitter = EventEmitter(config.device_id, outbox)
        journal = None
        if config.journal.enabled:
            from facegate.journal.store import Journal

            journal = Journal(config.journal_path, config.journal.max_events, config.journal.retention_days)
            emitter.add_listener(journal.record)
        try:
            return emitter.emit(FALSE_ACCEPT_EVENT, **fields)
        finally:
            if journal is not None:
                journal.close()


def cmd_negative_add(args: argparse.Namespace, io: Output, make_pipeline: Callable[[argparse.Namespace], Any]) -> int:
    from facegate.base.imageio import read_image
    from facegate.errors import ImageError
    from facegate.gallery.negatives import mark_event, mark_images
    from facegate.recognition.grant_embeddings import FILE_NAME, GrantEmbeddings

    if (args.event is None) == (not args.images):
        raise FacegateError("give either --event EVENT_ID or --person ID with IMAGE files, not both")
    config = _door(args)
    with _open_gallery(args.gallery) as gallery:
        embedder = gallery.embedder_sha256
        if embedder is None:
            raise GalleryError(f"{args.gallery}: no embedder recorded (enrol someone first)")
        if args.event is not None:
            path = config.state_dir / FILE_NAME
            if not path.is_file():
                raise FacegateError(f"{path}: no grant faces are kept here (pass the door's --config; "
                                    "recognition.keep_grant_embeddings_days must be above 0)")
            # the door seals its grant faces with its gallery's key (facegate.privacy)
            with GrantEmbeddings(path, config.recognition.keep_grant_embeddings_days, sealer=gallery.sealer) as grants:
                fields = mark_event(gallery, grants, args.event, embedder, person_id=args.person)
            fields["source"] = "cli"
        else:
            if args.person is None:
                raise FacegateError("--person ID is needed with IMAGE files: whom were they wrongly taken for?")
            pipeline = make_pipeline(args)
            pipeline_sha = pipeline.embedder_sha256
            if pipeline_sha != embedder:
                raise GalleryError(f"{args.gallery} was enrolled with embedder {embedder[:12]}…, the loaded "
                                   f"embedder is {pipeline_sha[:12]}…")
            faces: list[tuple[str, np.ndarray]] = []
            for image in args.images:
                try:
                    results = pipeline.process(read_image(image), largest_only=True)
                except ImageError as exc:
                    raise FacegateError(f"{image}: {exc}; nothing was marked") from None
                if not results or results[0].embedding is None:
                    raise FacegateError(f"{image}: no face found; nothing was marked")
                faces.append((Path(image).name, results[0].embedding))
            fields = mark_images(gallery, args.person, faces, embedder, dim=pipeline.embedder.dim)
            fields["source"] = "cli"
    event = None
    if args.config is not None or (config.state_dir / "outbox.db").is_file():
        event = report(config, fields)
        if event is None:
            io.message("the mark is stored, but the false_accept_reported event could not be (outbox full?)")
    else:  # an admin machine: no door's outbox or journal beside the gallery to report into
        io.message(f"no door state in {config.state_dir} (no outbox.db): the mark is stored, the "
                   "false_accept_reported event is not; pass the door's --config to report it there")
    io.result({**fields, "event_id": None if event is None else event["event_id"]})
    return EXIT_OK


def cmd_negative_list(args: argparse.Namespace, io: Output) -> int:
    with _open_gallery(args.gallery) as gallery:
        rows = gallery.negatives(args.person)
        for row in rows:
            io.result(row)
        io.message(f"{len(rows)} negative templates")
    return EXIT_OK


def cmd_negative_remove(args: argparse.Namespace, io: Output) -> int:
    with _open_gallery(args.gallery) as gallery:
        person = gallery.remove_negative(args.id)
        io.result({"negative_id": args.id, "person_id": person, "gallery_version": gallery.version})
    return EXIT_OK


def add_gallery_negative_commands(gallery_sub: Any, models: argparse.ArgumentParser,
                                  make_pipeline: Callable[[argparse.Namespace], Any]) -> None:
    neg = gallery_sub.add_parser(
        "negative", help="'This was not them': faces wrongly taken for a person (docs/decision.md)"
    ).add_subparsers(dest="negative_action", required=True)
    p = neg.add_parser("add", parents=[models], help="mark a grant (--event) or photos (--person ID IMAGE...) "
                                                     "as NOT the person")
    p.add_argument("--gallery", type=Path, required=True)
    p.add_argument("--person", default=None, help="the person the face was wrongly taken for")
    p.add_argument("--event", default=None, help="the access_granted event id (from the journal)")
    p.add_argument("--config", type=Path, default=None,
                   help="the door's config: its state dir (kept grant faces, outbox, journal) and device id")
    p.add_argument("images", nargs="*", type=Path, help="photos of the face that is NOT the person")
    p.set_defaults(func=lambda a, io: cmd_negative_add(a, io, make_pipeline))
    p = neg.add_parser("list", help="negative templates (ids, person, source, event)")
    p.add_argument("--gallery", type=Path, required=True)
    p.add_argument("--person", default=None, help="only this person's")
    p.set_defaults(func=cmd_negative_list)
    p = neg.add_parser("remove", help="delete one negative template by id (from 'negative list')")
    p.add_argument("--gallery", type=Path, required=True)
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_negative_remove)
