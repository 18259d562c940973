"""Origins as a browser serialises them, for the console's check of a POST's ``Origin`` header: the configured
``web.public_url`` or this server as reached, never anything from the request itself."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from urllib.parse import urlsplit


def origin(scheme: str, host: str, port: int | None) -> str:
    """An origin as a browser serialises it: lower case, the scheme's default port left out."""
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host.lower()}" + ("" if port is None or port == default else f":{port}")


def origin_of_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{ipaddress.ip_address(host).compressed}]" if is_ip(host) else f"[{host}]"
    return origin(parts.scheme.lower(), host, parts.port)


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def machine_names() -> set[str]:
    """This machine's names, as a browser on the site's network may reach it (``raspberrypi.local`` by mDNS)."""
    names = set()
    with contextlib.suppress(OSError):
        host = socket.gethostname()
        if host:
            names |= {host, f"{host}.local"}
        fqdn = socket.getfqdn()
        if fqdn and fqdn not in ("localhost", "localhost.localdomain"):
            names.add(fqdn)
    return {n.lower() for n in names}
