"""SIGKILL the running door service at random moments, 10 times (tools/checks/sigkill_soak.py does 100+ rounds).

Every event the service logged as stored must reach a real broker's subscriber after the restarts, no seq may
be given to two events, and every database must pass ``PRAGMA integrity_check`` after every kill.
"""

from __future__ import annotations

from pathlib import Path

from support.broker import Mosquitto

from tools.checks.sigkill_soak import run_rounds


def test_sigkill_at_random_moments_loses_no_stored_event_and_keeps_every_database_sound(
        tmp_path: Path, broker: Mosquitto) -> None:
    result = run_rounds(10, broker.port, tmp_path, seed=13, busy_seconds=1.5)
    assert result["stored_logged"] > 3 * 10  # busy: grants, relay pulses and strangers between the kills
    assert result["missing"] == []
    assert result["seq_reused"] == {} and result["event_with_two_seqs"] == []
    assert result["integrity_failures"] == []
    assert set(result["final_integrity"].values()) == {"ok"}
    assert result["final_exit_code"] == 0
