"""The door as an OSDP reader, against LibOSDP's own control panel (the panel's side, same PyPI package) over
a pseudo-terminal pair: the door opens the pty's device path exactly as it opens an RS-485 adapter."""

from __future__ import annotations

import os
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

osdp = pytest.importorskip("osdp", reason="LibOSDP (pip install libosdp) is not installed")

from facegate.access.door import Door  # noqa: E402
from facegate.config import DoorConfig, OsdpConfig  # noqa: E402
from facegate.panel.osdp_pd import OsdpReader  # noqa: E402
from gpiozero.pins.mock import MockFactory  # noqa: E402
from support.recorded_events import Events  # noqa: E402

from tools.osdp_panel import ADDRESS, KEY, Panel, h10301, write_key  # noqa: E402
from tools.wait import wait_for  # noqa: E402

WRONG = bytes.fromhex("00112233445566778899aabbccddeeff")
RELAY, LED_PIN, BUZZER, TAMPER = 17, 6, 5, 26


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    tty.setraw(master)
    path = os.ttyname(slave)
    yield master, path
    os.close(slave)
    os.close(master)


def make_reader(tmp_path: Path, port: str, factory: MockFactory, events: Events,
                **osdp_kw: Any) -> tuple[OsdpReader, Door]:
    door = Door(DoorConfig(relay_pin=RELAY, led_pin=LED_PIN, buzzer_pin=BUZZER, unlock_seconds=0.3), events,
                pin_factory=factory)
    osdp_kw.setdefault("scbk_file", write_key(tmp_path / "scbk", KEY))
    reader = OsdpReader(OsdpConfig(port=port, **osdp_kw), events, door)
    return reader, door


def test_secure_channel_card_read_and_panel_commands_reach_the_pins(tmp_path, pty_pair, factory) -> None:  # type: ignore[no-untyped-def]
    master, port = pty_pair
    events = Events()
    reader, door = make_reader(tmp_path, port, factory, events, relay=True, facility_code=42, tamper_pin=TAMPER)
    factory.pin(TAMPER).drive_low()  # the case switch is closed: not tampered
    reader.start()
    panel = Panel(master, KEY)
    try:
        wait_for(lambda: panel.cp.is_sc_active(ADDRESS), 10, "the secure channel at the panel")
        wait_for(lambda: events.of("osdp_online"), 3, "osdp_online")
        assert events.of("osdp_online") == [{"secure_channel": True}]
        assert reader.status()["online"] is True and reader.status()["secure_channel"] is True

        reader.send_credential("astro", 12345)
        wait_for(lambda: panel.card_reads(), 5, "the card read at the panel")
        (read,) = panel.card_reads()
        assert read["format"] == osdp.CardFormat.Wiegand and h10301(read["data"], read["length"]) == (42, 12345)
        wait_for(lambda: events.of("credential_sent"), 3, "credential_sent")
        assert events.of("credential_sent") == [{"person_id": "astro", "channel": "osdp", "format": "26"}]

        led, buzzer, relay = factory.pin(LED_PIN), factory.pin(BUZZER), factory.pin(RELAY)
        green = {"command": osdp.Command.LED, "reader": 0, "led_number": 0, "control_code": 1, "on_count": 10,
                 "off_count": 0, "on_color": osdp.CommandLEDColor.Green, "off_color": osdp.CommandLEDColor.Black,
                 "temporary": False}
        assert panel.cp.submit_command(ADDRESS, green)
        wait_for(lambda: led.state is True, 3, "the LED on")
        assert panel.cp.submit_command(ADDRESS, {**green, "on_color": osdp.CommandLEDColor.Black})
        wait_for(lambda: led.state is False, 3, "the LED off")
        # A temporary state (green for 0.5 s, as panels show a grant) reverts to the permanent one (off).
        assert panel.cp.submit_command(ADDRESS, {**green, "temporary": True, "control_code": 2, "timer_count": 5})
        wait_for(lambda: led.state is True, 3, "the temporary green")
        wait_for(lambda: led.state is False, 3, "the return to the permanent state")
        assert 0.4 <= led.states[-1].timestamp <= 1.2  # 0.5 s; a timer may fire late on a loaded machine, not early

        assert panel.cp.submit_command(ADDRESS, {"command": osdp.Command.Buzzer, "reader": 0, "control_code": 2,
                                                 "on_count": 2, "off_count": 1, "rep_count": 1})
        wait_for(lambda: len(buzzer.states) >= 3, 3, "one beep")  # initial, on, off
        assert [s.state for s in buzzer.states[1:3]] == [True, False]
        assert 0.15 <= buzzer.states[2].timestamp <= 0.8  # 0.2 s

        assert panel.cp.submit_command(ADDRESS, {"command": osdp.Command.Output, "output_no": 0,
                                                 "control_code": 5, "timer_count": 3})  # temporary on, 0.3 s
        wait_for(lambda: len(relay.states) >= 3, 3, "a relay pulse")
        assert 0.25 <= relay.states[2].timestamp <= 0.9  # 0.3 s
        assert any(e["reason"] == "panel" for e in events.of("door_unlocked"))

        factory.pin(TAMPER).drive_high()  # the case is opened
        wait_for(lambda: any(e["event"] == osdp.Event.Status and e["type"] == osdp.StatusReportType.Local
                             and e["report"][0] == 1 for e in panel.events()), 5, "tamper at the panel")
        assert events.of("osdp_tamper") == [{"tamper": True}] and reader.status()["tamper"] is True
    finally:
        panel.close()
        reader.close()
        door.close()


