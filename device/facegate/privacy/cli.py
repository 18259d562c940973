"""``facegate gallery decrypt``: the privacy commands of the CLI (docs/privacy.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from facegate.errors import GalleryError
from facegate.gallery.store import Gallery
from facegate.privacy.decrypt import decrypt_gallery

__all__ = ["add_gallery_privacy_commands"]


def cmd_gallery_decrypt(args: argparse.Namespace, io: Any) -> int:
    if not args.gallery.is_file():
        raise GalleryError(f"{args.gallery}: no such gallery")
    with Gallery(args.gallery) as gallery:  # the key is found where the gallery recorded it
        persons = decrypt_gallery(gallery, args.out)
    io.result({"gallery": str(args.gallery), "out": str(args.out), "persons": persons})
    io.message(f"{args.out}: a PLAIN copy (names, card numbers, face templates): keep it owner-only, delete it "
               "when done")
    return 0


def add_gallery_privacy_commands(gallery: Any) -> None:
    p = gallery.add_parser("decrypt", help="write a plain copy of an encrypted gallery (needs its key)")
    p.add_argument("--gallery", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="the plain copy (a new file)")
    p.set_defaults(func=cmd_gallery_decrypt)
