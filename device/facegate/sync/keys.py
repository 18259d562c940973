"""Ed25519 keys for signing gallery bundles.

The admin machine keeps the private key (PEM, PKCS#8, file mode 0600); doors only hold public keys, as the
base64 of the raw 32 bytes (the same form as ``commands.ed25519_public_keys``), so a stolen door can not sign
anything. A key id (the first 8 bytes of the SHA-256 of the raw public key) travels in each bundle, so a door
can tell "signed by a key I do not trust" (``unknown_key``) from "forged or damaged" (``bad_signature``).
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from facegate.validate.ed25519 import SyncKeyError, parse_public_key

__all__ = [
    "KEY_ID_BYTES",
    "SyncKeyError",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "parse_public_key",
    "public_key_b64",
    "public_keys_by_id",
]

KEY_ID_BYTES = 8


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> bytes:
    """Short, stable name of a public key: not secret, only used to pick the key and to report it."""
    return hashlib.sha256(raw_public(key)).digest()[:KEY_ID_BYTES]


def public_key_b64(key: Ed25519PublicKey) -> str:
    """The form that goes into ``sync.public_keys``: base64 of the raw 32 bytes."""
    return base64.b64encode(raw_public(key)).decode("ascii")


def public_keys_by_id(texts: Iterable[str]) -> dict[bytes, Ed25519PublicKey]:
    keys: dict[bytes, Ed25519PublicKey] = {}
    for i, text in enumerate(texts):
        key = parse_public_key(text, f"sync.public_keys[{i}]")
        keys[key_id(key)] = key
    return keys


def generate_keypair(private_path: Path, public_path: Path, *, overwrite: bool = False) -> Ed25519PrivateKey:
    """Write a new key pair: the private key as PKCS#8 PEM created with mode 0600 from the start (never
    world-readable, not even for a moment), the public key as one base64 line ready for the config."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(private_path, flags, 0o600)
    except FileExistsError:
        raise SyncKeyError(f"{private_path}: exists; refusing to overwrite a private key (use --force)") from None
    except OSError as exc:
        raise SyncKeyError(f"{private_path}: cannot create: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)  # O_TRUNC on an existing file keeps its old mode
        fh.write(pem)
    try:
        Path(public_path).write_text(public_key_b64(key.public_key()) + "\n")
    except OSError as exc:
        raise SyncKeyError(f"{public_path}: cannot write: {exc.strerror}") from None
    return key


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SyncKeyError(f"{path}: cannot read: {exc.strerror}") from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """A PEM private key as written by :func:`generate_keypair` (or ``openssl genpkey -algorithm ed25519``)."""
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SyncKeyError(f"{path}: not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SyncKeyError(f"{path}: is a {type(key).__name__}, not an Ed25519 private key")
    return key


def load_public_key_file(path: Path) -> Ed25519PublicKey:
    """A public key file: the base64 line written by keygen, or a PEM public key."""
    data = _read(path)
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise SyncKeyError(f"{path}: not a PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise SyncKeyError(f"{path}: not an Ed25519 public key")
        return key
    return parse_public_key(data.decode("ascii", "replace"), str(path))
