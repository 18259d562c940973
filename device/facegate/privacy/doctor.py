"""What protects the door's personal data, said plainly for ``facegate doctor`` and the console's System page."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from facegate.config import Config
from facegate.privacy.keys import (
    BOUND,
    CREDSTORE,
    PrivacyKeyError,
    credstore_present,
    key_file_path,
    load_sealer,
    sealer_for,
)
from facegate.privacy.seal import Sealer

__all__ = ["PrivacyState", "privacy_state"]

FIX_WEAK = ("bind the key to the board: [privacy] key_source = \"systemd-creds\" with a TPM2, or \"rpi-otp\" on a "
            "Pi 4/5, or key_file on other media (docs/privacy.md)")


@dataclass(frozen=True)
class PrivacyState:
    ok: bool
    detail: str
    fix: str = ""


def _files(config: Config) -> list[Path]:
    return [p for p in (config.gallery_path, config.journal_path, config.state_dir / "outbox.db") if p.is_file()]


def _recorded_key(path: Path) -> str | None:
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT value FROM privacy WHERE key = 'key_id'").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None  # no privacy table: a plain file
    return None if row is None else str(row[0])


def privacy_state(config: Config, sealer: Sealer | None = None) -> PrivacyState:
    """``sealer``: the running service's (the System page); without it the configured key is looked up."""
    plain = [p.name for p in _files(config) if _recorded_key(p) is None]
    if not config.privacy.encrypt:
        return PrivacyState(False, "not encrypted: a stolen card is readable"
                            + (f" ({', '.join(plain)} plain)" if plain else ""),
                            "set [privacy] encrypt = true and restart (files are encrypted in place)")
    if sealer is None and config.privacy.key_source in ("auto", "systemd-creds") and credstore_present():
        try:  # the service's credential, which only the service (or root) can open
            sealer = load_sealer("systemd-creds", config.privacy.key_file, config.state_dir, create=False)
        except PrivacyKeyError:
            tpm = Path("/dev/tpmrm0").exists()
            return PrivacyState(tpm, f"encrypted with the systemd credential {CREDSTORE} (opened by the service; "
                                + ("TPM2 on this board)" if tpm else "no TPM2: sealed with the host key on the same "
                                   "card, a stolen card is readable)"), "" if tpm else FIX_WEAK)
    if sealer is None:
        try:
            sealer = sealer_for(config, create=False)
        except PrivacyKeyError as exc:
            key = key_file_path(config.privacy.key_file, config.state_dir)
            sealed = [p for p in _files(config) if _recorded_key(p) is not None]
            if config.privacy.key_source in ("auto", "file") and not sealed and not key.exists():
                # Before the first start nothing is sealed yet: the door makes the key then, so nothing is lost.
                return PrivacyState(False, f"no key yet: the door creates {key} at its first start and encrypts "
                                    "its files then; a key file on the same card leaves a stolen card readable",
                                    FIX_WEAK)
            return PrivacyState(False, f"no usable key: {exc}", "see docs/privacy.md (key sources, lost key)")
    assert sealer is not None
    other = [p.name for p in _files(config) if (k := _recorded_key(p)) is not None and k != sealer.key_id]
    if other:
        return PrivacyState(False, f"{', '.join(other)} encrypted with another key than {sealer.locator}: the "
                            "door refuses to start", "restore the right key (docs/privacy.md, lost key)")
    waiting = f"; {', '.join(plain)} still plain until the next start" if plain else ""
    detail = f"encrypted, {sealer.protection} ({sealer.locator}){waiting}"
    if sealer.protection.startswith(BOUND):
        return PrivacyState(not plain, detail)
    return PrivacyState(False, detail, FIX_WEAK)
