"""tools/fleet_sim.py at a small scale: 3 door processes, 200 persons, a broker restart mid-transfer."""

from __future__ import annotations

import pytest
from support.broker import find_mosquitto

from tools import fleet_sim


def test_fleet_converges_through_a_broker_restart_and_grants() -> None:
    if find_mosquitto() is None:
        pytest.skip("mosquitto binary not found")
    summary = fleet_sim.run(devices=3, persons=200, fps=10, chunk_bytes=16 * 1024, timeout=30)
    print(summary)
    assert summary["full"]["chunks"] > 5  # really chunked
    assert summary["full"]["rejections"] == 0 and summary["delta"]["rejections"] == 0
    assert summary["delta"]["upserts"] == 3 and summary["delta"]["deletes"] == 2
    assert summary["delta"]["bytes"] < summary["full"]["bytes"] / 10
    assert summary["granted"] == 3
