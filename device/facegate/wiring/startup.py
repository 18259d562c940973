"""What an operator should read once when ``facegate run`` starts: where the console is, and what is off.

The console's address and its certificate's SHA-256 fingerprint (to compare with what the browser shows for a
self-signed certificate), a warning when the console has no admin account (nobody could sign in) and when the
liveness gate is off (a photo of an enrolled person would open the door). Computed from the configuration and
the files it names, so it can be called once the service is built, without reaching into it.
"""

from __future__ import annotations

import logging

from facegate.config import Config


def startup_notes(config: Config) -> list[tuple[int, str]]:
    """(log level, message) pairs, in the order they should be logged."""
    notes: list[tuple[int, str]] = []
    web = config.web
    if web.enabled:
        from facegate.validate.netaddr import console_url
        from facegate.web.accounts import AccountError, UserStore
        from facegate.web.tls import TlsFileError, cert_fingerprint

        url = console_url(web.bind, web.port, web.tls_cert_file is not None, web.public_url)
        if web.tls_cert_file is not None:
            try:
                how = f"certificate {web.tls_cert_file}, SHA-256 fingerprint {cert_fingerprint(web.tls_cert_file)}"
            except TlsFileError as exc:
                how = str(exc)
        else:
            how = "plain HTTP (no web.tls_cert_file)"
        notes.append((logging.INFO, f"console at {url} ({how})"))
        try:
            admins = [u for u in UserStore(config.state_dir).users() if u.role == "admin"]
        except AccountError as exc:
            notes.append((logging.WARNING, f"console: {exc}"))
        else:
            if not admins:
                notes.append((logging.WARNING, f"console: no admin account in {config.state_dir / 'web_users.json'}"
                                               ", nobody can sign in: facegate user add NAME --role admin "
                                               "--config FILE"))
    if not config.liveness.enabled:
        notes.append((logging.WARNING, "liveness.enabled = false: a photo or a screen showing an enrolled face "
                                       "opens the door; turn it on for any door people can walk up to"))
    return notes


def log_startup_notes(config: Config, log: logging.Logger | None = None) -> None:
    target = log or logging.getLogger("facegate.service")
    for level, message in startup_notes(config):
        target.log(level, "%s", message)
