"""The OSDP Secure Channel Base Key file: 32 hex digits (16 bytes, AES-128), readable by the service only.

The key is what authenticates the panel to the door and encrypts the card data; anyone holding it can
impersonate either side. It is written once, in install mode, by the panel's KEYSET command (atomically,
mode 0600), or provisioned by hand (``openssl rand -hex 16 > scbk``) and entered into the panel.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from facegate.config import ConfigError

SCBK_BYTES = 16


def load_scbk(path: Path) -> bytes:
    """The key, or ConfigError naming ``osdp.scbk_file`` and what is wrong with it."""
    try:
        text = Path(path).read_text().strip()
    except FileNotFoundError:
        raise ConfigError(f"osdp.scbk_file: {path} does not exist (provision a key, or set osdp.install_mode = true "
                          "once so the panel can set one)") from None
    except OSError as exc:
        raise ConfigError(f"osdp.scbk_file: cannot read {path}: {exc.strerror}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != SCBK_BYTES:
        raise ConfigError(f"osdp.scbk_file: {path} must hold {2 * SCBK_BYTES} hex digits (a 16-byte key)")
    if key == bytes(range(0x30, 0x40)):
        raise ConfigError(f"osdp.scbk_file: {path} holds the OSDP default key SCBK-D, which every panel knows")
    return key


def store_scbk(path: Path, key: bytes) -> None:
    """Write the key atomically (temp file, fsync, rename) with mode 0600."""
    if len(key) != SCBK_BYTES:
        raise ValueError(f"an SCBK is {SCBK_BYTES} bytes, got {len(key)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".scbk-")
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (key.hex() + "\n").encode("ascii"))
        os.fsync(fd)
        os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
