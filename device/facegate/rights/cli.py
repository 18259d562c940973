"""The privacy commands of the CLI (docs/privacy.md): ``facegate gallery decrypt`` and ``subject-export``, and
the consent options of ``facegate enroll``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from facegate.errors import FacegateError, GalleryError
from facegate.gallery.store import Gallery
from facegate.journal.store import Journal
from facegate.privacy.consent import make_consent
from facegate.rights.decrypt import decrypt_gallery
from facegate.rights.subject import subject_export

__all__ = ["add_consent_options", "add_gallery_privacy_commands", "consent_arg"]


def add_consent_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--consent-how", default=None,
                        help="how the person consented (e.g. 'signed form'); with --consent-notice")
    parser.add_argument("--consent-notice", default=None, help="the version of the privacy notice they were given")
    parser.add_argument("--consent-at", default=None, help="when (ISO-8601 with zone; default: now)")


def consent_arg(args: argparse.Namespace) -> dict[str, str] | None:
    """The consent the options give, or None; half of it is an error, not a silent omission."""
    how, notice, at = (getattr(args, k, None) for k in ("consent_how", "consent_notice", "consent_at"))
    if how is None and notice is None and at is None:
        return None
    if how is None or notice is None:
        raise FacegateError("consent needs both --consent-how and --consent-notice")
    return make_consent(how, notice, at)


def cmd_gallery_decrypt(args: argparse.Namespace, io: Any) -> int:
    if not args.gallery.is_file():
        raise GalleryError(f"{args.gallery}: no such gallery")
    with Gallery(args.gallery) as gallery:  # the key is found where the gallery recorded it
        persons = decrypt_gallery(gallery, args.out)
    io.result({"gallery": str(args.gallery), "out": str(args.out), "persons": persons})
    io.message(f"{args.out}: a PLAIN copy (names, card numbers, face templates): keep it owner-only, delete it "
               "when done")
    return 0


def cmd_subject_export(args: argparse.Namespace, io: Any) -> int:
    gallery_path, journal_path = args.gallery, args.journal
    if args.config is not None:
        from facegate.config import load_config

        config = load_config(args.config)
        gallery_path = gallery_path or config.gallery_path
        journal_path = journal_path or (config.journal_path if config.journal_path.is_file() else None)
    if gallery_path is None:
        raise FacegateError("subject-export needs --gallery or --config")
    if not Path(gallery_path).is_file():
        raise GalleryError(f"{gallery_path}: no such gallery")
    with Gallery(gallery_path) as gallery:
        journal = Journal(journal_path, readonly=True) if journal_path is not None else None
        try:
            data = subject_export(gallery, args.id, journal, with_vectors=args.with_vectors)
        finally:
            if journal is not None:
                journal.close()
    io.out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return 0


def add_gallery_privacy_commands(gallery: Any) -> None:
    p = gallery.add_parser("decrypt", help="write a plain copy of an encrypted gallery (needs its key)")
    p.add_argument("--gallery", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="the plain copy (a new file)")
    p.set_defaults(func=cmd_gallery_decrypt)
    p = gallery.add_parser("subject-export", help="everything the door holds about one person, as JSON")
    p.add_argument("--id", required=True)
    p.add_argument("--gallery", type=Path, default=None)
    p.add_argument("--journal", type=Path, default=None, help="the journal (default: the config's, if any)")
    p.add_argument("--config", type=Path, default=None, help="find the gallery and journal from the door's config")
    p.add_argument("--with-vectors", action="store_true", help="include the template vectors (biometric data)")
    p.set_defaults(func=cmd_subject_export)