def test_relay_commands_are_refused_unless_configured(tmp_path, pty_pair, factory) -> None:  # type: ignore[no-untyped-def]
    master, port = pty_pair
    events = Events()
    reader, door = make_reader(tmp_path, port, factory, events)  # relay = false (the default)
    reader.start()
    panel = Panel(master, KEY)
    try:
        wait_for(lambda: panel.cp.is_sc_active(ADDRESS), 10, "the secure channel")
        panel.cp.submit_command(ADDRESS, {"command": osdp.Command.Output, "output_no": 0, "control_code": 2,
                                          "timer_count": 0})
        time.sleep(1.0)
        assert len(factory.pin(RELAY).states) == 1 and door.locked
    finally:
        panel.close()
        reader.close()
        door.close()


def test_wrong_key_fails_the_secure_channel_and_is_reported(tmp_path, pty_pair, factory) -> None:  # type: ignore[no-untyped-def]
    master, port = pty_pair
    events = Events()
    reader, door = make_reader(tmp_path, port, factory, events)
    reader.start()
    panel = Panel(master, WRONG)
    try:
        wait_for(lambda: events.of("osdp_secure_channel_failed"), 10, "osdp_secure_channel_failed")
        assert not panel.cp.is_sc_active(ADDRESS)
        assert events.of("osdp_online") == [] and reader.status()["secure_channel_failed"] is True
        reader.send_credential("astro", 1)  # no session: nothing goes out, and the door says why
        assert events.of("credential_failed")[0]["reason"] == "panel_offline"
        assert panel.card_reads() == []
    finally:
        panel.close()
        reader.close()
        door.close()


