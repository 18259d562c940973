"""Where the privacy key lives, and how strong that place is against a stolen SD card.

Sources, strongest first (``[privacy] key_source = "auto"`` takes the first available):

``systemd-creds``  a systemd encrypted credential named ``facegate-key``, handed to the service by
                   ``LoadCredentialEncrypted=`` in ``$CREDENTIALS_DIRECTORY``. Bound to the board when systemd
                   sealed it with a TPM2; without one it is sealed with the host key in /var/lib/systemd, which
                   is on the same card.
``rpi-otp``        the Raspberry Pi's one-time-programmable device key (``rpi-otp-private-key``, Raspberry Pi
                   OS, Pi 4/5 firmware that supports it): lives in the SoC, never on the card.
``file``           a 0600 key file; only as strong as the media it is on (``key_file`` on other media, e.g. a
                   USB key inside the housing, or in the state directory: the weakest, a stolen card reads).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Literal

from facegate.config import Config, ConfigError
from facegate.privacy.seal import Sealer

__all__ = ["CREDENTIAL_NAME", "KeySource", "PrivacyKeyError", "describe", "key_file_path", "load_sealer", "sealer_for",
           "sealer_from_locator"]

KeySource = Literal["auto", "systemd-creds", "rpi-otp", "file"]
CREDENTIAL_NAME = "facegate-key"
CREDSTORE = Path("/etc/credstore.encrypted") / CREDENTIAL_NAME  # where deploy/install-pi.sh puts it
OTP_TOOL = "rpi-otp-private-key"
BOUND = "bound to this board"
SAME_CARD = "key on the same card: a stolen card is readable"


def credstore_present() -> bool:
    """Whether the installer's encrypted credential is there. ``/etc/credstore.encrypted`` is root-only, so
    the service user cannot even look (stat fails with EACCES: ``Path.is_file`` raises it): then it is taken as
    present, since only the installer makes that folder, and only the service (through systemd) or root opens it."""
    try:
        return CREDSTORE.is_file()
    except PermissionError:
        return True


class PrivacyKeyError(ConfigError):
    """The privacy key is missing, unreadable or not the one the files were sealed with (exit 78)."""


def _from_bytes(raw: bytes) -> bytes:
    """32 key bytes from what a source holds: raw bytes, or their hex/base64 text; longer material is hashed."""
    text = raw.strip()
    try:
        decoded = bytes.fromhex(text.decode())
        if len(decoded) >= 32:
            raw = decoded
    except (UnicodeDecodeError, ValueError):
        pass
    if len(raw) < 32:
        raise PrivacyKeyError(f"the privacy key has {len(raw)} bytes; at least 32 are needed")
    return raw if len(raw) == 32 else hashlib.sha256(raw).digest()


def _credstore_key() -> bytes | None:
    """The credential decrypted by ``systemd-creds`` itself: how root (an admin's ``sudo facegate ...``) opens
    what the service sealed, outside the service's ``$CREDENTIALS_DIRECTORY``."""
    tool = shutil.which("systemd-creds")
    if tool is None or not credstore_present():
        return None
    try:
        out = subprocess.run([tool, f"--name={CREDENTIAL_NAME}", "decrypt", str(CREDSTORE), "-"],
                             capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return _from_bytes(out.stdout) if out.returncode == 0 and out.stdout else None


def _systemd_creds() -> Sealer | None:
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    path = Path(directory or "/nonexistent") / CREDENTIAL_NAME
    try:
        key = _from_bytes(path.read_bytes()) if directory and path.is_file() else _credstore_key()
    except OSError as exc:
        raise PrivacyKeyError(f"cannot read the systemd credential {path}: {exc}") from None
    if key is None:
        return None
    tpm = Path("/dev/tpmrm0").exists() or Path("/dev/tpm0").exists()
    protection = (f"{BOUND} (systemd credential sealed with the TPM2)" if tpm else
                  "systemd credential sealed with the host key in /var/lib/systemd: on the same card, a stolen "
                  "card is readable")
    return Sealer(key, f"systemd-creds:{CREDENTIAL_NAME}", protection)


def _rpi_otp() -> Sealer | None:
    tool = shutil.which(OTP_TOOL)
    if tool is None:
        return None
    try:
        out = subprocess.run([tool], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stdout.strip()
    if out.returncode != 0 or not text or set(text) <= {"0"}:  # all zeros: no key programmed
        return None
    try:
        otp = bytes.fromhex(text)
    except ValueError:
        return None
    # The OTP key itself may serve other uses: facegate's key is derived from it, never the key itself.
    key = hashlib.sha256(b"facegate privacy key\0" + otp).digest()
    return Sealer(key, "rpi-otp", f"{BOUND} (Raspberry Pi OTP device key)")


def _file(path: Path, state_dir: Path | None, create: bool) -> Sealer:
    path = path.resolve() if path.exists() else path
    if not path.exists():
        if not create:
            raise PrivacyKeyError(f"the privacy key file {path} does not exist (a lost key: see docs/privacy.md)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(32))
                out.flush()
                os.fsync(out.fileno())
        except FileExistsError:
            pass  # another process made it first: use theirs
        except OSError as exc:
            raise PrivacyKeyError(f"cannot create the privacy key file {path}: {exc}") from None
    try:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise PrivacyKeyError(f"the privacy key file {path} is readable by others (mode {mode:o}); "
                                  f"chmod 600 {path}")
        key = _from_bytes(path.read_bytes())
    except OSError as exc:
        raise PrivacyKeyError(f"cannot read the privacy key file {path}: {exc}") from None
    same_card = False
    if state_dir is not None:
        try:
            same_card = path.stat().st_dev == Path(state_dir).stat().st_dev
        except OSError:
            same_card = True
    protection = SAME_CARD if same_card else f"key file {path} on other media than the state directory"
    return Sealer(key, f"file:{path}", f"key file: {protection}")


def load_sealer(source: KeySource, key_file: Path, state_dir: Path, *, create: bool = True) -> Sealer:
    """The sealer for ``[privacy] key_source``; ``auto`` takes the strongest source present.

    ``create``: a missing key file is made (32 random bytes, 0600), as on first start.
    """
    if source in ("auto", "systemd-creds"):
        found = _systemd_creds()
        if found is not None:
            return found
        if source == "systemd-creds":
            raise PrivacyKeyError(f"privacy.key_source = \"systemd-creds\", but no credential '{CREDENTIAL_NAME}' "
                                  "is in $CREDENTIALS_DIRECTORY (LoadCredentialEncrypted= in the unit, see "
                                  "docs/privacy.md)")
    if source in ("auto", "rpi-otp"):
        found = _rpi_otp()
        if found is not None:
            return found
        if source == "rpi-otp":
            raise PrivacyKeyError(f"privacy.key_source = \"rpi-otp\", but '{OTP_TOOL}' gives no device key "
                                  "(Raspberry Pi OS on a Pi 4/5 with OTP key support, and a key programmed: see "
                                  "docs/privacy.md)")
    return _file(key_file_path(key_file, state_dir), state_dir, create)


def key_file_path(key_file: Path, state_dir: Path) -> Path:
    """Where ``[privacy] key_file`` points: a relative name lives in the state directory."""
    return key_file if key_file.is_absolute() else state_dir / key_file


def sealer_from_locator(locator: str, where: Path) -> Sealer:
    """The sealer a file names as its key's place (so the CLI and the console open what the service sealed)."""
    kind, _, rest = locator.partition(":")
    found: Sealer | None
    if kind == "file":
        found = _file(Path(rest), where.parent, create=False)
    elif kind == "rpi-otp":
        found = _rpi_otp()
    elif kind == "systemd-creds":
        found = _systemd_creds()
    else:
        raise PrivacyKeyError(f"{where} is sealed with a key from an unknown place {locator!r}")
    if found is None:
        raise PrivacyKeyError(f"{where} is encrypted with the key from {locator}, which is not available to this "
                              "process (run it as the service does, e.g. with systemd-run -p "
                              "LoadCredentialEncrypted=..., see docs/privacy.md)")
    return found


def describe(sealer: Sealer | None) -> str:
    """What protects the door's personal data, in words for doctor and the System page."""
    if sealer is None:
        return "not encrypted: a stolen card is readable ([privacy] encrypt = false)"
    return f"encrypted ({sealer.protection})"


def sealer_for(config: Config, *, create: bool = True) -> Sealer | None:
    """The door's sealer from ``[privacy]`` (None with ``encrypt = false``)."""
    privacy = config.privacy
    if not privacy.encrypt:
        return None
    return load_sealer(privacy.key_source, privacy.key_file, config.state_dir, create=create)
