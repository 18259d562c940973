"""Console threads run at a lower CPU priority than the frame loop (Linux: a per-thread nice value).

On a 2- or 4-core Pi the console's JPEG encoding and request handling compete with recognition for cores; at
nice +10 the kernel gives the frame loop's threads the CPU first whenever both want it, so viewers get fewer
frames rather than the door getting slower decisions. Raising one's own nice value needs no privilege.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

CONSOLE_NICE = 10


def lower_this_thread() -> None:
    """Renice the calling thread (a no-op where the OS has no per-thread priorities)."""
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        if current < CONSOLE_NICE:
            os.setpriority(os.PRIO_PROCESS, tid, CONSOLE_NICE)
    except (AttributeError, OSError) as exc:  # not Linux, or a sandbox that forbids it
        log.debug("could not lower the console thread's priority: %s", exc)
