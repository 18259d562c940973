"""Time bounds as people type them: ISO-8601 (``2026-12-01``, ``2026-12-01T08:00``, ``...Z``, ``...+01:00``) or
relative to now (``90s``, ``30m``, ``24h``, ``7d``, ``2w``), and ``now``.

A time without a zone is the door's local time (a site manager asking "since 08:00" means the clock on the
wall); ``Z`` or an offset is honoured. A date alone is local midnight. Results are timezone-aware datetimes.
"""

from __future__ import annotations

import datetime as dt
import re

__all__ = ["parse_time"]

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}


def parse_time(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """``text`` as an aware datetime; ``ValueError`` saying what is accepted when it is neither form."""
    current = now or dt.datetime.now(dt.UTC)
    value = text.strip()
    if value.lower() == "now":
        return current
    match = _RELATIVE.match(value)
    if match:
        try:
            return current - dt.timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()])
        except OverflowError:
            raise ValueError(f"{text!r} is too far back to be a time") from None
    try:
        stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO-8601 (2026-12-01, 2026-12-01T08:00, 2026-12-01T08:00Z) "
            "or an age like 90s, 30m, 24h, 7d, 2w"
        ) from None
    return stamp.astimezone() if stamp.tzinfo is None else stamp