def test_link_drop_and_return_are_reported(tmp_path, pty_pair, factory) -> None:  # type: ignore[no-untyped-def]
    master, port = pty_pair
    events = Events()
    reader, door = make_reader(tmp_path, port, factory, events)
    reader.start()
    panel = Panel(master, KEY)
    try:
        wait_for(lambda: events.of("osdp_online"), 10, "osdp_online")
        panel.channel.cut = True
        time.sleep(0.5)
        reader.send_credential("late", 9)  # the door does not know yet: LibOSDP queues the read
        wait_for(lambda: events.of("osdp_offline"), 15, "osdp_offline")  # LibOSDP's PD gives up after 8 s
        assert events.of("osdp_offline")[0]["reason"] == "no_polls" and reader.status()["online"] is False

        def late() -> list[str]:
            return [e["reason"] for e in events.of("credential_failed") if e["person_id"] == "late"]

        # The monitor thread reports the flush just after the offline event: wait for it, not race it.
        wait_for(late, 5, "the queued read reported as not delivered")
        time.sleep(0.3)
        assert late() == ["not_delivered"]  # flushed once, never delivered after the return
        reader.send_credential("astro", 7)
        assert events.of("credential_failed")[-1]["reason"] == "panel_offline"
        # The wire is mended; LibOSDP's CP waits minutes before retrying an offline reader, so the panel
        # is restarted, as a technician would after fixing a cable.
        panel.close()
        panel = Panel(master, KEY)
        wait_for(lambda: len(events.of("osdp_online")) == 2, 15, "osdp_online again")
        assert events.of("osdp_online")[1] == {"secure_channel": True}
        time.sleep(1.0)
        assert panel.card_reads() == [] and events.of("credential_sent") == []
    finally:
        panel.close()
        reader.close()
        door.close()


def test_install_mode_stores_the_key_the_panel_sets(tmp_path, pty_pair, factory) -> None:  # type: ignore[no-untyped-def]
    master, port = pty_pair
    events = Events()
    key_file = tmp_path / "state" / "scbk"
    reader, door = make_reader(tmp_path, port, factory, events, install_mode=True, scbk_file=key_file)
    reader.start()
    panel = Panel(master, KEY, install=True)  # the panel commissions with SCBK-D, then sets KEY
    try:
        wait_for(lambda: events.of("osdp_key_set"), 10, "osdp_key_set")
        assert key_file.read_text().strip() == KEY.hex() and (key_file.stat().st_mode & 0o777) == 0o600
    finally:
        panel.close()
        reader.close()
        door.close()
    events2 = Events()
    reader, door = make_reader(tmp_path, port, factory, events2, scbk_file=key_file)  # install mode off
    reader.start()
    panel = Panel(master, KEY)
    try:
        wait_for(lambda: events2.of("osdp_online"), 10, "the secure channel with the stored key")
    finally:
        panel.close()
        reader.close()
        door.close()


def test_a_card_read_checked_online_just_before_the_link_drops_is_flushed_not_kept(tmp_path, pty_pair, factory) -> None:  # type: ignore[no-untyped-def]
    """The frame loop checks that the panel is polling, the monitor then sees the link drop and flushes
    LibOSDP's queue, and only then is the read submitted: that read must be flushed and reported too, never left
    in LibOSDP's queue for the panel to take after the link returns (when someone else stands at the door)."""
    _, port = pty_pair
    events = Events()
    reader, door = make_reader(tmp_path, port, factory, events)
    reader.start()  # no panel on the line: LibOSDP itself says offline; the monitor never flushes by itself
    caller = threading.current_thread()
    real_online = reader._pd.is_online
    dropped = threading.Event()

    def online_then_dropped() -> bool:
        if threading.current_thread() is not caller:
            return bool(real_online())
        # The link drops right after this check: the monitor's flush runs now, on its own thread.
        flusher = threading.Thread(target=lambda: (reader._drop_undelivered(), dropped.set()), daemon=True)
        flusher.start()
        flusher.join(0.5)
        return True

    try:
        reader._pd.is_online = online_then_dropped
        reader._pd.is_sc_active = lambda: True
        reader.send_credential("late", 9)
        assert dropped.wait(5), "the monitor's flush never finished"
        late = [e for e in events.of("credential_failed") if e["person_id"] == "late"]
        assert [e["reason"] for e in late] == ["not_delivered"]
        assert reader._pending == {} and reader._inflight == []
    finally:
        reader._pd.is_online = real_online
        reader.close()
        door.close()
