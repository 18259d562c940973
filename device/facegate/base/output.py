"""Where a command's results and messages go: JSON lines on stdout, ``facegate: ...`` lines on stderr.

The one output of every ``facegate`` subcommand (the root CLI and each area's own CLI module); a class so that
tests and the service can capture both streams.
"""

from __future__ import annotations

import json
from typing import Any, TextIO


class Output:
    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out, self.err = out, err

    def result(self, obj: dict[str, Any]) -> None:
        self.out.write(json.dumps(obj) + "\n")
        self.out.flush()

    def message(self, text: str) -> None:
        self.err.write(f"facegate: {text}\n")
