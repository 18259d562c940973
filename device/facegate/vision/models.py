"""The model manifest: which .tflite file plays which role, and proof that it is the file we shipped.

Every model is loaded through ``manifest.json`` so a swapped or corrupted file is refused with its name
instead of silently producing wrong embeddings (which would make every threshold meaningless).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facegate.errors import ModelError

MODELS_ENV = "FACEGATE_MODELS"


def default_models_dir() -> Path:
    """Models live next to the source tree (editable install / git checkout), or where FACEGATE_MODELS says."""
    env = os.environ.get(MODELS_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "models"  # device/facegate/vision/models.py -> models/


@dataclass(frozen=True)
class InputSpec:
    shape: tuple[int, ...]
    dtype: str
    mean: float
    std: float

    @property
    def height(self) -> int:
        return self.shape[1]

    @property
    def width(self) -> int:
        return self.shape[2]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    role: str
    default: bool
    path: Path
    sha256: str
    quantization: str
    input: InputSpec
    raw: dict[str, Any]

    def verify(self) -> None:
        """Refuse a missing or altered file; the message names the file so it can be restored."""
        if not self.path.is_file():
            raise ModelError(f"model file missing: {self.path} (model '{self.name}'; run tools/models/build_models.py)")
        actual = sha256_file(self.path)
        if actual != self.sha256:
            raise ModelError(
                f"checksum mismatch for {self.path}: expected sha256 {self.sha256}, got {actual} "
                f"(model '{self.name}'; restore the file or run tools/models/build_models.py)"
            )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Manifest:
    """Parsed ``manifest.json``; lookups by role (default model) or by name."""

    def __init__(self, directory: Path, entries: list[ModelEntry]) -> None:
        self.directory = directory
        self.entries = entries

    @classmethod
    def load(cls, directory: Path | None = None) -> Manifest:
        directory = directory or default_models_dir()
        path = directory / "manifest.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ModelError(f"model manifest missing: {path}") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"model manifest unreadable: {path}: {exc}") from None
        entries = []
        try:
            for item in data["models"]:
                spec = item["input"]
                entries.append(
                    ModelEntry(
                        name=item["name"],
                        role=item["role"],
                        default=bool(item.get("default", False)),
                        path=directory / item["file"],
                        sha256=item["sha256"],
                        quantization=item.get("quantization", "float32"),
                        input=InputSpec(
                            shape=tuple(int(v) for v in spec["shape"]),
                            dtype=spec.get("dtype", "float32"),
                            mean=float(spec.get("mean", 0.0)),
                            std=float(spec.get("std", 1.0)),
                        ),
                        raw=item,
                    )
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"model manifest {path} is malformed: {exc!r}") from None
        return cls(directory, entries)

    def get(self, role: str, name: str | None = None) -> ModelEntry:
        """The named model, or the role's default; verified against its checksum before use."""
        candidates = [e for e in self.entries if e.role == role]
        if name is not None:
            chosen = [e for e in candidates if e.name == name]
            if not chosen:
                known = ", ".join(e.name for e in candidates) or "none"
                raise ModelError(f"no {role} model named '{name}' in {self.directory}/manifest.json (have: {known})")
        else:
            chosen = [e for e in candidates if e.default] or candidates[:1]
            if not chosen:
                raise ModelError(f"no {role} model in {self.directory}/manifest.json")
        entry = chosen[0]
        entry.verify()
        return entry
