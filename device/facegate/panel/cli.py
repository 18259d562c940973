"""``facegate gallery card``: set or clear the card number a person's recognition sends to an access panel."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from facegate.errors import GalleryError
from facegate.gallery.store import Gallery
from facegate.panel.wiegand import MAX_CARD_NUMBER


def card_number_arg(text: str) -> int:
    """argparse type: the card numbers the supported formats can carry (26-bit H10301 and 34-bit: 0-65535)."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= MAX_CARD_NUMBER:
        raise argparse.ArgumentTypeError(
            f"{value} does not fit the supported card formats (26-bit H10301 and 34-bit carry 0-{MAX_CARD_NUMBER})")
    return value


def _card_or_none(text: str) -> int | None:
    return None if text.lower() == "none" else card_number_arg(text)


def cmd_gallery_card(args: argparse.Namespace, io: Any) -> int:
    path: Path = args.gallery
    if not path.is_file():
        raise GalleryError(f"{path}: no such gallery (create one with 'facegate enroll')")
    with Gallery(path) as gallery:
        gallery.set_card_number(args.id, args.card_number)
        io.result({"person_id": args.id, "card_number": args.card_number, "gallery_version": gallery.version})
    return 0


def add_gallery_card_command(gallery: Any) -> None:
    p = gallery.add_parser("card", help="set a person's card number for an access panel (OSDP / Wiegand)")
    p.add_argument("--gallery", type=Path, required=True)
    p.add_argument("id")
    p.add_argument("card_number", type=_card_or_none, help=f"0-{MAX_CARD_NUMBER}, or 'none' to clear")
    p.set_defaults(func=cmd_gallery_card)
