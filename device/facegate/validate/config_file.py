"""Reading a TOML config file and checking it against its schema: the door's config.toml and fleet.toml alike.

One reader so both files fail the same way: a missing or unreadable file, text that is not TOML or not UTF-8,
and every invalid key named by its dotted path ("unknown key" for a mistyped one), each raised as the caller's
config error (exit code 78) with the file named, never as a traceback.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

__all__ = ["describe", "read_toml", "validated"]

Model = TypeVar("Model", bound=BaseModel)


def read_toml(path: Path, error: type[Exception]) -> dict[str, object]:
    """The file's tables; ``error`` (the caller's config error) names the file and what is wrong with it."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None
    # Found by the config fuzzer (tests/service/test_fuzz.py): these escaped as tracebacks instead of exit code 78.
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None
    except RecursionError:
        raise error(f"{path}: not valid TOML: arrays or tables nested too deeply") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the config file: {exc.strerror or exc}") from None


def describe(exc: ValidationError) -> str:
    """Every problem as ``dotted.key: what is wrong``, joined with "; "."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{key}: {msg}")
    return "; ".join(lines)


def validated(model: type[Model], data: dict[str, object], origin: str, error: type[Exception]) -> Model:
    """``data`` as ``model``, or ``error`` naming ``origin`` (the file) and every key at fault."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"{origin}: {describe(exc)}") from None
