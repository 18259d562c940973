"""Hashing, the models' manifest and ``--check``: the standard library only, so a bare interpreter can check
``models/`` against ``models/manifest.json``."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1


# --------------------------------------------------------------------------------------------
# hashing, manifests and --check (standard library only)
# --------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, streamed so large archives do not sit in memory twice."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(directory: Path) -> dict[str, Any]:
    """Read ``manifest.json`` from ``directory``."""
    with (directory / MANIFEST_NAME).open(encoding="utf-8") as handle:
        manifest: dict[str, Any] = json.load(handle)
    return manifest


def write_manifest(directory: Path, entries: Sequence[dict[str, Any]]) -> None:
    """Write entries as a manifest with stable formatting so rebuilds diff cleanly.

    Numeric lists (shapes) are kept on one line so a reviewer can read the file.
    """
    problems = check_defaults(entries)
    if problems:
        raise SystemExit(f"{directory}: " + "; ".join(problems))
    text = json.dumps({"format": MANIFEST_FORMAT, "models": list(entries)}, indent=2)
    text = re.sub(r"\[\s+([-0-9.,\s]+?)\s+\]", lambda m: "[" + " ".join(m[1].split()) + "]", text)
    atomic_write(directory / MANIFEST_NAME, (text + "\n").encode("utf-8"))


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a concurrent reader sees the old or new file only."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def check_defaults(entries: Iterable[dict[str, Any]]) -> list[str]:
    """Return problems with default flags; the device picks a model per role by ``default``."""
    counts: dict[str, int] = {}
    for entry in entries:
        counts.setdefault(entry["role"], 0)
        counts[entry["role"]] += int(bool(entry["default"]))
    return [f"role {role!r} has {n} default models (want exactly 1)" for role, n in sorted(counts.items()) if n != 1]


def check_directory(directory: Path) -> list[str]:
    """Compare every manifest entry with the file on disk; return one message per problem."""
    try:
        manifest = load_manifest(directory)
    except (OSError, json.JSONDecodeError) as exc:
        return [f"{directory / MANIFEST_NAME}: unreadable manifest ({exc})"]
    if manifest.get("format") != MANIFEST_FORMAT:
        return [f"{directory / MANIFEST_NAME}: unsupported format {manifest.get('format')!r}"]
    problems = check_defaults(manifest["models"])
    for entry in manifest["models"]:
        path = directory / entry["file"]
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            problems.append(f"{path}: sha256 {actual} != manifest {entry['sha256']}")
        elif path.stat().st_size != entry["bytes"]:
            problems.append(f"{path}: size {path.stat().st_size} != manifest {entry['bytes']}")
    return problems
