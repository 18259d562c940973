"""An ``emit(type, **fields)`` callable that records what the part under test reported (thread-safe: the door's
timers, OSDP and Wiegand report from their own threads)."""

from __future__ import annotations

import threading
from typing import Any


class Events:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, type: str, **fields: Any) -> None:
        with self.lock:
            self.items.append((type, fields))

    def of(self, type: str) -> list[dict[str, Any]]:
        with self.lock:
            return [f for t, f in self.items if t == type]

    def types(self) -> list[str]:
        with self.lock:
            return [t for t, _ in self.items]

    def clear(self) -> None:
        with self.lock:
            self.items.clear()
