"""What the door screen says: one big, plain line chosen from the door's state and the last decision."""

from __future__ import annotations

import time
from typing import Any

from facegate.web.live import LiveFrame

WELCOME_SECONDS = 4.0
DENIED_SECONDS = 3.0
FACE_FRESH_SECONDS = 1.0


ARROWS = {"left": "\u2190", "right": "\u2192"}  # the visitor's own side, as on a mirror-like door screen


def challenge_prompt(challenge: tuple[float, dict[str, Any]] | None, now: float) -> dict[str, Any] | None:
    """The head-turn prompt while a liveness challenge is open (asked, not yet settled, within its time)."""
    if challenge is None:
        return None
    at, event = challenge
    limit = float(event.get("timeout_seconds") or 0.0)
    direction = event.get("direction")
    if event.get("outcome") != "asked" or direction not in ARROWS or now - at > limit + 0.5:
        return None
    return {"message": f"Please turn your head a little to your {direction}", "kind": "challenge",
            "arrow": ARROWS[direction], "hint": None}


def terminal_message(door: dict[str, Any], lockdown: bool, last_decision: tuple[float, dict[str, Any]] | None,
                     frame: LiveFrame | None, now: float | None = None,
                     challenge: tuple[float, dict[str, Any]] | None = None) -> dict[str, Any]:
    """``{"message", "kind"}``; kind is one of welcome, denied, lockdown, open, challenge, look (CSS styles each);
    a challenge also carries ``arrow`` (the side to turn to)."""
    now = time.monotonic() if now is None else now
    if last_decision is not None:
        at, event = last_decision
        age = now - at
        if event.get("type") == "access_granted" and age < WELCOME_SECONDS:
            return {"message": f"Welcome, {event.get('name') or event.get('person_id')}", "kind": "welcome"}
    if lockdown:
        return {"message": "Locked down", "kind": "lockdown"}
    if (last_decision is None or challenge is None or last_decision[0] < challenge[0]) \
            and (prompt := challenge_prompt(challenge, now)) is not None:
        return prompt
    if not door.get("locked", True):
        return {"message": "Door open", "kind": "open"}
    if last_decision is not None and now - last_decision[0] < DENIED_SECONDS \
            and last_decision[1].get("type") != "access_granted":
        return {"message": "Not recognised", "kind": "denied"}
    hint = None
    if frame is not None and time.time() - frame.ts < FACE_FRESH_SECONDS and frame.faces:
        failures = frame.faces[0].failures
        hint = {"face_too_small": "Please come closer", "too_dark": "More light, please",
                "yaw_too_large": "Please face the camera", "pitch_too_large": "Please face the camera",
                "too_blurry": "Please hold still"}.get(failures[0]) if failures else None
    return {"message": "Please look at the camera", "kind": "look", "hint": hint}
