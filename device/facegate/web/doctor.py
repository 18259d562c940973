"""``facegate doctor``'s console check: what ``[web]`` needs that the schema cannot see.

The TLS files readable and a matching pair, at least one admin account (without one nobody can sign in), and
the port free to bind. Each failure names the key or file and the fix, so a console that would stop
``facegate run`` (exit 78) is found before the service is started.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from typing import NamedTuple

from facegate.config import Config


class ConsoleCheck(NamedTuple):
    """The result; facegate.doctor turns it into its ``Check`` (importing that here would be an import cycle)."""

    ok: bool
    detail: str
    fix: str = ""


def _port_problem(bind: str, port: int) -> str | None:
    """Bound (never listened on) and released at once: only whether the service could take the port."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with contextlib.closing(socket.socket(family, socket.SOCK_STREAM)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the console's server does
        try:
            sock.bind((bind, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"web.port: {bind}:{port} is in use (by the running facegate service, or another program)"
            return f"web.bind / web.port: cannot bind {bind}:{port}: {exc.strerror or exc}"
    return None


def check_console(config: Config) -> ConsoleCheck:
    web = config.web
    if not web.enabled:
        return ConsoleCheck(True, "console off (web.enabled = false)")
    from facegate.web.accounts import AccountError, UserStore
    from facegate.web.tls import TlsFileError, cert_fingerprint, server_context

    problems: list[str] = []
    fixes: list[str] = []
    fingerprint = ""
    if web.tls_cert_file is not None and web.tls_key_file is not None:
        try:
            server_context(web.tls_cert_file, web.tls_key_file)
            fingerprint = f"; certificate SHA-256 {cert_fingerprint(web.tls_cert_file)}"
        except TlsFileError as exc:
            problems.append(str(exc))
            fixes.append("make the pair with 'sudo deploy/web-cert.sh /etc/facegate' (readable by the service "
                         "user) or fix web.tls_cert_file / web.tls_key_file")
    try:
        admins = [u.name for u in UserStore(config.state_dir).users() if u.role == "admin"]
    except AccountError as exc:
        problems.append(str(exc))
        fixes.append("restore the account file or remove it and add the accounts again")
    else:
        if not admins:
            problems.append(f"no admin account in {config.state_dir / 'web_users.json'}: nobody can sign in")
            fixes.append("facegate user add NAME --role admin --config FILE")
    port = _port_problem(web.bind, web.port)
    if port is not None:
        problems.append(port)
        fixes.append("stop what uses the port (expected while facegate runs) or choose another web.port")
    if problems:
        return ConsoleCheck(False, "; ".join(problems), "; ".join(fixes))
    scheme = "https" if web.tls_cert_file is not None else "http"
    return ConsoleCheck(True, f"{scheme}://{web.bind}:{web.port}/ can be served, {len(admins)} admin "
                              f"account(s){fingerprint}")
