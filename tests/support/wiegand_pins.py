"""Wiegand frames read back from gpiozero's MockPin state histories (the door's DATA0/DATA1 output pins)."""

from __future__ import annotations

from typing import Any

from gpiozero.pins.mock import MockFactory

D0, D1 = 23, 24  # the DATA0 / DATA1 pins the Wiegand tests wire


def pulses_from(pin: Any, active: bool) -> list[tuple[float, float]]:
    """(start, width) of each active span, in seconds since the pin's history was cleared."""
    t, out, start = 0.0, [], None
    for st in pin.states:
        t += st.timestamp
        if st.state == active and start is None:
            start = t
        elif st.state != active and start is not None:
            out.append((start, t - start))
            start = None
    assert start is None, "a line was left active"
    return out


def frame_from_pins(factory: MockFactory, active: bool = True, d0: int = D0,
                    d1: int = D1) -> tuple[str, list[tuple[float, float]]]:
    """Merge both lines' pulses by start time: a DATA0 pulse is a 0 bit, a DATA1 pulse a 1 bit."""
    tagged = [(s, w, "0") for s, w in pulses_from(factory.pin(d0), active)]
    tagged += [(s, w, "1") for s, w in pulses_from(factory.pin(d1), active)]
    tagged.sort()
    return "".join(b for _, _, b in tagged), [(s, w) for s, w, _ in tagged]
