"""Home Assistant code hashes as written in the config (``scrypt$n$r$p$salt$digest``): parsed and checked here,
below config.py, so the schema can refuse a pasted half-hash at load without importing the events area."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

_MAX_N = 2**20  # refuse hashes whose cost would stall the door (or exhaust its memory) on every attempt


class CodeHashError(ValueError):
    """A configured code hash is not one ``facegate code hash`` produces."""


@dataclass(frozen=True)
class CodeHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def matches(self, code: str) -> bool:
        candidate = hashlib.scrypt(code.encode("utf-8"), salt=self.salt, n=self.n, r=self.r, p=self.p,
                                   maxmem=256 * self.n * self.r + (1 << 20), dklen=len(self.digest))
        return hmac.compare_digest(candidate, self.digest)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def parse_code_hash(text: str) -> CodeHash:
    parts = text.strip().split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise CodeHashError("not a code hash: expected scrypt$n$r$p$salt$digest (from 'facegate code hash')")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = unb64(parts[4]), unb64(parts[5])
    except (ValueError, binascii.Error):
        raise CodeHashError("not a code hash: bad number or base64 field") from None
    if n < 2 or n & (n - 1) or n > _MAX_N or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise CodeHashError(f"unsupported scrypt cost n={n} r={r} p={p}")
    if len(salt) < 8 or len(digest) < 16:
        raise CodeHashError("salt or digest too short")
    return CodeHash(n, r, p, salt, digest)
