"""Whether the wall clock may judge validity dates and schedules, and the clock the access policy reads.

A Raspberry Pi has no battery-backed clock unless one is fitted: it boots with the time it saved at shutdown
(fake-hwclock, systemd-timesyncd's clock file) and only learns the real time from NTP. Until then "now" can be
days or months behind, and a person whose ``valid_until`` has passed would still be let in. So the service asks
this module, at each decision that depends on a date or a schedule, whether the clock can be believed.

The clock is trusted when any of these holds (checked in this order, after a sanity floor on the year):

* the kernel says it is synchronised: ``adjtimex(2)`` (read only, through ctypes) does not return
  ``TIME_ERROR`` and ``STA_UNSYNC`` is clear. chrony, ntpd and systemd-timesyncd all clear the flag once they
  discipline the clock; the kernel sets it again when no update came for a long time (its error bound reached
  16 s, roughly 9 hours);
* ``/run/systemd/timesync/synchronized`` exists: systemd-timesyncd synchronised the clock since this boot
  (``/run`` is emptied at every boot). This keeps an offline door trusted after the kernel's flag ages out;
* the clock was synchronised earlier in this service's run (same reason, for chrony or ntpd);
* a real-time clock set the system time at boot (``/sys/class/rtc/rtcN/hctosys`` is 1): a fitted RTC (the
  Pi 5's, with its battery) keeps time without a network. An RTC whose battery died reads a year long past,
  which the year floor catches.

``facegate doctor`` reports the same :class:`ClockProbe` answer, so both say the same thing about the same clock.
Every input of the probe (the kernel read, the two paths, the wall clock) can be given, so tests choose the
facts without touching the machine's clock.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

MIN_YEAR = 2025  # a clock showing an earlier year was never set (the Pi's default is 1970 or the image's date)
TIME_ERROR = 5  # adjtimex(2) return value: the clock is not synchronised
STA_UNSYNC = 0x0040  # timex.status bit: the clock is not synchronised
TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")
RTC_ROOT = Path("/sys/class/rtc")
FIX = ("enable time sync (sudo timedatectl set-ntp true) and let the door reach an NTP server, or fit a "
       "battery-backed RTC; until then people with validity dates or schedules are refused (clock_untrusted)")


@dataclass(frozen=True)
class ClockState:
    """The probe's answer: ``trusted`` and, for logs, events and doctor, why."""

    trusted: bool
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class KernelSync:
    synced: bool
    detail: str


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h>: the fields read here, then room for the rest (the kernel writes it all).
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("rest", ctypes.c_byte * 256)]


def kernel_sync() -> KernelSync | None:
    """The kernel's own view through a read-only ``adjtimex`` (``modes`` = 0); None where it cannot be asked."""
    try:
        adjtimex = ctypes.CDLL(None, use_errno=True).adjtimex
    except (OSError, AttributeError):  # not Linux
        return None
    timex = _Timex()
    state = adjtimex(ctypes.byref(timex))
    if state < 0:
        return None
    if state == TIME_ERROR or timex.status & STA_UNSYNC:
        return KernelSync(False, f"kernel: not synchronised (adjtimex state {state}, status 0x{timex.status:x})")
    return KernelSync(True, f"kernel: synchronised (estimated error {timex.esterror} us)")


class ClockProbe:
    """Reads the facts listed in the module docstring and says whether the clock can be trusted."""

    def __init__(
        self,
        *,
        kernel: Callable[[], KernelSync | None] = kernel_sync,
        timesync_flag: Path = TIMESYNC_FLAG,
        rtc_root: Path = RTC_ROOT,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._kernel = kernel
        self._timesync_flag = timesync_flag
        self._rtc_root = rtc_root
        self._wall = wall

    def state(self, synced_before: bool = False) -> ClockState:
        """``synced_before``: the caller saw the clock synchronised earlier (see the module docstring)."""
        year = time.gmtime(self._wall()).tm_year
        if year < MIN_YEAR:
            return ClockState(False, f"system year is {year}: the clock was never set", FIX)
        kernel = self._kernel()
        if kernel is not None and kernel.synced:
            return ClockState(True, kernel.detail)
        if self._timesync_flag.exists():
            return ClockState(True, "synchronised by systemd-timesyncd since boot")
        if synced_before:
            return ClockState(True, "synchronised earlier in this run")
        rtc = self._rtc_set_clock()
        if rtc is not None:
            return ClockState(True, f"set at boot from the real-time clock {rtc}")
        why = kernel.detail if kernel is not None else "kernel sync state unavailable"
        return ClockState(False, f"not synchronised since boot and no real-time clock set it ({why})", FIX)

    def _rtc_set_clock(self) -> str | None:
        try:
            for rtc in sorted(self._rtc_root.iterdir()):
                try:
                    if (rtc / "hctosys").read_text().strip() == "1":
                        return rtc.name
                except OSError:
                    continue
        except OSError:
            return None
        return None


class Clock(Protocol):
    """The wall clock the access policy judges by, and whether it is trusted."""

    def time(self) -> float:
        """Now, in seconds since the epoch."""
        ...

    def state(self) -> ClockState: ...


class SystemClock:
    """``access.clock_check = "auto"``: the system clock, trusted as :class:`ClockProbe` says."""

    def __init__(self, probe: ClockProbe | None = None, wall: Callable[[], float] = time.time) -> None:
        self._probe = probe or ClockProbe(wall=wall)
        self._wall = wall
        self._synced_seen = False

    def time(self) -> float:
        return self._wall()

    def state(self) -> ClockState:
        state = self._probe.state(synced_before=self._synced_seen)
        if state.trusted:
            self._synced_seen = True
        return state


class UncheckedClock:
    """``access.clock_check = "off"``: the system clock, always believed (a site that sets time some other way)."""

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall

    def time(self) -> float:
        return self._wall()

    def state(self) -> ClockState:
        return ClockState(True, "not checked (access.clock_check = \"off\")")


def clock_from_config(clock_check: Literal["auto", "off"]) -> Clock:
    return UncheckedClock() if clock_check == "off" else SystemClock()
