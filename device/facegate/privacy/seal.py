"""Authenticated encryption of single values, bound to where they are stored.

Every personal value is sealed on its own before it reaches SQLite, so the database file, its WAL and its
shared-memory file only ever hold ciphertext; the structure (row ids, timestamps, event types) stays plain and
searchable. AES-256-GCM from ``cryptography`` (hardware AES on a Pi 5, fast enough in software on a Pi 4 for
values of a few hundred bytes), a fresh random 96-bit nonce per value.

The associated data names the value's place (``"persons.name|alice"``): a ciphertext copied into another row
or column fails authentication instead of being read as someone else's name or template. Keyed hashes
(HMAC-SHA256 under a key derived separately from the same master key) stand in for values that must be found
by equality: the journal's person and name columns, the gallery's card numbers.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from facegate.errors import FacegateError

__all__ = ["NONCE_BYTES", "OVERHEAD_BYTES", "SealError", "Sealer"]

NONCE_BYTES = 12
TAG_BYTES = 16
OVERHEAD_BYTES = NONCE_BYTES + TAG_BYTES  # a sealed value is this much longer than the plain one
MIN_KEY_BYTES = 32


class SealError(FacegateError):
    """A sealed value does not open with this key at this place (wrong key, altered or moved ciphertext)."""


def _derive(master: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"facegate privacy v1", info=purpose).derive(master)


class Sealer:
    """Seals and opens values under one master key; also the keyed index of values searched by equality.

    ``locator`` says where the key comes from (``"file:/var/lib/facegate/privacy.key"``, ``"rpi-otp"``,
    ``"systemd-creds:facegate-key"``); a sealed file records it so that any process can find the key again.
    """

    def __init__(self, master: bytes, locator: str, protection: str = "") -> None:
        if len(master) < MIN_KEY_BYTES:
            raise ValueError(f"a privacy key has at least {MIN_KEY_BYTES} bytes (got {len(master)})")
        self._aead = AESGCM(_derive(master, b"seal"))
        self._index_key = _derive(master, b"index")
        # A public name for the key: says whether two files were sealed with the same key, reveals nothing of it.
        self.key_id = hashlib.sha256(_derive(master, b"key id")).hexdigest()[:16]
        self.locator = locator
        self.protection = protection

    def seal(self, data: bytes, where: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data, where.encode())

    def open(self, blob: bytes, where: str) -> bytes:
        if not isinstance(blob, bytes) or len(blob) < OVERHEAD_BYTES:
            raise SealError(f"{where}: not a sealed value")
        try:
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], where.encode())
        except InvalidTag:
            raise SealError(f"{where}: the value does not open with this key (wrong key, or altered or moved "
                            "data)") from None

    def seal_text(self, text: str | None, where: str) -> bytes | None:
        return None if text is None else self.seal(text.encode(), where)

    def open_text(self, blob: bytes | str | None, where: str) -> str | None:
        if blob is None:
            return None
        if isinstance(blob, str):  # a plain row: only in a file being migrated
            return blob
        return self.open(blob, where).decode()

    def index(self, value: str) -> str:
        """The keyed hash that stands in for ``value`` in an indexed column (hex, 128 bits: no collisions in
        practice, and unlinkable to the value without the key)."""
        return hmac.new(self._index_key, value.encode(), hashlib.sha256).hexdigest()[:32]
