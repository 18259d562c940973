"""Ed25519 public keys as written in the config (base64 of the raw 32 bytes): parsed here, below config.py, so the
schema can refuse a mistyped ``sync.public_keys`` entry at load without importing the sync area."""

from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from facegate.errors import FacegateError


class SyncKeyError(FacegateError):
    """A key file or key text is unusable; the message names it."""


def parse_public_key(text: str, where: str = "public key") -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SyncKeyError(f"{where}: not base64") from None
    if len(raw) != 32:
        raise SyncKeyError(f"{where}: {len(raw)} bytes; an Ed25519 public key is 32 raw bytes")
    return Ed25519PublicKey.from_public_bytes(raw)
