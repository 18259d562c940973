"""What counts as "the device itself" for the console's door screen and for the plain-HTTP rule.

Only the exact loopback addresses 127.0.0.1 and ::1 (and the IPv4-mapped ::ffff:127.0.0.1) are the device:
the kiosk browser on the Pi connects from one of them. Other 127.x.y.z addresses are deliberately not trusted,
so the rule is one a reader can check at a glance and tests can exercise it with a real second loopback address.
"""

from __future__ import annotations

import ipaddress

LOCAL_CLIENTS = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})
LOCAL_HOST_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def is_local_client(address: str) -> bool:
    """True only for a connection from 127.0.0.1 or ::1 (see the module docstring)."""
    return address in LOCAL_CLIENTS


def limiter_key(address: str) -> str:
    """The client a login failure or a connection is counted against: an IPv4 address, the /64 of a global
    IPv6 one, or the whole address of a link-local (``fe80::/10``) one.

    One IPv6 subscriber or host is routinely given a whole /64, so counting its addresses apart would give an
    attacker 2^64 fresh budgets; an IPv4-mapped address (``::ffff:a.b.c.d`` from a dual-stack socket) is its IPv4.
    Link-local addresses are the exception: every host on the door's own segment has one in the same fe80::/64,
    so a /64 bucket there would let one neighbour lock out all the others. Each is derived from one interface
    (and a neighbour has only so many), so each full address, with its zone, is its own client.
    """
    bare, _, zone = address.partition("%")
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if ip.is_link_local:
            return f"{ip}%{zone}" if zone else str(ip)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def is_loopback_host(host: str) -> bool:
    """A bind address that is reachable only from this machine (any 127.0.0.0/8 address, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_header_is_local(host: str | None) -> bool:
    """The Host header names the device by a loopback name (guards the door screen against DNS rebinding)."""
    if not host:
        return False
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    return name.lower() in LOCAL_HOST_NAMES


def console_url(bind: str, port: int, tls: bool, public_url: str | None = None) -> str:
    """The console's address for Home Assistant's device page (``configuration_url``).

    ``web.public_url`` wins: behind NAT or a reverse proxy only the operator knows the address people use. A
    wildcard bind is named by this machine's host name, which is what a browser on the site's network can reach.
    """
    if public_url:
        return public_url
    host = bind
    if host in ("", "0.0.0.0", "::"):
        import socket

        host = socket.getfqdn()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}/"
