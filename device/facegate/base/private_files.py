"""Owner-only state: the state directory is 0700, every file the door keeps there is 0600, whatever the umask.

The state directory holds personal data (names and templates in the gallery, names in the outbox and journal,
who came when) and secrets' side effects (used command nonces, the code-guessing brake). systemd's unit sets
``UMask=0077`` and ``StateDirectoryMode=0700``, but the door also runs outside it (``facegate run`` from a
shell, the demo, the CLI on an admin machine) where the usual umask 022 would make every new file
world-readable. So files are created with mode 0600 and chmodded to it (an umask can only remove bits, and a
file made by an older version keeps its old mode until it is chmodded).

SQLite gives a database's ``-wal``, ``-shm`` and ``-journal`` files the permissions of the database file
itself, so a database made 0600 *before* SQLite first opens it keeps all its side files 0600 too;
:func:`private_sqlite` also fixes side files left by an older version.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

__all__ = ["DIR_MODE", "FILE_MODE", "SQLITE_SIDE_FILES", "private_dir", "private_file", "private_sqlite",
           "write_private"]

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def _chmod(path: Path, mode: int) -> None:
    """chmod, tolerating a file someone else owns (logged: the operator should know it stays readable)."""
    try:
        if (os.stat(path).st_mode & 0o777) != mode:
            os.chmod(path, mode)
    except FileNotFoundError:
        pass
    except PermissionError as exc:
        log.warning("cannot make %s owner-only (mode %o): %s", path, mode, exc)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) and make ``path`` itself 0700; returns it.

    Only the directory named is tightened: its parents may be shared directories (``/var/lib``, a home).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    _chmod(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty if missing, and make it 0600; returns it.

    An existing file is only chmodded, never opened: closing any descriptor of a file drops every POSIX lock
    this process holds on it, and SQLite's locks are POSIX locks. Opening and closing a database that another
    connection of this process has open (the console opening the gallery beside the frame loop) left that
    connection without its locks, and its next query failed with "disk I/O error".
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        _chmod(path, FILE_MODE)
        return path
    try:
        with contextlib.suppress(PermissionError):
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    _chmod(path, FILE_MODE)
    return path


def private_sqlite(path: Path) -> Path:
    """Before ``sqlite3.connect(path)``: the database file exists and is 0600, and so are its side files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    private_file(path)
    for suffix in SQLITE_SIDE_FILES:
        _chmod(path.with_name(path.name + suffix), FILE_MODE)
    return path


def write_private(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename), mode 0600.

    ``durable`` also fsyncs the directory so the rename survives a power cut (not possible on every filesystem).
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # O_CREAT's mode does not apply to a leftover temporary file
        with os.fdopen(fd, "wb") as fh:
            fd = -1
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        if fd >= 0:
            os.close(fd)
    os.replace(tmp, path)
    if not durable:
        return
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
