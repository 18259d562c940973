"""Console threads run at a lower CPU priority than the frame loop (Linux: a per-thread nice value).

On a 2- or 4-core Pi the console's JPEG encoding and request handling compete with recognition for cores; at
nice +10 the kernel gives the frame loop's threads the CPU first whenever both want it, so viewers get fewer
frames rather than the door getting slower decisions. Raising one's own nice value needs no privilege, but a
system call filter can still refuse it (systemd's ``@resources`` group holds ``setpriority``; the shipped unit
allows it back): then the console competes with the door at full priority, which an operator must hear about.
"""

from __future__ import annotations

import functools
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
    except AttributeError:  # not Linux: no per-thread priorities to lower
        return
    except OSError as exc:
        _warn_not_lowered(exc.errno or 0, exc.strerror or str(exc))


@functools.cache
def _warn_not_lowered(errno: int, reason: str) -> None:
    """Log once per cause, not once per console thread (each request has a thread of its own)."""
    log.warning("console threads run at the door's priority, not nice +%d: setpriority failed (%s, errno %d); under "
                "systemd allow it with SystemCallFilter=setpriority (systemd/facegate.service does)",
                CONSOLE_NICE, reason, errno)
