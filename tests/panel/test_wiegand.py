"""Wiegand output: frames (parity included) read back bit by bit from gpiozero MockPin state histories."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from facegate.config import WiegandConfig
from facegate.panel.wiegand import FORMATS, CardFormatError, decode, encode, to_bytes
from facegate.panel.wiegand_tx import WiegandOutput
from gpiozero.pins.mock import MockFactory
from pydantic import ValidationError
from support.recorded_events import Events
from support.wiegand_pins import frame_from_pins

from tools.wait import wait_for

D0, D1 = 23, 24

# Worked by hand from the format definitions (not from the encoder):
# 26-bit, facility 18 = 00010010, card 12345 = 0011000000111001; the first 12 data bits (000100100011) have
# four 1s -> even parity 0; the last 12 (000000111001) have four 1s -> odd parity 1.
H10301_18_12345 = "0" + "00010010" + "0011000000111001" + "1"
# 34-bit, facility 1000 = 0000001111101000 (six 1s -> even parity 0), card 54321 = 1101010000110001
# (seven 1s -> odd parity 0).
W34_1000_54321 = "0" + "0000001111101000" + "1101010000110001" + "0"


def make(factory: MockFactory, events: Events, **kw: Any) -> WiegandOutput:
    return WiegandOutput(WiegandConfig(data0_pin=D0, data1_pin=D1, **kw), events, pin_factory=factory)


def test_encoder_matches_hand_worked_frames() -> None:
    assert "".join(map(str, encode(FORMATS["26"], 18, 12345))) == H10301_18_12345
    assert "".join(map(str, encode(FORMATS["34"], 1000, 54321))) == W34_1000_54321
    assert decode(FORMATS["26"], [int(b) for b in H10301_18_12345]) == (18, 12345)
    assert to_bytes([1, 0, 1]) == bytes([0b10100000])


@pytest.mark.parametrize("fmt", ["26", "34"])
def test_every_single_bit_error_is_caught_by_parity(fmt: str) -> None:
    bits = encode(FORMATS[fmt], 7, 4242)
    for i in range(len(bits)):
        flipped = list(bits)
        flipped[i] ^= 1
        with pytest.raises(CardFormatError, match="parity"):
            decode(FORMATS[fmt], flipped)


@pytest.mark.parametrize(("fmt", "facility", "card"), [("26", 256, 1), ("26", 1, 65536), ("34", 65536, 1),
                                                       ("34", 0, -1)])
def test_numbers_that_do_not_fit_are_refused_not_truncated(fmt: str, facility: int, card: int) -> None:
    with pytest.raises(CardFormatError, match="does not fit"):
        encode(FORMATS[fmt], facility, card)


@pytest.mark.parametrize(("fmt", "facility", "card", "expected"),
                         [("26", 18, 12345, H10301_18_12345), ("34", 1000, 54321, W34_1000_54321)])
def test_frame_on_the_pins_bit_by_bit(factory: MockFactory, fmt: str, facility: int, card: int,
                                      expected: str) -> None:
    events = Events()
    out = make(factory, events, format=fmt, facility_code=facility, pulse_width_us=100, pulse_interval_us=2000)
    for pin in (factory.pin(D0), factory.pin(D1)):
        pin.clear_states()
    out.start()
    try:
        out.send_credential("astro", card)
        wait_for(lambda: events.of("credential_sent"), 5, fail=False)
    finally:
        out.close()
    bits, spans = frame_from_pins(factory)
    sent = events.of("credential_sent")
    assert len(sent) == 1
    assert {k: sent[0][k] for k in ("person_id", "channel", "format")} == {"person_id": "astro", "channel": "wiegand",
                                                                           "format": fmt}
    # A frame stretched past 10 ms (a preempted sender on a loaded machine) is sent once more, and says so.
    assert sent[0]["attempts"] in (1, 2) and bits == expected * sent[0]["attempts"]
    # Shape, not speed: every pulse about the configured width (the mock records after gpiozero's own call
    # overhead), and no two pulses overlap.
    assert all(w >= 50e-6 for _, w in spans), [round(w * 1e6) for _, w in spans]  # 100 µs minus call overhead
    assert all(s2 > s1 + w1 for (s1, w1), (s2, _) in itertools.pairwise(spans))
    assert out.status()["sent"] == 1


def test_direct_drive_pulses_are_gpio_low(factory: MockFactory) -> None:
    events = Events()
    out = make(factory, events, driver="direct", facility_code=18)
    assert factory.pin(D0).state is True and factory.pin(D1).state is True  # idle high, like the panel's lines
    for pin in (factory.pin(D0), factory.pin(D1)):
        pin.clear_states()
    out.transmit(encode(FORMATS["26"], 18, 12345))
    out.close()
    assert frame_from_pins(factory, active=False)[0] == H10301_18_12345


def test_card_that_does_not_fit_is_reported_and_nothing_is_sent(factory: MockFactory) -> None:
    events = Events()
    out = make(factory, events, format="26")
    out.start()
    out.send_credential("big", 70000)
    out.close()
    failed = events.of("credential_failed")
    assert len(failed) == 1 and failed[0]["reason"] == "card_number_does_not_fit"
    # The event goes to MQTT, the journal and the log: it says what is wrong, never the card number itself.
    assert "26-bit" in failed[0]["detail"] and "70000" not in failed[0]["detail"]
    assert len(factory.pin(D0).states) == 1 and len(factory.pin(D1).states) == 1  # never left idle


def test_config_refuses_what_cannot_work() -> None:
    with pytest.raises(ValidationError, match="facility_code 300"):
        WiegandConfig(data0_pin=1, data1_pin=2, facility_code=300)
    with pytest.raises(ValidationError, match="pulse_interval_us"):
        WiegandConfig(data0_pin=1, data1_pin=2, pulse_width_us=200, pulse_interval_us=250)
    with pytest.raises(ValidationError, match="different pins"):
        WiegandConfig(data0_pin=1, data1_pin=1)
