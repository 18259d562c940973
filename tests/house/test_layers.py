"""The package's floors: each area imports only from its own floor or below, no import cycle, no private reach.

Why a test: a newcomer reads the house from the ground up (docs/architecture.md); an upward import (the config
schema pulling in the events area, the console importing the service) hides a cycle that only shows at run
time, and an ``obj._private`` read across packages couples two areas through what one of them never promised.
Every import counts: at module top, inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ROOT

PACKAGE = ROOT / "device" / "facegate"

# Floor of each top-level unit of facegate (an area package, or a module at the root). Same floor or lower only.
FLOORS: dict[str, int] = {
    "facegate": 0, "errors": 0, "base": 0, "validate": 0,  # ground: exceptions, files, images, pure parsers
    "config": 1,                                            # the one typed schema
    "process": 2, "pi": 2, "privacy": 2,                    # the process on its host; sealing at rest
    "vision": 3, "camera": 3,                               # pixels in: models, detector, embedder, frames
    "recognition": 4, "liveness": 4,                        # what the faces mean
    "gallery": 5, "events": 5,                              # who is known; what is said (outbox, MQTT)
    "access": 6, "journal": 6,                              # who may enter, when; local history
    "panel": 7, "sync": 7, "enrolment": 7, "fairness": 7,   # the areas built on those
    "rights": 7,                                            # subject export, decrypt, retention
    "web": 8,                                               # the console, through its narrow port (web/port.py)
    "wiring": 9,                                            # builders that assemble the service
    "fleet": 9,                                             # the admin side: one console for every door
    "doctor": 10,                                           # checks the whole device
    "service": 11,                                          # the running door
    "cli": 12,                                              # the front door of the command line
}


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "facegate"


def imports(module: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every facegate import, wherever it stands."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("facegate"):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")
                base = ".".join(anchor[: len(anchor) - node.level + 1] + ([base] if base else []))
            if not base.startswith("facegate"):
                continue
            for alias in node.names:  # `from facegate.x import y` may name a module y
                sub = f"{base}.{alias.name}"
                yield node.lineno, sub if sub in MODULES else base


MODULES = dict(modules())


def test_every_unit_has_a_floor() -> None:
    missing = sorted({unit(m) for m in MODULES} - FLOORS.keys())
    assert not missing, f"give these a floor in tests/house/test_layers.py FLOORS: {missing}"


def test_no_import_from_a_higher_floor() -> None:
    upward = []
    for module, path in MODULES.items():
        own = FLOORS[unit(module)]
        for line, target in imports(module, path):
            if FLOORS.get(unit(target), 0) > own:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} {module} (floor {own}) imports "
                              f"{target} (floor {FLOORS[unit(target)]})")
    assert not upward, "\n".join(upward)


def test_no_import_cycle() -> None:
    graph = {m: {t for _, t in imports(m, p) if t in MODULES and t != m} for m, p in MODULES.items()}
    # A package's __init__ importing its own submodules is how a package speaks, not a cycle of two jobs.
    for m in graph:
        graph[m] = {t for t in graph[m] if not (MODULES[m].name == "__init__.py" and t.startswith(m + "."))}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append([*stack[stack.index(t):], t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


# (module, attribute): reads of another object's private attribute that are deliberate, each with its reason.
PRIVATE_ALLOWED: dict[tuple[str, str], str] = {}


def private_reads(module: str, path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own_classes = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            value = node.value
            if isinstance(value, ast.Name) and value.id in {"self", "cls"} | own_classes:
                continue
            if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "super":
                continue
            yield node.lineno, f"{ast.unparse(value)}.{node.attr}"
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("facegate"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") \
                        and unit(node.module) != unit(module):
                    yield node.lineno, f"from {node.module} import {alias.name}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_attribute_across_objects(module: str) -> None:
    found = [f"{MODULES[module].relative_to(PACKAGE.parent)}:{line} {what}"
             for line, what in private_reads(module, MODULES[module])
             if (module, what.rpartition(".")[2]) not in PRIVATE_ALLOWED]
    assert not found, "\n".join(found)
