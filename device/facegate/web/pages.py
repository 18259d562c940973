"""What the console may ever send besides JSON: its shipped static files and pages, and the headers on every
response (a strict CSP without inline script, no framing, no sniffing, no referrer)."""

from __future__ import annotations

from importlib import resources

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml",
                 ".ico": "image/x-icon"}
# Pages: the shell is one HTML file; the page name (from this table, never from the request) picks the view.
PAGES = {"/live": "viewer", "/journal": "viewer", "/people": "admin", "/door": "admin", "/system": "admin"}


def load_static() -> dict[str, tuple[bytes, str]]:
    """Every file shipped in facegate/web/static, by name: the only files the server will ever send."""
    table = {}
    for entry in resources.files("facegate.web").joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in CONTENT_TYPES:
            table[entry.name] = (entry.read_bytes(), CONTENT_TYPES[suffix])
    return table
