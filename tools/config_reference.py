#!/usr/bin/env python3
"""Print the skeleton of docs/configuration.md's tables from the schema (device/facegate/config.py).

Every key of the pydantic models, dotted (``recognition.quality.min_face_px``), with its type and default, one
table per section and the meaning column left empty: paste the rows of new keys into the page and write what
they mean. ``tests/house/test_config_docs.py`` fails while a key of the schema is missing from the page (or the page
names a key the schema does not have), so the page cannot fall behind the code unnoticed.

    python tools/config_reference.py            # all sections
    python tools/config_reference.py web door   # only these
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

if __package__ in (None, ""):  # run as a file: the checkout's root (tools) and device/ (facegate) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "device")]

from facegate.config import Config


def section_model(annotation: object) -> type[BaseModel] | None:
    """The model of a sub-table (``CameraConfig``, or ``OsdpConfig | None`` for an optional table), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if len(models) == 1 else None
    return None


def type_name(annotation: object) -> str:
    """A short, readable type: ``int | str | None``, ``list[str]``, ``"NO" | "NC"``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f'`"{a}"`' if isinstance(a, str) else f"`{a}`" for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(type_name(a) for a in typing.get_args(annotation))
    if origin is list:
        return f"list[{type_name(typing.get_args(annotation)[0])}]"
    if annotation is type(None):
        return "none"
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def default_text(model: type[BaseModel], name: str) -> str:
    field = model.model_fields[name]
    if field.is_required():
        return "required"
    value = field.default
    if value is PydanticUndefined or value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str | Path):
        return f'`"{value}"`'
    if isinstance(value, list):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def bounds_text(model: type[BaseModel], name: str) -> str:
    """The field's numeric bounds (``> 0, ≤ 120``) from its pydantic constraints; empty when it has none."""
    marks = []
    for meta in model.model_fields[name].metadata:
        for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            value = getattr(meta, attr, None)
            if value is not None:
                marks.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
    return ", ".join(marks)


def schema_rows(model: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, type, default) for every leaf key, in the schema's order."""
    rows: list[tuple[str, str, str]] = []
    for name, field in model.model_fields.items():
        sub = section_model(field.annotation)
        if sub is not None:
            rows += schema_rows(sub, f"{prefix}{name}.")
        else:
            type_ = type_name(field.annotation)
            bounds = bounds_text(model, name)
            rows.append((prefix + name, f"{type_} ({bounds})" if bounds else type_, default_text(model, name)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", help="only these top-level sections (top-level keys: 'top')")
    args = parser.parse_args(argv)
    current = None
    for key, type_, default in schema_rows():
        section = key.split(".")[0] if "." in key else "top"
        if args.sections and section not in args.sections:
            continue
        if section != current:
            print(f"\n## {section}\n\n| key | type | default | meaning |\n|---|---|---|---|")
            current = section
        print(f"| `{key}` | {type_} | {default} |  |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
