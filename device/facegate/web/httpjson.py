"""Request bodies as JSON objects, bounded in nesting, and the HTTP error every refusal becomes."""

from __future__ import annotations

import json
import re
from typing import Any

MAX_JSON_DEPTH = 16  # nesting of [ and {: the parser recurses, and 60,000 '[' were a RecursionError (HTTP 500)


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(data: bytes) -> int:
    """The deepest nesting of ``[``/``{`` in ``data`` (brackets inside strings ignored), without recursion."""
    brackets = _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    opening = brackets.count(b"[") + brackets.count(b"{")
    if opening <= 1:
        return opening
    depth = deepest = 0
    for byte in brackets:
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_json_object(data: bytes) -> dict[str, Any]:
    """A request body as a JSON object, or HttpError 400 naming what is wrong; never another exception."""
    if json_depth(data) > MAX_JSON_DEPTH:
        raise HttpError(400, f"body is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise HttpError(400, "body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HttpError(400, "body must be a JSON object")
    return body


def flag(body: dict[str, Any], key: str, default: bool | None = None) -> bool:
    """A JSON true/false: bool("false") is True, which turned lockdown on and purged journals by mistake."""
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise HttpError(400, f"{key}: must be true or false")
    return value
