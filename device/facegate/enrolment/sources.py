"""Where bulk enrolment photos come from: a folder on disk or a zip upload, one sub-folder per person.

Layout (both): ``<person id>/<photo>`` (deeper folders inside a person's folder are fine), optionally
``people.csv`` at the top with rows ``id,name,groups`` (a header row ``id,name,groups`` is optional; groups
separated by ``;``). A zip whose entries all sit under one folder (``staff/alice/1.jpg``, as zipping a folder
gives) is read from inside that folder.

A zip comes from a browser upload, so it is read as hostile: nothing is ever extracted to disk (no path in it
can escape anywhere), and members with unsafe paths (``..``, absolute, drive letters), symlinks, encryption, an
implausible compression ratio or more than ``max_member_bytes`` are refused one by one with the reason; an
archive with more than ``max_members`` entries or more than ``max_total_bytes`` of content is refused whole.
Reads are capped at the limits whatever the archive's headers claim. Every photo, from either source, must also
pass a pixel-count check before it is decoded (a small PNG can declare a gigapixel).
"""

from __future__ import annotations

import csv
import io
import os
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from facegate.base.imageio import image_dimensions
from facegate.errors import FacegateError

__all__ = [
    "IMAGE_SUFFIXES",
    "BulkInputError",
    "FolderPhotos",
    "PersonInfo",
    "Photo",
    "ZipLimits",
    "ZipPhotos",
    "parse_people_csv",
]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
PEOPLE_CSV = "people.csv"
MAX_IMAGE_PIXELS = 40_000_000  # 40 MP: more than any phone camera; a door needs a face of ~100 px
MAX_PHOTO_BYTES = 20 * 1024 * 1024


class BulkInputError(FacegateError):
    """The folder, archive or people.csv as a whole cannot be used (the message says where and why)."""


@dataclass(frozen=True)
class Photo:
    """One candidate photo: its bytes, or the reason it was refused before decoding (``data`` is then None)."""

    person_id: str
    source: str  # as shown in the summary: "alice/1.jpg"
    data: bytes | None
    refused: str | None = None


@dataclass(frozen=True)
class PersonInfo:
    name: str | None = None
    groups: tuple[str, ...] | None = None  # None: leave the person's groups as they are


def parse_people_csv(text: str, origin: str = PEOPLE_CSV) -> dict[str, PersonInfo]:
    """``id,name,groups`` rows (header optional; name and groups may be empty or missing)."""
    people: dict[str, PersonInfo] = {}
    for line_no, row in enumerate(csv.reader(io.StringIO(text)), 1):
        cells = [c.strip() for c in row]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        if line_no == 1 and [c.lower() for c in cells[:3]] == ["id", "name", "groups"][: len(cells[:3])]:
            continue
        if len(cells) > 3:
            raise BulkInputError(f"{origin}:{line_no}: {len(cells)} columns; expected id,name,groups")
        person_id = cells[0]
        problem = _bad_person_id(person_id)
        if problem:
            raise BulkInputError(f"{origin}:{line_no}: person id {person_id!r}: {problem}")
        if person_id in people:
            raise BulkInputError(f"{origin}:{line_no}: person id {person_id!r} appears twice")
        name = cells[1] if len(cells) > 1 and cells[1] else None
        groups = tuple(g.strip() for g in cells[2].split(";") if g.strip()) if len(cells) > 2 and cells[2] else None
        if groups:
            from facegate.access.policy import PolicyError, parse_groups

            try:
                groups = parse_groups(list(groups), f"{origin}:{line_no}: groups")
            except PolicyError as exc:
                raise BulkInputError(str(exc)) from None
        people[person_id] = PersonInfo(name, groups)
    return people


def _bad_person_id(person_id: str) -> str | None:
    if not person_id:
        return "empty"
    if person_id in (".", "..") or "/" in person_id or "\\" in person_id:
        return "not a plain name"
    if any(ord(ch) < 32 for ch in person_id):
        return "contains control characters"
    if len(person_id) > 200:
        return "longer than 200 characters"
    return None


