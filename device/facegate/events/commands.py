"""Authenticated remote commands: only signed, fresh, never-replayed commands can open the door.

A command arrives on ``<prefix>/<device_id>/lock/set`` as JSON::

    {"action": "unlock", "ts": 1714564800, "nonce": "4f0c...", "alg": "hmac-sha256", "sig": "<hex>"}

The signature covers the canonical bytes of ``{"action", "device_id", "nonce", "ts"}`` (see
:func:`canonical_bytes`); ``device_id`` is this door's id, taken from the configuration, so a command signed for
one door is worthless at another even though it is not sent in the payload. Checks, in this order:

1. ``retained`` - a retained message is a stored copy that any client with publish rights could have planted
   long ago; it is never obeyed.
2. ``no_key_configured`` - with no HMAC key and no Ed25519 public key nothing can be authenticated, so nothing is
   obeyed (secure by default).
3. ``unsigned`` / ``malformed`` - the payload must be a JSON object with the fields above and sane types. A bare
   word such as Home Assistant's ``LOCK``/``UNLOCK``, or an object with no ``sig``, is ``unsigned``.
4. ``bad_signature`` - HMAC-SHA256 (constant-time comparison) or Ed25519 against any configured key; also an
   ``alg`` for which no key is configured, or a ``device_id`` field naming another door.
5. ``unknown_action`` - authentic, but not one of :data:`ACTIONS`.
6. ``expired`` - ``ts`` more than ``max_age_seconds`` in the past or in the future (the Pi has no RTC: before
   NTP sync every command is refused, which is the safe failure).
7. ``replayed`` - the nonce was accepted before. Accepted nonces are kept in SQLite with their ``ts`` and pruned
   after ``2 x max_age_seconds`` (older ones fail step 6 anyway), so the store stays small and survives restarts.
   The pruning horizon is remembered too: a command older than any nonce already forgotten is ``expired``
   whatever the clock says, so a clock that jumped forward and came back cannot make a captured command valid
   again (after a backwards step, remote commands are refused until the clock passes the horizon again).

Authentication comes before the freshness and replay checks so unauthenticated traffic can neither fill the
nonce store nor burn a legitimate sender's nonce.

Home Assistant mode (opt-in, ``home_assistant_codes``): a JSON object with ``"via": "home_assistant"`` and no
signature is checked by :meth:`CommandVerifier._verify_home_assistant` instead: retained, malformed,
``unknown_action``, ``too_many_attempts`` (the guessing brake), ``bad_code``, ``expired``, ``replayed``, in that
order. Lockdown from HA's switch carries no code (a switch cannot ask for one) and is accepted without one only
with ``home_assistant_lockdown``; see :mod:`facegate.events.ha_codes` for what this trusts.

``hmac_key_file`` format: if the file content, stripped of surrounding whitespace, is an even number of hex
digits it is decoded as hex (``openssl rand -hex 32 > key``); otherwise the raw bytes are the key. Keys shorter
than 16 bytes are refused at start.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facegate.base.private_files import private_sqlite
from facegate.config import CommandsConfig, ConfigError
from facegate.errors import FacegateError
from facegate.events.communicator import Command
from facegate.events.ha_codes import BRAKE_FILE, CodeBook, GuessBrake, load_code_hashes

if TYPE_CHECKING:  # cryptography (~7 MB resident on x86) is imported only where Ed25519 keys are configured
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "ACTIONS",
    "ALGORITHMS",
    "MAX_PAYLOAD_BYTES",
    "REASONS",
    "VIA_HOME_ASSISTANT",
    "CommandRejected",
    "CommandVerifier",
    "canonical_bytes",
    "load_hmac_key",
    "sign_command",
]

ACTIONS = frozenset({"unlock", "lock", "lockdown_on", "lockdown_off"})
ALGORITHMS = frozenset({"hmac-sha256", "ed25519"})
REASONS = frozenset(
    {
        "retained",
        "expired",
        "replayed",
        "bad_signature",
        "unsigned",
        "malformed",
        "unknown_action",
        "no_key_configured",
        # Home Assistant unlock mode (facegate.events.ha_codes):
        "bad_code",
        "too_many_attempts",
    }
)
#: ``via`` value that marks a Home Assistant code command (no signature; see facegate.events.ha_codes).
VIA_HOME_ASSISTANT = "home_assistant"
#: Larger payloads are refused before parsing (a real command is about 200 bytes).
MAX_PAYLOAD_BYTES = 4096
MIN_HMAC_KEY_BYTES = 16

# Restricted alphabets keep the canonical JSON identical in every language (no escaping differences).
_NONCE_RE = re.compile(r"[A-Za-z0-9_.:-]{8,128}")
_ACTION_RE = re.compile(r"[a-z_]{1,32}")
_BARE_WORD_RE = re.compile(r"[A-Za-z_]{1,32}")
_HMAC_HEX_RE = re.compile(r"[0-9A-Fa-f]{64}")


class CommandRejected(FacegateError):
    """A command was refused; ``reason`` is one of :data:`REASONS`, ``action`` what it asked for if known."""

    def __init__(self, reason: str, detail: str, action: str | None = None) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}")
        super().__init__(f"command rejected ({reason}): {detail}")
        self.reason = reason
        self.detail = detail
        self.action = action


def canonical_bytes(action: str, device_id: str, nonce: str, ts: float) -> bytes:
    """The exact bytes that are signed: sorted keys, no whitespace, ASCII (``json.dumps`` defaults otherwise).

    ``ts`` is rendered as JSON renders it: integers as digits, floats in shortest round-trip form (Python's
    ``repr``, the same as JavaScript's ``JSON.stringify`` for ordinary values). Integer seconds are recommended.
    """
    return json.dumps(
        {"action": action, "device_id": device_id, "nonce": nonce, "ts": ts},
        sort_keys=True,
        separators=(",", ":"),
    ).encode("ascii")


def load_hmac_key(config: CommandsConfig) -> bytes | None:
    """The configured HMAC key as bytes, or None; raises :class:`ConfigError` naming the key at fault."""
    if config.hmac_key is not None and config.hmac_key_file is not None:
        raise ConfigError("commands.hmac_key and commands.hmac_key_file are both set; keep one")
    key: bytes
    if config.hmac_key is not None:
        try:
            key = bytes.fromhex(config.hmac_key.strip())
        except ValueError:
            raise ConfigError("commands.hmac_key: not a hex string") from None
        origin = "commands.hmac_key"
    elif config.hmac_key_file is not None:
        try:
            data = Path(config.hmac_key_file).read_bytes()
        except OSError as exc:
            raise ConfigError(f"commands.hmac_key_file: cannot read {config.hmac_key_file}: {exc}") from None
        stripped = data.strip()
        try:
            text = stripped.decode("ascii")
            is_hex = len(text) % 2 == 0 and re.fullmatch(r"[0-9A-Fa-f]+", text) is not None
            key = bytes.fromhex(text) if is_hex else data
        except UnicodeDecodeError:
            key = data
        origin = f"commands.hmac_key_file ({config.hmac_key_file})"
    else:
        return None
    if len(key) < MIN_HMAC_KEY_BYTES:
        raise ConfigError(f"{origin}: key is {len(key)} bytes, at least {MIN_HMAC_KEY_BYTES} are required")
    return key


def _load_public_keys(config: CommandsConfig) -> list[Ed25519PublicKey]:
    if not config.ed25519_public_keys:
        return []
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys = []
    for i, text in enumerate(config.ed25519_public_keys):
        try:
            raw = base64.b64decode(text.strip(), validate=True)
            if len(raw) != 32:
                raise ValueError(f"{len(raw)} bytes, expected 32")
            keys.append(Ed25519PublicKey.from_public_bytes(raw))
        except (ValueError, binascii.Error) as exc:
            raise ConfigError(
                f"commands.ed25519_public_keys[{i}]: not a base64 raw 32-byte Ed25519 public key: {exc}"
            ) from None
    return keys


def sign_command(
    action: str,
    device_id: str,
    *,
    hmac_key: bytes | None = None,
    ed25519_private_key: Ed25519PrivateKey | None = None,
    ts: float | None = None,
    nonce: str | None = None,
) -> dict[str, Any]:
    """Build a signed command payload (for admin tools and tests); give exactly one of the two keys.

    ``ts`` defaults to the current time in whole seconds, ``nonce`` to 128 random bits in hex. The returned dict
    includes ``device_id`` for readability; the device checks it names itself.
    """
    if (hmac_key is None) == (ed25519_private_key is None):
        raise ValueError("give exactly one of hmac_key and ed25519_private_key")
    ts_value: float = int(time.time()) if ts is None else ts
    nonce_value = secrets.token_hex(16) if nonce is None else nonce
    message = canonical_bytes(action, device_id, nonce_value, ts_value)
    if hmac_key is not None:
        alg = "hmac-sha256"
        sig = hmac.new(hmac_key, message, hashlib.sha256).hexdigest()
    else:
        assert ed25519_private_key is not None
        alg = "ed25519"
        sig = base64.b64encode(ed25519_private_key.sign(message)).decode("ascii")
    return {
        "action": action,
        "device_id": device_id,
        "ts": ts_value,
        "nonce": nonce_value,
        "alg": alg,
        "sig": sig,
    }


class CommandVerifier:
    """Checks commands for one device; thread-safe. See the module docstring for the rules and their order."""

    def __init__(
        self,
        config: CommandsConfig,
        device_id: str,
        nonce_db: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._device_id = device_id
        self._max_age = float(config.max_age_seconds)
        self._clock = clock
        self._hmac_key = load_hmac_key(config)
        self._public_keys = _load_public_keys(config)
        try:
            hashes = load_code_hashes(config.home_assistant_codes, config.home_assistant_code_hashes_file)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        # The brake on guessing survives restarts (its file beside the nonce store).
        self.home_assistant_codes = CodeBook(hashes, GuessBrake(state_file=Path(nonce_db).parent / BRAKE_FILE)
                                             if hashes else None)
        self._ha_lockdown = config.home_assistant_lockdown
        self._lock = threading.Lock()
        self._nonce_path = Path(nonce_db)
        try:
            private_sqlite(self._nonce_path)
            self._db = sqlite3.connect(
                str(self._nonce_path), timeout=10.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: an accepted nonce must survive a power cut, or the same unlock could be replayed after boot.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, ts REAL NOT NULL)")
            # The newest pruning horizon ever used: nonces of commands older than it are forgotten, so such a
            # command can no longer be told from a replay and is refused whatever the clock says now.
            self._db.execute("CREATE TABLE IF NOT EXISTS forgotten (id INTEGER PRIMARY KEY CHECK (id = 1), "
                             "before_ts REAL NOT NULL)")
        except (sqlite3.Error, OSError) as exc:
            raise FacegateError(f"{self._nonce_path}: cannot open the command nonce store: {exc}") from exc

    @property
    def home_assistant_mode(self) -> bool:
        """True when Home Assistant code commands are accepted (at least one code hash is configured)."""
        return bool(self.home_assistant_codes)

    @property
    def home_assistant_lockdown(self) -> bool:
        """True when HA's lockdown switch is offered and obeyed (HA mode and ``home_assistant_lockdown``)."""
        return self.home_assistant_mode and self._ha_lockdown

    @property
    def has_keys(self) -> bool:
        """False when no key is configured: then every command is refused with ``no_key_configured``."""
        return self._hmac_key is not None or bool(self._public_keys)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def verify(self, payload: bytes, retained: bool) -> Command:
        """Return the command if it may be obeyed, else raise :class:`CommandRejected` (and nothing else)."""
        if retained:
            raise CommandRejected("retained", "retained messages are never obeyed", _peek_action(payload))
        if self.home_assistant_mode:
            ha = _home_assistant_payload(payload)
            if ha is not None:
                return self._verify_home_assistant(ha)
        if not self.has_keys:
            raise CommandRejected(
                "no_key_configured", "no command key is configured; all commands are refused", _peek_action(payload)
            )
        data = _parse(payload)
        action, ts, nonce, alg, sig = data["action"], data["ts"], data["nonce"], data["alg"], data["sig"]
        claimed = data.get("device_id")
        if claimed is not None and claimed != self._device_id:
            raise CommandRejected("bad_signature", f"command is for device {claimed!r}", action)
        message = canonical_bytes(action, self._device_id, nonce, ts)
        if not self._signature_ok(alg, sig, message):
            raise CommandRejected("bad_signature", f"{alg} signature does not verify with any configured key", action)
        if action not in ACTIONS:
            raise CommandRejected("unknown_action", f"unknown action {action!r}", action)
        now = self._clock()
        age = now - float(ts)
        if age > self._max_age:
            raise CommandRejected("expired", f"command is {age:.1f} s old (max {self._max_age:g} s)", action)
        if -age > self._max_age:
            raise CommandRejected("expired", f"command is {-age:.1f} s in the future (max {self._max_age:g} s)", action)
        self._remember_nonce(nonce, float(ts), now, action)
        return Command(action=action, ts=float(ts), nonce=nonce, raw=data)

    def _verify_home_assistant(self, data: dict[str, Any]) -> Command:
        action, ts, nonce, code = _parse_home_assistant(data)
        codes = self.home_assistant_codes
        if code is None:
            if action not in ("lockdown_on", "lockdown_off") or not self._ha_lockdown:
                raise CommandRejected("bad_code", "a Home Assistant command needs a code", action)
        elif not codes.brake.may_try():
            wait = codes.brake.seconds_until_next()
            raise CommandRejected("too_many_attempts", f"too many wrong codes; next try in {wait:.0f} s", action)
        elif not codes.matches(code):
            codes.brake.wrong()
            raise CommandRejected("bad_code", "the code matches none of commands.home_assistant_codes", action)
        now = self._clock()
        age = now - ts
        if abs(age) > self._max_age:
            when = f"{age:.1f} s old" if age > 0 else f"{-age:.1f} s in the future"
            raise CommandRejected("expired", f"command is {when} (max {self._max_age:g} s)", action)
        self._remember_nonce(nonce, ts, now, action)
        raw = {k: v for k, v in data.items() if k != "code"}  # the code never travels further than this check
        return Command(action=action, ts=ts, nonce=nonce, raw=raw)

    def _signature_ok(self, alg: str, sig: str, message: bytes) -> bool:
        if alg == "hmac-sha256":
            if self._hmac_key is None:
                return False
            if not _HMAC_HEX_RE.fullmatch(sig):
                return False
            expected = hmac.new(self._hmac_key, message, hashlib.sha256).digest()
            # Constant-time comparison of the raw MACs, so timing reveals nothing about the expected value.
            return hmac.compare_digest(expected, bytes.fromhex(sig))
        if alg == "ed25519":
            try:
                raw = base64.b64decode(sig, validate=True)
            except (binascii.Error, ValueError):
                return False
            if len(raw) != 64 or not self._public_keys:
                return False
            from cryptography.exceptions import InvalidSignature

            for key in self._public_keys:
                try:
                    key.verify(raw, message)
                    return True
                except InvalidSignature:
                    continue
            return False
        return False

    def _remember_nonce(self, nonce: str, ts: float, now: float, action: str) -> None:
        horizon = now - 2 * self._max_age
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    # Found by the clock-jump fault test (tests/service/test_faults.py): the door's and the sender's
                    # clocks jump forward, one command there prunes every nonce, the clocks come back, and a command
                    # captured earlier would verify again. Forgotten means refused.
                    row = self._db.execute("SELECT before_ts FROM forgotten WHERE id = 1").fetchone()
                    if row is not None and ts < float(row[0]):
                        raise CommandRejected("expired", f"command (ts {ts:.0f}) is older than the nonces this door "
                                              f"has forgotten (before {float(row[0]):.0f}): the clock went back?",
                                              action)
                    self._db.execute("DELETE FROM nonces WHERE ts < ?", (horizon,))
                    self._db.execute("INSERT INTO forgotten (id, before_ts) VALUES (1, ?) ON CONFLICT (id) "
                                     "DO UPDATE SET before_ts = MAX(before_ts, excluded.before_ts)", (horizon,))
                    self._db.execute("INSERT INTO nonces (nonce, ts) VALUES (?, ?)", (nonce, ts))
                    self._db.execute("COMMIT")
                except sqlite3.IntegrityError:
                    self._db.execute("ROLLBACK")
                    raise CommandRejected("replayed", f"nonce {nonce!r} was already used", action) from None
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                # Cannot record the nonce, so cannot rule out a replay: refuse (fail closed).
                raise CommandRejected("replayed", f"nonce store unavailable: {exc}", action) from None


def _home_assistant_payload(payload: bytes) -> dict[str, Any] | None:
    """The decoded object if this is a Home Assistant code command (``via`` set, no ``sig``), else None."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return None
    try:
        data = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if isinstance(data, dict) and data.get("via") == VIA_HOME_ASSISTANT and "sig" not in data:
        return data
    return None


def _parse_home_assistant(data: dict[str, Any]) -> tuple[str, float, str, str | None]:
    raw_action = data.get("action")
    if not isinstance(raw_action, str) or not _ACTION_RE.fullmatch(raw_action):
        raise CommandRejected("malformed", "'action' must be a lowercase word")
    action = raw_action
    if action not in ACTIONS:
        raise CommandRejected("unknown_action", f"unknown action {action!r}", action)
    ts = data.get("ts")
    try:
        ok = not isinstance(ts, bool) and isinstance(ts, int | float) and 0 <= float(ts) < 1e11
    except OverflowError:
        ok = False
    if not ok:
        raise CommandRejected("malformed", "'ts' must be a number of Unix seconds", action)
    assert isinstance(ts, int | float)
    nonce = data.get("nonce")
    if not isinstance(nonce, str) or not _NONCE_RE.fullmatch(nonce):
        raise CommandRejected("malformed", "'nonce' must be 8-128 characters of [A-Za-z0-9_.:-]", action)
    code = data.get("code")
    if code is not None and (not isinstance(code, str) or not 1 <= len(code) <= 256):
        raise CommandRejected("malformed", "'code' must be a string", action)
    return action, float(ts), nonce, code


def _peek_action(payload: bytes) -> str | None:
    """Best-effort action name for reporting a rejection; never raises."""
    try:
        if len(payload) > MAX_PAYLOAD_BYTES:
            return None
        text = payload.decode("utf-8").strip()
        if _BARE_WORD_RE.fullmatch(text):
            return text.lower()
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if isinstance(data, dict):
        action = data.get("action")
        if isinstance(action, str) and _ACTION_RE.fullmatch(action):
            return action
    return None


def _parse(payload: bytes) -> dict[str, Any]:
    """Decode and type-check a command payload, raising ``malformed`` or ``unsigned``."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CommandRejected("malformed", f"payload is {len(payload)} bytes (max {MAX_PAYLOAD_BYTES})")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandRejected("malformed", "payload is not UTF-8") from None
    stripped = text.strip()
    if _BARE_WORD_RE.fullmatch(stripped):
        # e.g. Home Assistant's lock entity publishing "UNLOCK": a command, but not a signed one.
        raise CommandRejected("unsigned", f"plain {stripped!r} payload carries no signature", stripped.lower())
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise CommandRejected("malformed", "payload is not JSON") from None
    if not isinstance(data, dict):
        raise CommandRejected("malformed", "payload is not a JSON object")
    raw_action = data.get("action")
    action = raw_action if isinstance(raw_action, str) and _ACTION_RE.fullmatch(raw_action) else None
    if "sig" not in data or data.get("sig") in (None, ""):
        raise CommandRejected("unsigned", "command has no signature", action)
    if action is None:
        raise CommandRejected("malformed", "'action' must be a lowercase word")
    ts = data.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise CommandRejected("malformed", "'ts' must be a number of Unix seconds", action)
    try:
        if not math.isfinite(float(ts)) or not 0 <= float(ts) < 1e11:
            raise CommandRejected("malformed", "'ts' is out of range", action)
    except OverflowError:
        raise CommandRejected("malformed", "'ts' is out of range", action) from None
    nonce = data.get("nonce")
    if not isinstance(nonce, str) or not _NONCE_RE.fullmatch(nonce):
        raise CommandRejected("malformed", "'nonce' must be 8-128 characters of [A-Za-z0-9_.:-]", action)
    alg = data.get("alg")
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        raise CommandRejected("malformed", f"'alg' must be one of {sorted(ALGORITHMS)}", action)
    if not isinstance(data["sig"], str) or len(data["sig"]) > 256:
        raise CommandRejected("malformed", "'sig' must be a string", action)
    device_id = data.get("device_id")
    if device_id is not None and not isinstance(device_id, str):
        raise CommandRejected("malformed", "'device_id' must be a string", action)
    return data
