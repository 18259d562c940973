"""A person's consent to biometric processing (GDPR Art. 9(2)(a)): when, how, and which notice they were given.

Kept in the person's metadata as ``metadata["consent"]`` (sealed with the rest of it, carried by fleet sync
bundles unchanged): ``{"at": ISO-8601 with zone, "how": "signed form", "notice_version": "2026-03"}``. With
``[privacy] require_consent = true`` the gallery refuses to hold a person without a valid one, whichever way
they arrive (CLI, console, bulk, bundles).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from facegate.errors import GalleryError

__all__ = ["check_consent", "consent_of", "make_consent"]

MAX_TEXT = 200


def check_consent(value: object, who: str = "consent") -> dict[str, str]:
    """The consent in canonical form; raises :class:`GalleryError` naming what is wrong."""
    if not isinstance(value, dict):
        raise GalleryError(f"{who}: must be an object with at, how and notice_version")
    unknown = set(value) - {"at", "how", "notice_version"}
    if unknown:
        raise GalleryError(f"{who}: unknown field(s) {sorted(unknown)} (at, how, notice_version)")
    out: dict[str, str] = {}
    for field in ("how", "notice_version"):
        text = value.get(field)
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
            raise GalleryError(f"{who}.{field}: must be text of 1-{MAX_TEXT} characters")
        out[field] = text.strip()
    at = value.get("at")
    try:
        stamp = dt.datetime.fromisoformat(str(at).replace("Z", "+00:00")) if isinstance(at, str) else None
    except ValueError:
        stamp = None
    if stamp is None or stamp.tzinfo is None:
        raise GalleryError(f"{who}.at: {at!r} must be an ISO-8601 time with a zone, e.g. 2026-03-01T09:00:00Z")
    out["at"] = stamp.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return out


def make_consent(how: str, notice_version: str, at: str | None = None) -> dict[str, str]:
    """A consent given now (or at ``at``), validated."""
    when = at or dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    return check_consent({"at": when, "how": how, "notice_version": notice_version})


def consent_of(metadata: dict[str, Any] | None) -> dict[str, str] | None:
    """The valid consent in a person's metadata, or None."""
    value = (metadata or {}).get("consent")
    try:
        return None if value is None else check_consent(value)
    except GalleryError:
        return None
