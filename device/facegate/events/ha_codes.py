"""Home Assistant unlock mode: user codes checked against scrypt hashes, with a brake on guessing.

Home Assistant templates cannot compute an HMAC, so a Home Assistant lock can never sign a command. This mode is
the honest alternative, opt-in (``[commands] home_assistant_codes``): HA's lock entity asks the user for a code
(``code_format``) and its ``command_template`` publishes ``{"via": "home_assistant", "action", "code", "ts",
"nonce"}`` on ``lock/set``. The door checks the code against hashes from its config, and freshness and the nonce
exactly as for signed commands (the same nonce store). What this trusts is weaker than a signature, and the docs
say so: anyone who can read ``lock/set`` sees the code, so the broker must use TLS and ACLs.

Why scrypt: a stolen config file (or SD card) must not give the codes away; a 6-digit code has only 10^6
values, so the hash is slow on purpose (n=2^14, r=8: 16 MiB, ~0.1 s per hash on the shared 2-core x86
development VM, median of 10; slower on a Pi). Why the brake: anyone
allowed to publish on ``lock/set`` could otherwise try codes as fast as the door hashes them. After
:data:`GUESS_BURST` wrong codes, one more guess is allowed per :data:`GUESS_REFILL_SECONDS`; while braked, a
code is not even checked (``too_many_attempts``), so guessing a 6-digit code takes on average about a year.
The brake is shared by all senders: someone with publish rights can keep HA's unlock refused this way, which
is the same denial of service a flood of bad messages already gives them. The brake survives restarts
(:data:`BRAKE_FILE` in the state directory, 0600): otherwise every restart of the door (a power cut, an update,
a crash the guesser provoked) would hand out a fresh burst of guesses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from facegate.base.private_files import write_private
from facegate.validate.code_hash import CodeHash, CodeHashError, b64, parse_code_hash

__all__ = [
    "BRAKE_FILE",
    "GUESS_BURST",
    "GUESS_REFILL_SECONDS",
    "CodeBook",
    "CodeHashError",
    "GuessBrake",
    "hash_code",
    "load_code_hashes",
    "parse_code_hash",
]

#: scrypt cost for new hashes (stored in each hash, so older hashes with other costs keep working).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_CODE_CHARS = 4
GUESS_BURST = 5
GUESS_REFILL_SECONDS = 60.0
#: The brake's state beside the command nonce store: ``{"tokens": float, "wall_ts": unix seconds}``.
BRAKE_FILE = "ha_code_brake.json"

log = logging.getLogger(__name__)


def hash_code(code: str, *, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$digest`` (base64 without padding) for one code."""
    if len(code) < MIN_CODE_CHARS:
        raise ValueError(f"a code needs at least {MIN_CODE_CHARS} characters")
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(code.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            maxmem=256 * SCRYPT_N * SCRYPT_R + (1 << 20), dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt)}${b64(digest)}"


def load_code_hashes(inline: list[str], path: Path | None) -> list[CodeHash]:
    """The configured hashes; a bad one raises ValueError naming the key (and the line, for the file)."""
    hashes = [parse_code_hash(text) for text in inline]  # already checked by the config schema
    if path is not None:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"commands.home_assistant_code_hashes_file: cannot read {path}: {exc}") from None
        for number, line in enumerate(lines, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            try:
                hashes.append(parse_code_hash(text))
            except CodeHashError as exc:
                raise ValueError(f"commands.home_assistant_code_hashes_file: {path}:{number}: {exc}") from None
    return hashes


class GuessBrake:
    """A token bucket for wrong codes: ``burst`` at once, then one per ``refill_seconds``.

    With ``state_file`` the bucket is saved after every wrong code and loaded at start, refilled by the wall
    time that passed in between (never by a clock that went back). A state file that cannot be read starts the
    bucket empty: the safe side, one guess a ``refill_seconds`` until it fills again. Within a run the
    monotonic ``clock`` counts, so a clock step cannot refill it.
    """

    def __init__(self, burst: int = GUESS_BURST, refill_seconds: float = GUESS_REFILL_SECONDS,
                 clock: Callable[[], float] = time.monotonic, *, state_file: Path | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._burst = float(burst)
        self._refill = float(refill_seconds)
        self._clock = clock
        self._wall = wall_clock
        self._state_file = None if state_file is None else Path(state_file)
        self._tokens = self._load()
        self._last = clock()
        self._lock = threading.Lock()

    def _load(self) -> float:
        path = self._state_file
        if path is None or not path.exists():
            return self._burst
        try:
            saved = json.loads(path.read_bytes())
            tokens, wall_ts = float(saved["tokens"]), float(saved["wall_ts"])
            if not (0.0 <= tokens <= self._burst and wall_ts == wall_ts):  # NaN is not equal to itself
                raise ValueError(f"out of range: {saved!r:.80}")
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("%s: cannot read the Home Assistant code brake (%s); starting braked", path, exc)
            return 0.0
        elapsed = max(0.0, self._wall() - wall_ts)
        return min(self._burst, tokens + elapsed / self._refill)

    def _save(self) -> None:
        if self._state_file is None:
            return
        try:
            write_private(self._state_file, json.dumps({"tokens": self._tokens, "wall_ts": self._wall()}).encode())
        except OSError as exc:  # the brake still holds for this run
            log.error("%s: cannot save the Home Assistant code brake: %s", self._state_file, exc)

    def _update(self) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) / self._refill)
        self._last = now

    def may_try(self) -> bool:
        with self._lock:
            self._update()
            return self._tokens >= 1.0

    def wrong(self) -> None:
        with self._lock:
            self._update()
            self._tokens = max(0.0, self._tokens - 1.0)
            self._save()

    def seconds_until_next(self) -> float:
        with self._lock:
            self._update()
            return max(0.0, (1.0 - self._tokens) * self._refill)


class CodeBook:
    """The door's Home Assistant codes (hashes only) and the brake on guessing them."""

    def __init__(self, hashes: list[CodeHash], brake: GuessBrake | None = None) -> None:
        self._hashes = list(hashes)
        self.brake = brake or GuessBrake()

    def __bool__(self) -> bool:
        return bool(self._hashes)

    def matches(self, code: str) -> bool:
        """True if ``code`` matches any hash; every hash is checked so timing does not tell which one."""
        found = False
        for entry in self._hashes:
            found = entry.matches(code) | found
        return found
