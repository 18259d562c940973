"""Journal rows as CSV for a spreadsheet: fixed leading columns, everything else as one JSON ``details`` cell.

Names are typed by people and end up in Excel or LibreOffice: a cell that starts with ``=``, ``+``, ``-``, ``@``
or a control character would be run as a formula there, so such text cells get a leading ``'`` (the OWASP
"CSV injection" advice). Spreadsheets trim leading blanks on import, so a formula character after spaces, tabs,
line breaks, no-break or zero-width spaces (``" =HYPERLINK(...)"``) counts too, and so do the full-width forms
some spreadsheets accept (U+FF1D and friends). Numbers are written as they are.
"""

from __future__ import annotations

import csv
import json
import unicodedata
from collections.abc import Iterable
from typing import Any, TextIO

__all__ = ["CSV_COLUMNS", "write_csv"]

CSV_COLUMNS = ("ts", "type", "person_id", "name", "reason", "similarity", "event_id", "seq", "device_id",
               "journal_id", "details")
_FORMULA_CHARS = frozenset("=+-@\uff1d\uff0b\uff0d\uff20")


def _blank(char: str) -> bool:
    """Whitespace, control and format characters (zero-width space, BOM): what an import may strip."""
    return char.isspace() or unicodedata.category(char) in ("Cc", "Cf", "Zs", "Zl", "Zp")


def _formula_like(text: str) -> bool:
    """True when a spreadsheet could read ``text`` as a formula (or it starts with a control character)."""
    if not text:
        return False
    if unicodedata.category(text[0]) == "Cc":
        return True
    start = 0
    while start < len(text) and _blank(text[start]):
        start += 1
    return start < len(text) and text[start] in _FORMULA_CHARS


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return "'" + text if _formula_like(text) else text


def write_csv(events: Iterable[dict[str, Any]], out: TextIO, *, header: bool = True) -> int:
    """Write ``events`` (as :meth:`Journal.query` returns them) to ``out``; returns rows written."""
    writer = csv.writer(out, lineterminator="\n")
    # The csv module quotes a field only for the characters of ``lineterminator``: a bare CR in a name would
    # end the row early in a spreadsheet. Such rows are written with every field quoted.
    quoted = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
    if header:
        writer.writerow(CSV_COLUMNS)
    fixed = CSV_COLUMNS[:-1]
    n = 0
    for event in events:
        details = {k: v for k, v in event.items() if k not in fixed}
        row = [*(_cell(event.get(c)) for c in fixed),
               _cell(json.dumps(details, ensure_ascii=False, sort_keys=True) if details else None)]
        (quoted if any(isinstance(v, str) and "\r" in v for v in row) else writer).writerow(row)
        n += 1
    return n
