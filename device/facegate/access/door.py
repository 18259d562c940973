"""Door I/O: the lock relay, door contact, exit button, buzzer and LED, through gpiozero devices.

Lock semantics
    The relay is an ``OutputDevice``: "on" means the coil is energised; ``relay_active_high`` only says
    which pin level energises it. Fail-secure (``fail_safe = false``, strikes): de-energised = locked,
    so a dead Pi or a crashed service leaves the door locked. Fail-safe (``fail_safe = true``, maglocks):
    energised = locked, so power loss releases the door, as fire codes require for maglocks. The door is
    LOCKED from the moment the relay device is created (``initial_value``), before any other device.

    ``close()`` RELEASES the relay (de-energises it) whatever the mode, then closes every device. On real
    pin factories a closed output becomes an input and floats; the relay driver must have its own pull
    resistor to the de-energised level so the hand-over is clean.

Timing and threads
    One daemon thread ("facegate-door") owns the timers: relock at the end of an unlock, the held-open
    alarm, and a slow re-read of the contact (below). ``unlock()`` moves a deadline and wakes it, so a
    re-trigger extends the current release (the relay stays energised) instead of stacking pulses, and is
    never shortened by a shorter request. All state lives under one re-entrant lock, so ``unlock``,
    ``lock`` and ``close`` are safe from the frame loop, the MQTT thread, gpiozero's callback thread, and
    from inside a callback of this class.

    ``emit`` and ``on_state`` callbacks are queued while the lock is held and delivered, in order, after
    it is released, in whichever thread caused the change (the caller of ``unlock``, gpiozero's pin
    thread, or the door thread). They must be quick and must not block on anything that waits for the
    door. An exception from a callback is logged and swallowed: a broken subscriber must never stop the
    door from locking again. When a public method returns, everything it caused has been delivered
    (unless it was called from inside a callback).

Door contact
    Wired between the GPIO and ground with the internal pull-up (the usual Pi wiring), so "contact
    closed" reads low. ``contact_type = "NC"`` (default): the contact is closed while the door is closed;
    a cut wire then reads as "open", an alarm rather than silence. ``"NO"`` is the reverse.

    Debounce: ``bounce_time = 0.05`` s for the contact and exit button. Reed and micro switches settle
    within a few ms, a slammed door rattles for tens of ms, and no real door opens and shuts within 50 ms,
    so nothing real is lost while chatter is suppressed. Because some pin libraries debounce by dropping
    edges (which can drop the final one), the door thread also re-reads the contact every 0.5 s and
    accepts a level that differs from the recorded state only when two reads in a row agree.

    Events: ``door_opened`` {locked}, ``door_closed`` {seconds_open}, ``door_held_open`` {seconds} once
    per opening after ``held_open_seconds``, and ``door_forced_open`` when the door opens while locked,
    except within ``forced_open_grace_seconds`` (1.0 s) after a relock: a person who pushed the door in
    the last moment of a release, or a strike that lets go a little late, is not a break-in. The grace
    applies only after a relock, not at start-up.

Other events: ``door_unlocked`` {reason, seconds, extended}, ``door_locked`` {reason: "timeout",
"command" or what ``lock()`` was given, "shutdown"}, ``exit_request``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from importlib.metadata import entry_points
from types import TracebackType
from typing import Any

from gpiozero import LED, Button, Buzzer, DigitalInputDevice, OutputDevice
from gpiozero.pins import Factory
from gpiozero.pins.mock import MockFactory

from facegate.config import DoorConfig

log = logging.getLogger(__name__)

CONTACT_BOUNCE_SECONDS = 0.05
EXIT_BOUNCE_SECONDS = 0.05
FORCED_OPEN_GRACE_SECONDS = 1.0
RECONCILE_SECONDS = 0.5
BEEP_SECONDS = 0.15
MAX_UNLOCK_SECONDS = 600.0  # same bound as DoorConfig.unlock_seconds
RETRY_SECONDS = 0.5  # a failed relay write at relock is retried this often

StateCallback = Callable[[str, str], None]


def pin_factory_from_name(name: str | None) -> Factory | None:
    """A gpiozero pin factory by its registered name ("lgpio", "rpigpio", "pigpio", "native", "mock").

    ``None`` returns None, which lets gpiozero choose (``GPIOZERO_PIN_FACTORY`` or its own preference
    order). Uses gpiozero's ``gpiozero_pin_factories`` entry points, the same names as the variable.
    """
    if name is None:
        return None
    found = {ep.name: ep for ep in entry_points(group="gpiozero_pin_factories")}
    if name.lower() not in found:
        raise ValueError(f"door.pin_factory: unknown gpiozero pin factory {name!r}; have {sorted(found)}")
    return found[name.lower()].load()()


class Door:
    """One door: see the module docstring for semantics, threads and events."""

    forced_open_grace_seconds: float = FORCED_OPEN_GRACE_SECONDS

    def __init__(
        self,
        config: DoorConfig,
        emit: Callable[..., object],
        pin_factory: Factory | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._emit = emit
        self._clock = clock
        self._lock = threading.RLock()
        self._dispatch_lock = threading.RLock()
        self._pending: deque[tuple[Callable[..., object], tuple[object, ...], dict[str, object]]] = deque()
        self._callbacks: list[StateCallback] = []
        self._wake = threading.Event()
        self._closed = False
        # Relay value ("energised?") that means locked: fail-safe locks hold power, fail-secure ones don't.
        self._locked_value = bool(config.fail_safe)

        now = clock()
        self._locked = True
        self._relock_at: float | None = None
        self._relocked_at: float | None = None  # start of the forced-open grace
        self._unlock_reason: str | None = None
        self._lock_changed_at = time.time()
        self._door_open: bool | None = None
        self._door_changed_at: float | None = None
        self._opened_at: float | None = None
        self._held_at: float | None = None
        self._held_reported = False
        self._reconcile_at = now + RECONCILE_SECONDS
        self._reconcile_candidate: bool | None = None

        self._owned_factory = None
        if pin_factory is None and config.pin_factory is not None:
            pin_factory = self._owned_factory = pin_factory_from_name(config.pin_factory)
        self.pin_factory = pin_factory  # for other devices at this door (facegate/panel); None = gpiozero's default
        self._led_by_panel = False
        self._devices: list[Any] = []
        self._contact: Any = None
        self._exit: Any = None
        self._led: Any = None
        self._buzzer: Any = None
        try:
            # The relay first, straight into the locked state: nothing below may delay locking.
            self._relay: Any = self._add(OutputDevice(
                config.relay_pin, active_high=config.relay_active_high,
                initial_value=self._locked_value, pin_factory=pin_factory,
            ))
            if config.led_pin is not None:
                self._led = self._add(LED(config.led_pin, initial_value=False, pin_factory=pin_factory))
            if config.buzzer_pin is not None:
                self._buzzer = self._add(Buzzer(config.buzzer_pin, initial_value=False, pin_factory=pin_factory))
            if config.contact_pin is not None:
                self._contact = self._add(DigitalInputDevice(
                    config.contact_pin, pull_up=True, bounce_time=CONTACT_BOUNCE_SECONDS, pin_factory=pin_factory,
                ))
            if config.exit_pin is not None:
                self._exit = self._add(Button(
                    config.exit_pin, pull_up=config.exit_pull_up, bounce_time=EXIT_BOUNCE_SECONDS,
                    pin_factory=pin_factory,
                ))
        except BaseException:
            self._release_hardware()
            raise

        if self._contact is not None:
            self._shut_mock_contact(config)
            self._door_open = self._read_door_open()
            self._door_changed_at = time.time()
            if self._door_open:  # propped open at start: the held-open clock starts now
                self._opened_at = now
                self._held_at = now + config.held_open_seconds
            self._contact.when_activated = self._contact_closed
            self._contact.when_deactivated = self._contact_opened
        if self._exit is not None:
            self._exit.when_pressed = self._exit_pressed

        self._thread = threading.Thread(target=self._run, name="facegate-door", daemon=True)
        self._thread.start()

    def _shut_mock_contact(self, config: DoorConfig) -> None:
        """With ``pin_factory = "mock"`` from the config (a bench door, the demo) start the contact shut.

        A mock input left alone reads its pull-up, which an NC contact reads as "door open": the bench would
        report a door propped open and ``door_held_open`` with no ``door_opened``. Nothing else can drive
        these pins (the factory is the door's own), so they are put at the closed level once. A factory
        passed in by a caller (the tests) is left as the caller drives it.
        """
        if not isinstance(self._owned_factory, MockFactory):
            return
        pin = self._contact.pin
        pin.drive_low() if config.contact_type == "NC" else pin.drive_high()  # closed contact = low (pull-up)

    def _add(self, device: Any) -> Any:
        self._devices.append(device)
        return device

    # --- public API -----------------------------------------------------------------------------------

    @property
    def locked(self) -> bool:
        with self._lock:
            return self._locked

    @property
    def door_open(self) -> bool | None:
        """True/False from the contact; None without one."""
        with self._lock:
            return self._door_open

    def unlock(self, reason: str, seconds: float | None = None) -> None:
        """Release for ``seconds`` (default ``unlock_seconds``), then lock again.

        During a release, a new call extends it to ``now + seconds`` when that is later (never shortens
        it) and keeps the relay energised: one pulse, not several. Ignored, with a warning, after close().
        """
        duration = self._config.unlock_seconds if seconds is None else float(seconds)
        if not (math.isfinite(duration) and 0 < duration <= MAX_UNLOCK_SECONDS):
            raise ValueError(f"unlock seconds must be > 0 and <= {MAX_UNLOCK_SECONDS:g}, got {seconds!r}")
        with self._lock:
            if self._closed:
                log.warning("door closed; ignoring unlock (%s)", reason)
                return
            now = self._clock()
            extended = not self._locked
            if self._locked:
                self._set_locked(False, now)  # may raise (relay fault): then no deadline, nothing changed
                # The release is timed from the moment the relay is energised: a thread preempted before the
                # write must not get a shorter pulse (seen on a loaded machine: 0.296 s of 0.3 s).
                now = self._clock()
            until = now + duration
            if self._relock_at is not None:
                until = max(until, self._relock_at)
            self._relock_at = until
            self._unlock_reason = reason
            self._beep()
            self._queue(self._emit, "door_unlocked", reason=reason, seconds=duration, extended=extended)
        self._wake.set()
        self._dispatch()

    def lock(self, reason: str = "command") -> None:
        """Lock now, ending any release. A no-op (no events) when already locked or closed."""
        with self._lock:
            if self._closed or self._locked:
                return
            self._relock(self._clock(), reason)
        self._wake.set()
        self._dispatch()

    def on_state(self, callback: StateCallback) -> None:
        """Subscribe to ("lock", "LOCKED"|"UNLOCKED") and ("door", "open"|"closed") changes.

        The callback is first called with the current states, so a retained MQTT topic is right from
        the start without a separate publish. ("door", ...) is only reported when a contact is fitted.
        """
        with self._lock:
            self._callbacks.append(callback)
            self._queue(callback, "lock", "LOCKED" if self._locked else "UNLOCKED")
            if self._door_open is not None:
                self._queue(callback, "door", "open" if self._door_open else "closed")
        self._dispatch()

    def state(self) -> dict[str, object]:
        """Status snapshot; ``*_changed_at`` are unix seconds (wall clock), durations come from ``clock``."""
        with self._lock:
            now = self._clock()
            return {
                "lock": "LOCKED" if self._locked else "UNLOCKED",
                "locked": self._locked,
                "door": "unknown" if self._door_open is None else ("open" if self._door_open else "closed"),
                "held_open": bool(self._door_open and self._held_reported),  # open now, alarm raised
                "unlock_reason": None if self._locked else self._unlock_reason,
                "unlock_remaining_seconds": None if self._relock_at is None else max(0.0, self._relock_at - now),
                "lock_changed_at": self._lock_changed_at,
                "door_changed_at": self._door_changed_at,
                "fail_safe": self._config.fail_safe,
                "closed": self._closed,
            }

    # --- an access panel's reader commands (facegate/panel/osdp_pd.py) --------------------------------

    def panel_led(self, on_seconds: float, off_seconds: float, repeat: int | None = None) -> bool:
        """Show an access panel's LED pattern: steady on (``off_seconds`` 0), off (``on_seconds`` 0), or
        blinking (``repeat`` times, None = until the next command). From the first call the LED belongs to
        the panel, as a card reader's LED does, and no longer shows the lock state. False without an LED."""
        with self._lock:
            if self._led is None or self._closed:
                return False
            self._led_by_panel = True
            if on_seconds <= 0:
                self._led.off()
            elif off_seconds <= 0:
                self._led.on()
            else:
                self._led.blink(on_time=on_seconds, off_time=off_seconds, n=repeat, background=True)
            return True

    def panel_buzzer(self, on_seconds: float, off_seconds: float, repeat: int | None = None) -> bool:
        """Sound an access panel's buzzer pattern (``on_seconds`` 0 = silence; ``repeat`` None = until the
        next command). False without a buzzer."""
        with self._lock:
            if self._buzzer is None or self._closed:
                return False
            if on_seconds <= 0:
                self._buzzer.off()
            elif off_seconds <= 0 and repeat is None:
                self._buzzer.on()
            else:
                self._buzzer.beep(on_time=on_seconds, off_time=max(off_seconds, 0.0), n=repeat, background=True)
            return True

    def inputs(self) -> list[bool]:
        """Raw input levels for a panel's input status: [door contact closed, exit button pressed], each
        False when not fitted."""
        with self._lock:
            if self._closed:
                return [False, False]
            contact = bool(self._contact.is_active) if self._contact is not None else False
            pressed = bool(self._exit.is_pressed) if self._exit is not None else False
            return [contact, pressed]

    def poll(self) -> None:
        """Act on every deadline that is due by ``clock()``. The door thread calls this by itself; tests
        with a hand-driven clock call it after advancing that clock."""
        with self._lock:
            if not self._closed:
                self._service(self._clock())
        self._dispatch()

    def close(self) -> None:
        """Cancel timers, de-energise the relay (whatever the mode), close every device. Idempotent, and
        safe from any thread, atexit, or a signal handler (the lock is re-entrant)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._relock_at = self._held_at = None
            # De-energised means locked for fail-secure and released for fail-safe; report the truth.
            now_locked = not self._locked_value
            if now_locked != self._locked:
                self._locked = now_locked
                self._lock_changed_at = time.time()
                self._queue_state("lock", "LOCKED" if now_locked else "UNLOCKED")
                if now_locked:
                    self._queue(self._emit, "door_locked", reason="shutdown")
                else:
                    self._queue(self._emit, "door_unlocked", reason="shutdown", seconds=None, extended=False)
            self._release_hardware()
        self._wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)
        self._dispatch()

    def __enter__(self) -> Door:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- internals (call with self._lock held unless noted) --------------------------------------------

    def _release_hardware(self) -> None:
        """De-energise first (the one step that must not be skipped), then close devices, inputs first so
        no callback arrives half-way; each step is guarded so one failure cannot skip the rest."""
        relay = getattr(self, "_relay", None)
        if relay is not None:
            try:
                relay.off()
            except Exception:
                log.exception("could not de-energise the lock relay")
        for device in reversed(self._devices):
            try:
                device.close()
            except Exception:
                log.exception("could not close %r", device)
        self._devices.clear()
        if self._owned_factory is not None:
            try:
                self._owned_factory.close()
            except Exception:
                log.exception("could not close the pin factory")
            self._owned_factory = None

    def _set_locked(self, locked: bool, now: float) -> None:
        # Write the relay before recording the state: if the write raises, we still know the truth.
        self._relay.value = self._locked_value if locked else not self._locked_value
        self._locked = locked
        self._lock_changed_at = time.time()
        self._queue_state("lock", "LOCKED" if locked else "UNLOCKED")
        if self._led is not None and not self._led_by_panel:
            try:
                self._led.value = not locked
            except Exception:  # the LED is cosmetic: its fault must not skip the relock deadline or the state
                log.exception("indicator LED failed")

    def _relock(self, now: float, reason: str) -> None:
        self._set_locked(True, now)
        self._relock_at = None
        self._relocked_at = now
        self._queue(self._emit, "door_locked", reason=reason)

    def _beep(self) -> None:
        if self._buzzer is not None:
            try:
                self._buzzer.beep(on_time=BEEP_SECONDS, off_time=0.0, n=1, background=True)
            except Exception:  # a buzzer fault must not block the unlock
                log.exception("buzzer failed")

    def _service(self, now: float) -> None:
        if self._relock_at is not None and now >= self._relock_at:
            try:
                self._relock(now, "timeout")
            except Exception:
                log.exception("relock failed; retrying in %.1f s", RETRY_SECONDS)
                self._relock_at = now + RETRY_SECONDS
        if (
            self._held_at is not None and now >= self._held_at and self._door_open
            and not self._held_reported and self._opened_at is not None
        ):
            self._held_reported = True
            self._held_at = None
            self._queue(self._emit, "door_held_open", seconds=round(now - self._opened_at, 3))
        if self._contact is not None and now >= self._reconcile_at:
            self._reconcile_at = now + RECONCILE_SECONDS
            try:
                level = self._read_door_open()
            except Exception:
                log.exception("cannot read the door contact")
            else:
                if level == self._door_open:
                    self._reconcile_candidate = None
                elif self._reconcile_candidate == level:
                    log.warning("door contact edge was missed; correcting from a re-read")
                    self._door_changed(level, now)
                else:
                    self._reconcile_candidate = level

    def _next_timeout(self, now: float) -> float | None:
        deadlines = [d for d in (self._relock_at, self._held_at) if d is not None]
        if self._contact is not None:
            deadlines.append(self._reconcile_at)
        return max(0.0, min(deadlines) - now) if deadlines else None

    def _run(self) -> None:
        """Door thread: sleep until the next deadline or a wake-up, then act. The wake flag is cleared
        before deadlines are read, so a change made meanwhile is never slept through."""
        while True:
            self._wake.clear()
            try:
                with self._lock:
                    if self._closed:
                        return
                    now = self._clock()
                    self._service(now)
                    timeout = self._next_timeout(now)
                self._dispatch()
            except Exception:  # keep the thread alive: it is what locks the door again
                log.exception("door thread error")
                timeout = RETRY_SECONDS
            self._wake.wait(timeout)

    def _read_door_open(self) -> bool:
        contact_closed = bool(self._contact.is_active)
        return contact_closed if self._config.contact_type == "NO" else not contact_closed

    def _contact_closed(self) -> None:
        self._contact_edge(contact_closed=True)

    def _contact_opened(self) -> None:
        self._contact_edge(contact_closed=False)

    def _contact_edge(self, contact_closed: bool) -> None:
        """gpiozero callback (its pin thread, or the caller's thread with MockFactory)."""
        door_open = contact_closed if self._config.contact_type == "NO" else not contact_closed
        with self._lock:
            if self._closed:
                return
            self._door_changed(door_open, self._clock())
        self._wake.set()
        self._dispatch()

    def _door_changed(self, door_open: bool, now: float) -> None:
        if door_open == self._door_open:
            return
        self._door_open = door_open
        self._door_changed_at = time.time()
        self._reconcile_candidate = None
        if door_open:
            self._opened_at = now
            self._held_at = now + self._config.held_open_seconds
            self._held_reported = False
            self._queue(self._emit, "door_opened", locked=self._locked)
            in_grace = self._relocked_at is not None and now - self._relocked_at < self.forced_open_grace_seconds
            if self._locked and not in_grace:
                self._queue(self._emit, "door_forced_open")
            self._queue_state("door", "open")
        else:
            seconds_open = None if self._opened_at is None else round(now - self._opened_at, 3)
            self._opened_at = self._held_at = None
            self._queue(self._emit, "door_closed", seconds_open=seconds_open)
            self._queue_state("door", "closed")

    def _exit_pressed(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._queue(self._emit, "exit_request")
        # Outside the lock, so callbacks are never delivered with it held; unlock() delivers both events.
        self.unlock(reason="exit_button")

    def _queue(self, fn: Callable[..., object], *args: object, **kwargs: object) -> None:
        self._pending.append((fn, args, kwargs))

    def _queue_state(self, kind: str, value: str) -> None:
        for callback in self._callbacks:
            self._queue(callback, kind, value)

    def _dispatch(self) -> None:
        """Deliver queued notifications in order, outside the state lock (call WITHOUT self._lock held,
        except re-entrantly). Queue order is state order because entries are appended under the lock."""
        with self._dispatch_lock:
            while True:
                try:
                    fn, args, kwargs = self._pending.popleft()
                except IndexError:
                    return
                try:
                    fn(*args, **kwargs)
                except Exception:
                    log.exception("door callback %r failed", fn)
