"""The console's TLS pair: loaded with errors that name the config key and the file, and its fingerprint.

A browser warns about the self-signed certificate ``deploy/web-cert.sh`` makes; the operator compares the
SHA-256 fingerprint it shows with the one the service logs at start (and the script printed), so both are
written the way ``openssl x509 -fingerprint -sha256`` writes them.
"""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

from facegate.errors import FacegateError


class TlsFileError(FacegateError, ValueError):
    """A TLS file of ``[web]`` is missing, unreadable or not a matching PEM pair; the message names key and file."""


def _read(key: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsFileError(f"web.{key}: cannot read {path}: {exc.strerror or exc}") from None


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context for the pair, or a :class:`TlsFileError` saying which key and file is wrong."""
    _read("tls_cert_file", cert_file)
    _read("tls_key_file", key_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as exc:
        raise TlsFileError(f"web.tls_cert_file / web.tls_key_file: {cert_file} and {key_file} are not a PEM "
                           f"certificate and its private key: {exc}") from None
    return context


def cert_fingerprint(cert_file: Path) -> str:
    """SHA-256 of the certificate's DER bytes, as ``AB:CD:...`` (what browsers and openssl show)."""
    text = _read("tls_cert_file", cert_file).decode("ascii", "replace")
    try:
        der = ssl.PEM_cert_to_DER_cert(text[text.index("-----BEGIN CERTIFICATE-----"):])
    except ValueError:
        raise TlsFileError(f"web.tls_cert_file: {cert_file} holds no PEM certificate") from None
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
