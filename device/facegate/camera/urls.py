"""Stream URLs: the credentials they may carry are split off for the client and never shown.

Every message, log line, event and doctor line names a stream by ``redact(url)``: ``rtsp://admin:***@cam/x``.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")


def is_stream(spec: str) -> bool:
    return urlsplit(spec).scheme.lower() in STREAM_SCHEMES and "://" in spec


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (the user name stays: it helps, it is not a secret)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None and "@" not in parts.netloc:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{user}:***@{host}" if parts.password is not None else f"{user}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def credentials(url: str) -> tuple[str | None, str | None, str]:
    """``(user, password, url_without_credentials)``; user and password percent-decoded."""
    parts = urlsplit(url)
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    bare = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, parts.query, parts.fragment))
    return user, password, bare
