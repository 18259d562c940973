"""The one polling wait of the tests and the tools: real threads and processes, polled against a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], timeout: float = 5.0, what: str = "the condition",
             interval: float = 0.01, *, fail: bool = True) -> bool:
    """Poll ``predicate`` until it is true and return True.

    After ``timeout`` seconds: an AssertionError naming ``what``, or with ``fail=False`` the return value False
    (for a bounded wait that may rightly end without the condition, e.g. giving a wrong action time to happen,
    or a caller that reports the timeout its own way).
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            if fail:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
            return False
        time.sleep(interval)
    return True
