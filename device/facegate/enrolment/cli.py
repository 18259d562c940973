"""``facegate enroll --folder DIR`` / ``--zip FILE``: bulk enrolment on the command line.

The summary (every refused image with its reason) is one JSON object on stdout; a progress bar goes to stderr
(a one-line bar on a terminal, a line per tenth of the work otherwise, so a log stays readable). Exit 0 when
every person found was enrolled, 2 when someone was not (no photo accepted), nothing was found, or the folder,
archive or people.csv cannot be used.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, TextIO

from facegate.base.output import Output
from facegate.errors import FacegateError

__all__ = ["ProgressBar", "cmd_enroll_bulk"]

EXIT_OK, EXIT_BAD_INPUT = 0, 2


class ProgressBar:
    """``[#####-----] 12/40 alice/3.jpg`` redrawn in place on a terminal; plain lines at each tenth otherwise."""

    WIDTH = 30

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._last_tenth = -1
        self._last_draw = 0.0

    def __call__(self, done: int, total: int | None, source: str) -> None:
        if self.tty:
            now = time.monotonic()
            if now - self._last_draw < 0.05 and done != total:
                return
            self._last_draw = now
            if total:
                filled = self.WIDTH * done // total
                bar = f"[{'#' * filled}{'-' * (self.WIDTH - filled)}] {done}/{total}"
            else:
                bar = f"{done}"
            self.stream.write(f"\r\x1b[K{bar} {source[-40:]}")
            if done == total:
                self.stream.write("\n")
        else:
            tenth = 10 * done // total if total else done // 50
            if tenth != self._last_tenth or done == total:
                self._last_tenth = tenth
                self.stream.write(f"facegate: enrolling: {done}/{total if total else '?'} photos\n")
        self.stream.flush()


def cmd_enroll_bulk(args: argparse.Namespace, io: Output, pipeline: Any) -> int:
    from facegate.enrolment.bulk import enrol_photos
    from facegate.enrolment.sources import FolderPhotos, ZipPhotos
    from facegate.gallery.store import Gallery

    if args.id or args.images or args.name or args.metadata:
        raise FacegateError("--folder/--zip take the people from the folder: drop --id, --name, --metadata and "
                            "the image arguments")
    source: Any = FolderPhotos(args.folder) if args.folder is not None else ZipPhotos(args.zip)
    try:
        if source.total == 0:
            raise FacegateError(f"{args.folder or args.zip}: no photos found (expected one sub-folder per person)")
        with Gallery(args.gallery) as gallery:
            result = enrol_photos(pipeline, gallery, source, source.people, largest=args.largest,
                                  total=source.total, progress=None if args.quiet else ProgressBar(io.err))
    finally:
        if isinstance(source, ZipPhotos):
            source.close()
    for item in result.refused:
        io.message(f"{item['image']}: rejected: {item['reason']}")
    for person in result.persons_refused:
        io.message(f"{person['person_id']}: not enrolled: {person['reason']}")
    if result.csv_without_photos:
        io.message(f"people.csv names {len(result.csv_without_photos)} person(s) without photos: "
                   + ", ".join(result.csv_without_photos[:10]))
    io.result(result.as_dict())
    return EXIT_OK if result.ok else EXIT_BAD_INPUT
