"""docs/configuration.md documents every key of the schema, once, and no key the schema does not have.

The page is the reference people configure a door from; a key added to ``facegate.config`` without a row (or a
row left behind by a removed key) fails here instead of going unnoticed.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections import Counter
from pathlib import PurePath

from facegate.config import Config, parse_config
from pydantic import BaseModel
from support import ROOT

PAGE = ROOT / "docs" / "configuration.md"
ROW = re.compile(r"^\|\s*`([A-Za-z0-9_.]+)`\s*\|")


def _sub_model(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        subs = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        return subs[0] if subs else None
    return None


def schema_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for name, field in model.model_fields.items():
        sub = _sub_model(field.annotation)
        keys += schema_keys(sub, f"{prefix}{name}.") if sub is not None else [prefix + name]
    return keys


def documented_keys(text: str) -> list[str]:
    """The first cell of every table row that is one backticked dotted name: the page's key rows."""
    return [m.group(1) for line in text.splitlines() if (m := ROW.match(line))]


def test_the_walk_sees_nested_and_optional_sections() -> None:
    keys = set(schema_keys())
    # A nested table, an optional table and keys the old README table did not list: proof the walk is complete.
    assert {"recognition.quality.min_face_px", "osdp.scbk_file", "wiegand.data0_pin", "mqtt.topic_prefix",
            "recognition.track_iou", "log_level"} <= keys
    assert len(keys) > 100


def test_every_schema_key_is_documented_once_and_nothing_else() -> None:
    documented = documented_keys(PAGE.read_text(encoding="utf-8"))
    keys = schema_keys()
    missing = [k for k in keys if k not in documented]
    unknown = [k for k in documented if k not in keys]
    twice = [k for k, n in Counter(documented).items() if n > 1]
    assert not missing, f"{PAGE.name}: keys of facegate.config not documented: {missing}"
    assert not unknown, f"{PAGE.name}: documented keys the schema does not have: {unknown}"
    assert not twice, f"{PAGE.name}: keys documented more than once: {twice}"


def test_documented_defaults_are_the_schema_defaults() -> None:
    """The default column of each row with a plain literal default matches what an empty config gives."""
    config = parse_config({"osdp": {"port": "/dev/null", "scbk_file": "k"},
                           "wiegand": {"data0_pin": 5, "data1_pin": 6}})
    checked = 0
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        if not (m := ROW.match(line)):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        cell = cells[2]  # key, type, default, meaning
        if not re.fullmatch(r"`[^`]+`", cell):
            continue  # "none", "required": no literal to compare
        node: object = config
        for part in m.group(1).split("."):
            node = getattr(node, part)
        if isinstance(node, bool):
            expected = str(node).lower()
        elif isinstance(node, str | PurePath):
            expected = f'"{node}"'
        elif isinstance(node, list | tuple):  # written as a TOML array
            expected = json.dumps(list(node))
        else:
            expected = str(node)
        assert cell.strip("`") == expected, f"{m.group(1)}: the page says {cell}, the schema's default is {expected}"
        checked += 1
    assert checked > 60
