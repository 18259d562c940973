"""Refusal reports are rate-limited, and what is held back is counted, not lost from view."""

from __future__ import annotations

import pytest
from facegate.events.ratelimit import ReportLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill_and_the_count_of_held_back_reports() -> None:
    clock = Clock()
    limiter = ReportLimiter(burst=3, per_minute=6, clock=clock)  # one token every 10 s
    assert [limiter.admit() for _ in range(5)] == [0, 0, 0, None, None]
    clock.now = 9.9
    assert limiter.admit() is None
    clock.now = 10.0
    assert limiter.admit() == 3  # the three refusals held back since the last report
    assert limiter.admit() is None
    clock.now = 1000.0  # a long quiet spell refills to the burst, not beyond
    assert [limiter.admit() for _ in range(4)] == [1, 0, 0, None]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        ReportLimiter(burst=0)
    with pytest.raises(ValueError):
        ReportLimiter(per_minute=0)
