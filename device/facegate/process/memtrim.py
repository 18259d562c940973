"""Give freed heap memory back to the operating system after a large, rare rebuild (issue 13's soak).

A gallery index rebuild (a synced delta, a local enrolment) allocates tens of megabytes of short-lived rows and
arrays, often on the sync worker's thread and so in its own glibc malloc arena. Freed, that memory stays in the
process: the soak (``tools/checks/soak.py``, 10k persons) measured RSS rising 26 MB and then 14 MB at the first two
deltas and levelling off only after several, which on a 1 GB Pi is memory the door never gets back.
``malloc_trim(0)`` returns free pages of every arena; measured with the same 10k gallery, six deltas in a
row kept RSS flat at 188-197 MB instead of rising from 237 to 260 MB. Elsewhere (musl, macOS) this is a no-op.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from collections.abc import Callable

__all__ = ["release_free_memory"]

log = logging.getLogger(__name__)


def _load() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _load()


def release_free_memory() -> bool:
    """Return free heap pages to the OS (glibc); True if any were released. A few milliseconds; call it rarely."""
    if _TRIM is None:
        return False
    try:
        return bool(_TRIM(0))
    except Exception as exc:  # never let housekeeping hurt the door
        log.debug("malloc_trim failed: %s", exc)
        return False
