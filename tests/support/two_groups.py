"""A tiny two-group face set for the per-group reports of tools/eval/evaluate.py: groups a and b, three people of
two images each; a's genuine pairs score 0.9, b's ``b_genuine``; impostor pairs within b score ``b_impostor``,
every other impostor pair 0."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tools.eval import evaluate as ev


def two_groups(tmp: Path, b_genuine: float, b_impostor: float,
               header: bool) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray, Path]:
    """(protocol, genuine scores, impostor scores, impostor rows i and j, the groups CSV, with a header row or not)."""
    people = {f"a{i}": [Path(f"a{i}_{j}") for j in range(2)] for i in range(3)}
    people |= {f"b{i}": [Path(f"b{i}_{j}") for j in range(2)] for i in range(3)}
    row = {p: k for k, p in enumerate(p for imgs in people.values() for p in imgs)}
    proto = ev.open_protocol(people, row, 20)
    genuine = np.array([0.9 if owner.startswith("a") else b_genuine for owner in proto.genuine_people])
    _, iu, ju = ev.impostor_scores(np.ones((len(row), 4), dtype=np.float32), proto.impostor_rows)
    names = proto.impostor_people
    imp = np.array([b_impostor if names[i][0] == names[j][0] == "b" else 0.0 for i, j in zip(iu, ju, strict=True)])
    csv = tmp / "groups.csv"
    csv.write_text(("identity,group\n" if header else "") + "".join(f"{n},{n[0]}\n" for n in people))
    return proto, genuine, imp, iu, ju, csv
