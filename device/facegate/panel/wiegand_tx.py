"""Wiegand output: clocks frames out on two GPIOs (DATA0 for a 0 bit, DATA1 for a 1 bit) from one thread.

Wiegand lines idle high (the panel pulls them up to 5 V); a bit is a short low pulse on DATA0 (0) or DATA1
(1). ``driver = "open_collector"`` (default): each GPIO drives a transistor or opto that pulls the line low,
so a pulse is the GPIO *high*. ``driver = "direct"``: the GPIO drives the line through a level shifter, so a
pulse is the GPIO *low*.

Timing: pulses are timed by busy-waiting on ``time.perf_counter_ns`` in a dedicated thread (sleeping would
overshoot by the scheduler tick). Linux user space gives no hard guarantee: another process or an interrupt
can stretch a pulse or a gap by tens to hundreds of microseconds (see docs/panels.md, "Wiegand" for what was
measured). Panels are tolerant of exactly that: typical readers send 20-100 µs pulses 0.2-20 ms apart and
panels accept a wide window of both; the defaults (100 µs pulses every 2 ms) sit in the middle, so a
stretched pulse or gap stays inside what a panel accepts. A frame is 26 or 34 pulses (~52-68 ms) and is
followed by a quiet gap so the panel sees its end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable

from gpiozero import DigitalOutputDevice
from gpiozero.pins import Factory

from facegate.config import WiegandConfig
from facegate.panel.output import Decision
from facegate.panel.wiegand import FORMATS, CardFormatError, check_fits, encode

log = logging.getLogger(__name__)

FRAME_GAP_SECONDS = 0.05  # silence after a frame: panels end a frame after ~10-25 ms without a pulse
FRAME_BREAK_US = 10_000  # a leading-edge gap above this may end the frame early at the panel
QUEUE_LIMIT = 16  # credentials waiting; more means something is wrong, and old reads are worthless


def try_realtime_priority(priority: int = 10) -> bool:
    """Ask for SCHED_FIFO for the calling thread (Linux applies it per thread), so that ordinary processes
    cannot preempt a frame. Needs CAP_SYS_NICE or an RLIMIT_RTPRIO (systemd ``LimitRTPRIO=``); without it the
    thread stays at normal priority and the frame self-check (below) still catches a broken frame."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError) as exc:
        log.info("Wiegand sender runs without real-time priority (%s)", exc)
        return False
    return True


def _wait_until(deadline_ns: int) -> None:
    while time.perf_counter_ns() < deadline_ns:
        pass


class WiegandOutput:
    """A :class:`facegate.panel.output.CredentialOutput` on two GPIOs."""

    channel = "wiegand"

    def __init__(self, config: WiegandConfig, emit: Callable[..., object], pin_factory: Factory | None = None) -> None:
        self._config = config
        self._emit = emit
        self.format = FORMATS[config.format]
        check_fits(self.format, config.facility_code, 0)  # also validated by the config schema
        active_high = config.driver == "open_collector"
        self._data0 = DigitalOutputDevice(config.data0_pin, active_high=active_high, initial_value=False,
                                          pin_factory=pin_factory)
        try:
            self._data1 = DigitalOutputDevice(config.data1_pin, active_high=active_high, initial_value=False,
                                              pin_factory=pin_factory)
        except BaseException:
            self._data0.close()
            raise
        self._queue: queue.Queue[tuple[str, int] | None] = queue.Queue(QUEUE_LIMIT)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._sent = 0
        self._last_sent_at: float | None = None
        self._closed = False
        self._realtime = False

    @property
    def decision(self) -> Decision:
        return self._config.decision

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="facegate-wiegand", daemon=True)
            self._thread.start()

    def send_credential(self, person_id: str, card_number: int) -> None:
        try:
            check_fits(self.format, self._config.facility_code, card_number)
        except CardFormatError as exc:
            self._emit("credential_failed", person_id=person_id, channel=self.channel, format=self.format.name,
                       reason="card_number_does_not_fit", detail=str(exc))
            return
        try:
            self._queue.put_nowait((person_id, card_number))
        except queue.Full:
            self._emit("credential_failed", person_id=person_id, channel=self.channel, format=self.format.name,
                       reason="busy", detail=f"{QUEUE_LIMIT} credentials already waiting")

    def transmit(self, bits: list[int]) -> int:
        """Clock one frame out now, in the calling thread; returns the longest leading-edge gap in µs.

        Each pulse is held for the full width from the moment it actually started and each bit starts one
        interval after the previous one actually did, so a preemption stretches one gap instead of squeezing
        the pulses that follow (a squeezed pulse is one a panel may miss).
        """
        width_ns = self._config.pulse_width_us * 1000
        interval_ns = self._config.pulse_interval_us * 1000
        # Other Python threads (the frame loop, MQTT) would take the interpreter lock every 5 ms and stall a
        # frame for as long; for the ~60 ms of one frame, hand it over at most every frame length instead.
        switch = sys.getswitchinterval()
        sys.setswitchinterval(max(switch, len(bits) * interval_ns / 1e9 + 0.01))
        try:
            longest = self._clock_out(bits, width_ns, interval_ns)
        finally:
            sys.setswitchinterval(switch)
        return longest // 1000

    def _clock_out(self, bits: list[int], width_ns: int, interval_ns: int) -> int:
        started: int | None = None
        longest = 0
        for bit in bits:
            line = self._data1 if bit else self._data0
            if started is not None:
                _wait_until(started + interval_ns)
            now = time.perf_counter_ns()
            if started is not None:
                longest = max(longest, now - started)
            started = now
            line.on()
            _wait_until(time.perf_counter_ns() + width_ns)
            line.off()
        return longest

    def status(self) -> dict[str, object]:
        with self._lock:
            return {"format": self.format.name, "decision": self.decision, "sent": self._sent,
                    "last_sent_at": self._last_sent_at, "realtime": self._realtime}

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=1.0)
            self._thread.join(timeout=2.0)
        for device in (self._data0, self._data1):
            try:
                device.close()
            except Exception:
                log.exception("could not close a Wiegand pin")

    def _run(self) -> None:
        self._realtime = try_realtime_priority()
        while True:
            item = self._queue.get()
            if item is None:
                return
            person_id, card = item
            bits = encode(self.format, self._config.facility_code, card)
            try:
                # A gap this long splits the frame at most panels (they end a frame after ~10-25 ms of
                # silence): the panel saw two short, invalid frames, so send it once more.
                attempts = 1
                longest_gap_us = self.transmit(bits)
                time.sleep(FRAME_GAP_SECONDS)
                if longest_gap_us > FRAME_BREAK_US:
                    attempts = 2
                    log.warning("Wiegand frame stretched (%d µs gap); sent again", longest_gap_us)
                    longest_gap_us = self.transmit(bits)
                    time.sleep(FRAME_GAP_SECONDS)
            except Exception as exc:  # a GPIO fault: report it, keep the thread for the next one
                log.exception("Wiegand transmission failed")
                self._emit("credential_failed", person_id=person_id, channel=self.channel, format=self.format.name,
                           reason="gpio_error", detail=str(exc))
                continue
            with self._lock:
                self._sent += 1
                self._last_sent_at = time.time()
            self._emit("credential_sent", person_id=person_id, channel=self.channel, format=self.format.name,
                       attempts=attempts, longest_gap_us=longest_gap_us)
