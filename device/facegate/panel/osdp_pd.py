"""The door as an OSDP peripheral device: a card reader on the site panel's RS-485 bus. LibOSDP (PyPI
``libosdp``) runs the protocol and the Secure Channel; this module maps it to the door.

- Credential: :meth:`OsdpReader.send_credential` reports a card read (raw Wiegand bits of ``format`` with
  ``facility_code`` and the person's card number). Only over an established Secure Channel, and only while
  the panel polls: a read queued on a dead link would be delivered minutes later, when the person is gone.
  ``credential_sent`` is emitted when LibOSDP reports the read delivered to the panel.
- Panel commands: LED → the door's LED, buzzer → the door's buzzer, output 0 → the lock relay when
  ``osdp.relay`` is true (otherwise refused with a NAK), KEYSET → the new key stored in ``scbk_file``.
- Status: tamper (an optional ``tamper_pin``) and power are reported in the standard local-status reply,
  and sent unsolicited when they change; input status = [door contact closed, exit button pressed];
  output status = [relay energised].
- Link: ``osdp_online``/``osdp_offline``/``osdp_secure_channel_failed`` (see :mod:`facegate.panel.osdp_link`).

Secure Channel is required (LibOSDP's EnforceSecure) except in ``install_mode``, where the PD has no key, lets
the panel open a session with the well-known default key SCBK-D and waits for its KEYSET. Install mode is
for commissioning on a trusted bench only: anyone on the bus can set the key meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import osdp
from gpiozero import DigitalInputDevice

from facegate.access.door import MAX_UNLOCK_SECONDS, Door
from facegate.config import OsdpConfig
from facegate.panel.osdp_channel import SerialChannel
from facegate.panel.osdp_keys import load_scbk, store_scbk
from facegate.panel.osdp_link import LinkMonitor
from facegate.panel.output import Decision
from facegate.panel.wiegand import FORMATS, CardFormatError, check_fits, encode, to_bytes

log = logging.getLogger(__name__)

MONITOR_SECONDS = 0.1
TENTHS = 0.1  # OSDP timer and on/off counts are in units of 100 ms
PENDING_LIMIT = 16
# OSDP output control codes (osdp_OUT)
OUT_NOP, OUT_OFF, OUT_ON, OUT_OFF_TIMED_OK, OUT_ON_TIMED_OK, OUT_TEMP_ON, OUT_TEMP_OFF = range(7)
BUZZ_OFF = 1
# FACEGATE's identity in osdp_PDID: no IEEE OUI is registered for the project, so vendor code 0.
PD_ID = {"version": 1, "model": 1, "vendor_code": 0, "serial_number": 0, "firmware_version": 0x000100}


class OsdpReader:
    """A :class:`facegate.panel.output.CredentialOutput` over OSDP."""

    channel = "osdp"

    def __init__(self, config: OsdpConfig, emit: Callable[..., object], door: Door,
                 channel: Any = None) -> None:
        self._config = config
        self._emit = emit
        self._door = door
        self.format = FORMATS[config.format]
        self._install = config.install_mode
        key = None if self._install else load_scbk(config.scbk_file)
        if self._install:
            log.warning("OSDP install mode: the panel may set this door's key with the default key; "
                        "turn osdp.install_mode off after commissioning")
        self._channel = channel if channel is not None else SerialChannel(config.port, config.baud)
        flags = [osdp.LibFlag.InstallMode] if self._install else [osdp.LibFlag.EnforceSecure]
        info = osdp.PDInfo(config.address, self._channel, scbk=key, name=f"facegate-{config.address}", flags=flags,
                           id=osdp.PdId(**PD_ID))
        caps = osdp.PDCapabilities([
            (osdp.Capability.ContactStatusMonitoring, 1, 2),
            (osdp.Capability.OutputControl, 1, 1 if config.relay else 0),
            (osdp.Capability.CardDataFormat, 1, 0),
            (osdp.Capability.LEDControl, 1, 1),
            (osdp.Capability.AudibleControl, 1, 1),
            (osdp.Capability.CheckCharacter, 1, 0),
            (osdp.Capability.CommunicationSecurity, 1, 1),
        ])
        self._pd = osdp.PeripheralDevice(info, caps, log_level=osdp.LogLevel.Warning,
                                         command_handler=self._on_command,
                                         event_completion_handler=self._on_event_done)
        self._link = LinkMonitor(emit, require_secure_channel=not self._install)
        self._lock = threading.Lock()
        # Held from the online check to the submit, and by the flush when the link drops: a read can never be
        # submitted just after that flush (checked while the link was up) and then wait in LibOSDP's queue.
        self._submit_lock = threading.Lock()
        self._pending: dict[int, str] = {}  # id(event dict) -> person id, until LibOSDP says it was delivered
        self._inflight: list[dict[str, Any]] = []  # keeps those dicts alive so their ids stay unique
        self._sent = 0
        self._last_sent_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tamper_dev: Any = None
        self._tamper = False
        self._led_permanent: tuple[float, float] = (0.0, 0.0)
        self._led_timer: threading.Timer | None = None
        if config.tamper_pin is not None:
            self._tamper_dev = DigitalInputDevice(config.tamper_pin, pull_up=True, bounce_time=0.05,
                                                  pin_factory=door.pin_factory)

    # ------------------------------------------------------------------ CredentialOutput

    @property
    def decision(self) -> Decision:
        return self._config.decision

    def start(self) -> None:
        if self._thread is not None:
            return
        if self._tamper_dev is not None:  # the state at start is the baseline; the monitor reports changes
            self._tamper = not self._tamper_dev.is_active  # the case switch is closed (active) while intact
        self._pd.start()
        self._thread = threading.Thread(target=self._monitor, name="facegate-osdp", daemon=True)
        self._thread.start()

    def send_credential(self, person_id: str, card_number: int) -> None:
        def failed(reason: str, detail: str) -> None:
            self._emit("credential_failed", person_id=person_id, channel=self.channel, format=self.format.name,
                       reason=reason, detail=detail)

        try:
            check_fits(self.format, self._config.facility_code, card_number)
        except CardFormatError as exc:
            failed("card_number_does_not_fit", str(exc))
            return
        with self._submit_lock:
            if not (self._pd.is_online() and (self._pd.is_sc_active() or self._install)):
                failed("panel_offline", "the panel is not polling this reader over a secure channel")
                return
            bits = encode(self.format, self._config.facility_code, card_number)
            event = {"event": osdp.Event.CardRead, "reader_no": 0, "direction": 0, "length": len(bits),
                     "format": osdp.CardFormat.Wiegand, "data": to_bytes(bits)}
            with self._lock:
                if len(self._inflight) >= PENDING_LIMIT:
                    failed("busy", f"{PENDING_LIMIT} card reads not yet delivered")
                    return
                self._inflight.append(event)
                self._pending[id(event)] = person_id
            if not self._pd.submit_event(event):
                with self._lock:
                    self._forget(event)
                failed("rejected", "LibOSDP refused the card read")

    def status(self) -> dict[str, object]:
        link = self._link.state
        with self._lock:
            return {"online": link.online, "secure_channel": link.secure_channel,
                    "secure_channel_failed": link.sc_failed, "install_mode": self._install,
                    "address": self._config.address, "format": self.format.name, "decision": self.decision,
                    "sent": self._sent, "last_sent_at": self._last_sent_at, "tamper": self._tamper,
                    "port_error": getattr(self._channel, "error", None)}

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            if self._led_timer is not None:
                self._led_timer.cancel()
                self._led_timer = None
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
            with contextlib.suppress(RuntimeError):
                self._pd.stop()
        if self._tamper_dev is not None:
            self._tamper_dev.close()
            self._tamper_dev = None
        close = getattr(self._channel, "close", None)
        if callable(close):
            close()

    # ------------------------------------------------------------------ LibOSDP callbacks (its thread)

    def _forget(self, event: dict[str, Any]) -> None:
        self._pending.pop(id(event), None)
        self._inflight = [e for e in self._inflight if e is not event]

    def _on_event_done(self, event: dict[str, Any], status: int) -> None:
        with self._lock:
            match = next((e for e in self._inflight if e is event or e == event), None)
            person = None if match is None else self._pending.get(id(match))
            if match is not None:
                self._forget(match)
            if person is not None and status == osdp.CompletionStatus.Ok:
                self._sent += 1
                self._last_sent_at = time.time()
        if person is None:
            return
        if status == osdp.CompletionStatus.Ok:
            self._emit("credential_sent", person_id=person, channel=self.channel, format=self.format.name)
        else:
            self._emit("credential_failed", person_id=person, channel=self.channel, format=self.format.name,
                       reason="not_delivered", detail=f"LibOSDP completion status {status}")

    def _on_command(self, command: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        """0 = ACK, -1 = NAK. Never raises: LibOSDP's wrapper would print and NAK, and lose the reason."""
        try:
            return self._handle(command)
        except Exception:
            log.exception("OSDP command %r failed", command.get("command"))
            return -1, None

    def _handle(self, cmd: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        kind = cmd.get("command")
        if kind == osdp.Command.LED:
            self._led_command(cmd)
            return 0, None
        if kind == osdp.Command.Buzzer:
            on_s, off_s = cmd.get("on_count", 0) * TENTHS, cmd.get("off_count", 0) * TENTHS
            reps = cmd.get("rep_count", 0)
            if cmd.get("control_code") == BUZZ_OFF or on_s == 0:
                self._door.panel_buzzer(0.0, 0.0)
            else:
                self._door.panel_buzzer(on_s, off_s, None if reps == 0 else reps)
            return 0, None
        if kind == osdp.Command.Output:
            return (0, None) if self._output(cmd) else (-1, None)
        if kind == osdp.Command.Keyset:
            key = bytes(cmd.get("data", b""))
            store_scbk(self._config.scbk_file, key)
            self._emit("osdp_key_set", install_mode=self._install,
                       detail="the panel set a new secure channel key; turn osdp.install_mode off")
            return 0, None
        if kind == osdp.Command.Status:
            if cmd.get("type") == osdp.StatusReportType.Input:
                report = bytes(int(v) for v in self._door.inputs())
            elif cmd.get("type") == osdp.StatusReportType.Output:
                report = bytes([0 if self._door.locked != self._door.state()["fail_safe"] else 1])
            else:
                return 0, None  # local status (tamper, power): LibOSDP answers from what we submitted
            return 0, {"command": osdp.Command.Status, "type": cmd["type"], "report": report}
        return -1, None  # text, file transfer, manufacturer commands: not supported

    @staticmethod
    def _led_pattern(cmd: dict[str, Any]) -> tuple[float, float]:
        """(seconds lit, seconds dark) for Door.panel_led from an LED command's on/off colours and counts."""
        on_lit = cmd.get("on_color", 0) != osdp.CommandLEDColor.Black
        off_lit = cmd.get("off_color", 0) != osdp.CommandLEDColor.Black
        on_s, off_s = cmd.get("on_count", 0) * TENTHS, cmd.get("off_count", 0) * TENTHS
        if on_lit == off_lit or (on_lit and off_s == 0) or (off_lit and on_s == 0):
            lit = on_lit if on_s > 0 or not off_lit else off_lit
            return (1.0, 0.0) if lit else (0.0, 0.0)
        return (on_s, off_s) if on_lit else (off_s, on_s)

    def _led_command(self, cmd: dict[str, Any]) -> None:
        """Permanent state, and a temporary one (e.g. green for 3 s after a grant) that reverts to it."""
        code = cmd.get("control_code", 0)
        with self._lock:
            if cmd.get("temporary"):
                if code == 0:
                    return
                if self._led_timer is not None:
                    self._led_timer.cancel()
                    self._led_timer = None
                seconds = cmd.get("timer_count", 0) * TENTHS
                if code == 2 and seconds > 0:
                    self._door.panel_led(*self._led_pattern(cmd))
                    self._led_timer = threading.Timer(seconds, self._led_revert)
                    self._led_timer.daemon = True
                    self._led_timer.start()
                    return
                self._door.panel_led(*self._led_permanent)  # code 1: cancel the temporary state
                return
            if code == 1:
                self._led_permanent = self._led_pattern(cmd)
                if self._led_timer is None:
                    self._door.panel_led(*self._led_permanent)

    def _led_revert(self) -> None:
        with self._lock:
            self._led_timer = None
            self._door.panel_led(*self._led_permanent)

    def _output(self, cmd: dict[str, Any]) -> bool:
        if not self._config.relay or cmd.get("output_no", 0) != 0:
            return False
        code = cmd.get("control_code", OUT_NOP)
        if code == OUT_NOP:
            return True
        if code in (OUT_OFF, OUT_OFF_TIMED_OK, OUT_TEMP_OFF):
            self._door.lock(reason="panel")
        elif code in (OUT_ON, OUT_ON_TIMED_OK):
            self._door.unlock(reason="panel", seconds=MAX_UNLOCK_SECONDS)
        elif code == OUT_TEMP_ON:
            seconds = cmd.get("timer_count", 0) * TENTHS
            if seconds <= 0:
                return False
            self._door.unlock(reason="panel", seconds=min(seconds, MAX_UNLOCK_SECONDS))
        else:
            return False
        return True

    # ------------------------------------------------------------------ monitor thread

    def _drop_undelivered(self) -> None:
        """The link went down: card reads LibOSDP still holds must never reach the panel later (the person has
        gone; whoever stands at the door then would be let in), so they are flushed and reported."""
        with self._submit_lock:
            lock = getattr(self._pd, "lock", None)
            if lock is not None:
                with lock:
                    self._pd.ctx.flush_events()
            with self._lock:
                people = list(self._pending.values())
                self._pending.clear()
                self._inflight.clear()
        for person in people:
            self._emit("credential_failed", person_id=person, channel=self.channel, format=self.format.name,
                       reason="not_delivered", detail="the link went down before the panel took the card read")

    def _monitor(self) -> None:
        was_usable = False
        while not self._stop.wait(MONITOR_SECONDS):
            try:
                while self._pd.get_command(timeout=-1) is not None:
                    pass  # LibOSDP's wrapper also queues every command; we act in the callback, so drop them
                online, secure = bool(self._pd.is_online()), bool(self._pd.is_sc_active())
                self._link.sample(time.monotonic(), online, secure)
                usable = self._link.state.online
                tamper = self._tamper_dev is not None and not self._tamper_dev.is_active
                if tamper != self._tamper or (usable and not was_usable):
                    if tamper != self._tamper:
                        self._emit("osdp_tamper", tamper=tamper)
                    self._tamper = tamper
                    if usable:
                        self._pd.submit_event({"event": osdp.Event.Status, "type": osdp.StatusReportType.Local,
                                               "report": bytes([int(tamper), 0])})
                if was_usable and not usable:
                    self._drop_undelivered()
                was_usable = usable
            except Exception:
                log.exception("OSDP monitor error")