def check_photo_bytes(data: bytes) -> str | None:
    """Why these bytes are not decoded (too big, too many pixels, a size that cannot be read first), or None.

    OpenCV picks the decoder by content, not by the file name, and decodes a few hundred bytes of BMP, TIFF,
    PGM or HDR into hundreds of megapixels: so only the formats whose size ``facegate.base.imageio`` reads from the
    header are decoded at all.
    """
    if len(data) > MAX_PHOTO_BYTES:
        return f"file larger than {MAX_PHOTO_BYTES // (1024 * 1024)} MiB"
    header = image_dimensions(data)  # the same header reader decode_image uses
    if header is None:
        return "not a JPEG, PNG, BMP, WebP or PNM image whose size can be read before decoding"
    pixels = header[1] * header[2]
    if pixels > MAX_IMAGE_PIXELS:
        return f"image has {pixels / 1e6:.0f} megapixels (at most {MAX_IMAGE_PIXELS // 1_000_000})"
    return None


def _is_hidden(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" or p.lower() in ("thumbs.db", "desktop.ini") for p in parts)


class FolderPhotos:
    """``DIR/<person id>/...`` on disk. ``people`` is people.csv (empty without one), ``total`` the photo count."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise BulkInputError(f"{self.folder}: not a folder")
        csv_path = self.folder / PEOPLE_CSV
        self.people: dict[str, PersonInfo] = {}
        if csv_path.is_file():
            try:
                text = csv_path.read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                raise BulkInputError(f"{csv_path}: cannot read: {exc}") from None
            self.people = parse_people_csv(text, str(csv_path))
        self._files: list[tuple[str, Path]] = []
        self.refused: list[Photo] = []  # files outside any person folder
        for entry in sorted(self.folder.iterdir()):
            if _is_hidden((entry.name,)) or entry.name == PEOPLE_CSV:
                continue
            if not entry.is_dir():
                self.refused.append(Photo("", entry.name, None, "not inside a person's folder"))
                continue
            # os.walk rather than rglob: a person's folder may be a symlink (to a share, a camera roll)
            visited: set[str] = set()
            for root, dirs, files in os.walk(entry, followlinks=True):
                real = os.path.realpath(root)
                if real in visited:  # a symlink loop
                    dirs[:] = []
                    continue
                visited.add(real)
                dirs[:] = sorted(d for d in dirs if not _is_hidden((d,)))
                self._files += [(entry.name, Path(root) / f) for f in sorted(files) if not _is_hidden((f,))]
        self.total = len(self._files) + len(self.refused)

    def person_ids(self) -> list[str]:
        return sorted({pid for pid, _ in self._files})

    def __iter__(self) -> Iterator[Photo]:
        yield from self.refused
        for person_id, path in self._files:
            source = path.relative_to(self.folder).as_posix()
            problem = _bad_person_id(person_id)
            if problem:
                yield Photo(person_id, source, None, f"folder name is not a usable person id: {problem}")
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                yield Photo(person_id, source, None, f"not an image file ({path.suffix or 'no extension'})")
                continue
            try:
                size = path.stat().st_size
                if size > MAX_PHOTO_BYTES:
                    yield Photo(person_id, source, None, f"file larger than {MAX_PHOTO_BYTES // (1024 * 1024)} MiB")
                    continue
                data = path.read_bytes()
            except OSError as exc:
                yield Photo(person_id, source, None, f"cannot read: {exc.strerror or exc}")
                continue
            problem = check_photo_bytes(data)
            yield Photo(person_id, source, None if problem else data, problem)


@dataclass(frozen=True)
class ZipLimits:
    max_members: int = 10_000
    max_member_bytes: int = MAX_PHOTO_BYTES
    max_total_bytes: int = 1024 * 1024 * 1024
    max_ratio: float = 100.0  # JPEG and PNG barely compress; a 1000:1 member is a bomb, not a photo


class ZipPhotos:
    """A zip archive laid out like a folder (see the module docstring). Use as a context manager."""

    def __init__(self, file: Path | BinaryIO, limits: ZipLimits | None = None, name: str | None = None) -> None:
        self.limits = limits or ZipLimits()
        self.name = name or (str(file) if isinstance(file, Path | str) else "upload.zip")
        try:
            self._zip = zipfile.ZipFile(file)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise BulkInputError(f"{self.name}: not a readable zip archive: {exc}") from None
        try:
            self._scan()
        except BaseException:
            self._zip.close()
            raise

    def _scan(self) -> None:
        infos = self._zip.infolist()
        if len(infos) > self.limits.max_members:
            raise BulkInputError(f"{self.name}: {len(infos)} entries; at most {self.limits.max_members} are read")
        declared = sum(max(i.file_size, 0) for i in infos if not i.is_dir())
        if declared > self.limits.max_total_bytes:
            raise BulkInputError(f"{self.name}: {declared} bytes uncompressed; at most {self.limits.max_total_bytes}")
        entries: list[tuple[tuple[str, ...] | None, zipfile.ZipInfo]] = []
        for info in infos:
            if info.is_dir():
                continue
            entries.append((_safe_parts(info.filename), info))
        # Zipping a folder puts everything under it: read from inside that one folder.
        visible = [p for p, _ in entries if p is not None and not _is_hidden(p)]
        strip = 0
        if visible and len({p[0] for p in visible}) == 1 and all(
                len(p) >= 3 or (len(p) == 2 and p[1] == PEOPLE_CSV) for p in visible):
            strip = 1
        self.people: dict[str, PersonInfo] = {}
        self._members: list[tuple[str, str, zipfile.ZipInfo | None, str | None]] = []
        for parts, info in entries:
            if parts is None:
                self._members.append(("", info.filename, None, "unsafe path in archive"))
                continue
            parts = parts[strip:]
            if _is_hidden(parts):
                continue
            source = "/".join(parts)
            if parts == (PEOPLE_CSV,):
                self.people = parse_people_csv(self._read_text(info), f"{self.name}:{source}")
                continue
            if len(parts) < 2:
                self._members.append(("", source, None, "not inside a person's folder"))
                continue
            self._members.append((parts[0], source, info, self._member_problem(parts, info)))
        self.total = len(self._members)

    def _member_problem(self, parts: tuple[str, ...], info: zipfile.ZipInfo) -> str | None:
        problem = _bad_person_id(parts[0])
        if problem:
            return f"folder name is not a usable person id: {problem}"
        if stat.S_ISLNK(info.external_attr >> 16):
            return "symbolic link in archive"
        if info.flag_bits & 0x1:
            return "encrypted member"
        if PurePosixPath(parts[-1]).suffix.lower() not in IMAGE_SUFFIXES:
            return f"not an image file ({PurePosixPath(parts[-1]).suffix or 'no extension'})"
        if info.file_size > self.limits.max_member_bytes:
            return f"larger than {self.limits.max_member_bytes // (1024 * 1024)} MiB uncompressed"
        if info.compress_size > 0 and info.file_size / info.compress_size > self.limits.max_ratio:
            return f"compression ratio {info.file_size / info.compress_size:.0f}:1 (a zip bomb, not a photo)"
        if info.compress_size == 0 and info.file_size > 0:
            return "corrupt member sizes"
        return None

    def _read_text(self, info: zipfile.ZipInfo) -> str:
        data = self._read(info, 1024 * 1024)
        if data is None:
            raise BulkInputError(f"{self.name}: {info.filename}: larger than 1 MiB or unreadable")
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise BulkInputError(f"{self.name}: {info.filename}: not UTF-8 text: {exc}") from None

    def _read(self, info: zipfile.ZipInfo, cap: int) -> bytes | None:
        """The member's bytes, never more than ``cap`` + 1 decompressed (None beyond it or when unreadable)."""
        try:
            with self._zip.open(info) as fh:
                data = fh.read(cap + 1)
        except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError, ValueError):
            return None
        return None if len(data) > cap else data

    def person_ids(self) -> list[str]:
        return sorted({pid for pid, _, info, problem in self._members if info is not None and problem is None})

    def __iter__(self) -> Iterator[Photo]:
        read_total = 0
        for person_id, source, info, problem in self._members:
            if info is None or problem is not None:
                yield Photo(person_id, source, None, problem)
                continue
            data = self._read(info, self.limits.max_member_bytes)
            if data is None:
                yield Photo(person_id, source, None, "unreadable or larger than its limit when decompressed")
                continue
            read_total += len(data)
            if read_total > self.limits.max_total_bytes:
                raise BulkInputError(f"{self.name}: more than {self.limits.max_total_bytes} bytes of content")
            problem = check_photo_bytes(data)
            yield Photo(person_id, source, None if problem else data, problem)

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> ZipPhotos:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _safe_parts(name: str) -> tuple[str, ...] | None:
    """The path's parts, or None when it could point outside the archive's root (zip-slip) or is odd."""
    if not name or "\\" in name or "\x00" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if not parts or ".." in parts:
        return None
    return parts
