"""Helpers shared by test modules (imported as ``from support import ...``, like broker.py)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], timeout: float = 2.0, what: str = "the condition",
             interval: float = 0.01) -> None:
    """Poll ``predicate`` until it is true; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)
