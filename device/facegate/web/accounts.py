"""Console accounts: names, roles and scrypt password hashes in ``<state_dir>/web_users.json`` (mode 0600).

scrypt from the standard library (no new dependency on the Pi) with n=2^14, r=8, p=1: 16 MiB and tens of
milliseconds per check, so a stolen file is slow to attack while a login stays quick on a Pi. The file is
rewritten atomically (temporary file, fsync, rename), so a power cut never leaves a half-written account list,
and re-read when it changes, so ``facegate user add/passwd/remove`` take effect in a running service (a changed
password or removed user also ends that user's sessions: see :meth:`UserStore.fingerprint`).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from facegate.errors import FacegateError

Role = Literal["admin", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "viewer")
USERS_FILE = "web_users.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
MIN_PASSWORD_CHARS = 8
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


class AccountError(FacegateError):
    """A bad user name, role or password, or an unknown user; the message says which."""


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(expected), maxmem=128 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


# Checked against when the user does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = hash_password(secrets.token_hex(8))


@dataclass(frozen=True)
class User:
    name: str
    role: str
    password_hash: str


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise AccountError(f"user name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-'")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise AccountError(f"password too short: at least {MIN_PASSWORD_CHARS} characters")
    return password


class UserStore:
    """The account file; thread-safe, re-read when its modification time or size changes."""

    def __init__(self, state_dir: Path, *, roles: tuple[str, ...] = ROLES, file_name: str = USERS_FILE) -> None:
        """``roles``/``file_name``: the fleet console keeps its own accounts with its own roles the same way."""
        self.path = Path(state_dir) / file_name
        self.roles = roles
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._users: dict[str, User] = {}

    def _load_locked(self) -> dict[str, User]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._users = None, {}
            return self._users
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)  # every save is a rename: a new inode, even in one tick
        if stamp != self._stamp:
            try:
                data = json.loads(self.path.read_text())
                users = {name: User(name, rec["role"], rec["hash"]) for name, rec in data["users"].items()
                         if rec.get("role") in self.roles}
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise AccountError(f"{self.path}: unreadable account file: {exc}") from None
            self._stamp, self._users = stamp, users
        return self._users

    def users(self) -> list[User]:
        with self._lock:
            return sorted(self._load_locked().values(), key=lambda u: u.name)

    def get(self, name: str) -> User | None:
        with self._lock:
            return self._load_locked().get(name)

    def authenticate(self, name: str, password: str) -> User | None:
        user = self.get(name)
        ok = verify_password(password, user.password_hash if user else _DUMMY_HASH)
        return user if ok and user is not None else None

    @staticmethod
    def fingerprint(user: User) -> str:
        """Changes with the password and role: a session remembers it and ends when it no longer matches."""
        return hashlib.sha256(f"{user.role}\0{user.password_hash}".encode()).hexdigest()[:32]

    # -- changes (the CLI) --

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """This store's lock and an exclusive lock on the file's lock file: two ``facegate user`` commands at
        once (separate processes) each read, change and rename the file, and without it one change is lost."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the lock

    def add(self, name: str, role: str, password: str) -> User:
        check_name(name)
        if role not in self.roles:
            raise AccountError(f"role {role!r}: use {' or '.join(self.roles)}")
        user = User(name, role, hash_password(check_password(password)))
        with self._changing():
            users = dict(self._load_locked())
            if name in users:
                raise AccountError(f"user {name!r} exists (use 'facegate user passwd')")
            users[name] = user
            self._save_locked(users)
        return user

    def passwd(self, name: str, password: str) -> User:
        with self._changing():
            users = dict(self._load_locked())
            if name not in users:
                raise AccountError(f"no user {name!r}")
            users[name] = User(name, users[name].role, hash_password(check_password(password)))
            self._save_locked(users)
            return users[name]

    def remove(self, name: str) -> None:
        with self._changing():
            users = dict(self._load_locked())
            if users.pop(name, None) is None:
                raise AccountError(f"no user {name!r}")
            self._save_locked(users)

    def _save_locked(self, users: dict[str, User]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"users": {u.name: {"role": u.role, "hash": u.password_hash} for u in users.values()}}
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, json.dumps(data, indent=1).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._stamp = None
        self._load_locked()
