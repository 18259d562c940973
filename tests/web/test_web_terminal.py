"""What the door screen says, from the door state, lockdown, the last decision and the latest frame."""

from __future__ import annotations

import time

import numpy as np
from facegate.web.live import LiveFace, LiveFrame
from facegate.web.terminal import terminal_message

LOCKED = {"locked": True}
UNLOCKED = {"locked": False}


def face(*failures: str) -> LiveFrame:
    f = LiveFace((0, 0, 50, 50), None, None, 0.1, tuple(failures))
    return LiveFrame(1, time.time(), np.zeros((4, 4, 3), np.uint8), (f,))


def test_messages() -> None:
    now = 100.0
    granted = (now - 1, {"type": "access_granted", "name": "Eileen Collins", "person_id": "astro"})
    unknown = (now - 1, {"type": "unknown_face"})
    assert terminal_message(UNLOCKED, False, granted, None, now)["message"] == "Welcome, Eileen Collins"
    assert terminal_message(LOCKED, True, granted, None, now)["message"] == "Welcome, Eileen Collins"  # security group
    assert terminal_message(LOCKED, True, None, None, now)["message"] == "Locked down"
    assert terminal_message(LOCKED, True, unknown, None, now)["message"] == "Locked down"
    assert terminal_message(UNLOCKED, False, None, None, now)["message"] == "Door open"
    assert terminal_message(LOCKED, False, unknown, None, now)["message"] == "Not recognised"
    old = (now - 10, {"type": "unknown_face"})
    assert terminal_message(LOCKED, False, old, None, now)["message"] == "Please look at the camera"
    stale_grant = (now - 10, {"type": "access_granted", "name": "Eileen Collins"})
    assert terminal_message(LOCKED, False, stale_grant, None, now)["kind"] == "look"


def test_hints_for_a_face_that_fails_a_gate() -> None:
    msg = terminal_message(LOCKED, False, None, face("face_too_small"), 100.0)
    assert msg["message"] == "Please look at the camera" and msg["hint"] == "Please come closer"
    assert terminal_message(LOCKED, False, None, face(), 100.0)["hint"] is None
