"""Journal rows as CSV for a spreadsheet: fixed leading columns, everything else as one JSON ``details`` cell.

Names are typed by people and end up in Excel or LibreOffice: a cell that starts with ``=``, ``+``, ``-``, ``@``
or a control character would be run as a formula there, so such text cells get a leading ``'`` (the OWASP
"CSV injection" advice). Numbers are written as they are.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from typing import Any, TextIO

__all__ = ["CSV_COLUMNS", "write_csv"]

CSV_COLUMNS = ("ts", "type", "person_id", "name", "reason", "similarity", "event_id", "seq", "device_id",
               "journal_id", "details")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return "'" + text if text.startswith(_FORMULA_START) else text


def write_csv(events: Iterable[dict[str, Any]], out: TextIO, *, header: bool = True) -> int:
    """Write ``events`` (as :meth:`Journal.query` returns them) to ``out``; returns rows written."""
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(CSV_COLUMNS)
    fixed = CSV_COLUMNS[:-1]
    n = 0
    for event in events:
        details = {k: v for k, v in event.items() if k not in fixed}
        writer.writerow([*(_cell(event.get(c)) for c in fixed),
                         _cell(json.dumps(details, ensure_ascii=False, sort_keys=True) if details else None)])
        n += 1
    return n
