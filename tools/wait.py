"""The one polling wait of the tests and the tools: real threads and processes, polled against a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError, TimeoutError):
    """The condition did not come in time: an AssertionError so a test fails with the message, and a
    TimeoutError so a tool's ``except TimeoutError`` reports it its own way."""


def wait_for(predicate: Callable[[], T], timeout: float = 5.0, what: str = "the condition",
             interval: float = 0.01, *, fail: bool = True,
             ignore: tuple[type[Exception], ...] = ()) -> T | Literal[False]:
    """Poll ``predicate`` until it returns something true and return that value (True for a plain condition,
    the found item for a search).

    An exception of a type in ``ignore`` counts as "not yet" (e.g. a server still starting refuses the
    connection). After ``timeout`` seconds: a WaitTimeout naming ``what``, or with ``fail=False`` the return
    value False (for a bounded wait that may rightly end without the condition, e.g. giving a wrong action time
    to happen, or a caller that reports the timeout its own way).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except ignore:
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            if fail:
                raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what}")
            return False
        time.sleep(interval)
