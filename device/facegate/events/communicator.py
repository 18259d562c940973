"""The contract between the door service and whatever carries its events and commands.

The service only talks to a :class:`Communicator`; :class:`~facegate.events.mqtt.MqttCommunicator` is the real
one and :class:`NullCommunicator` is used when MQTT is disabled, so the service code has no ``if mqtt`` branches.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from facegate.events.emitter import EventEmitter

__all__ = ["STATE_NAMES", "Command", "CommandHandler", "Communicator", "NullCommunicator", "status_seq"]

#: State names the service publishes (retained) and what their payloads are.
STATE_NAMES = {
    "lock/state": "LOCKED | UNLOCKED",
    "door/state": "open | closed",
    "status": "JSON object",
}


@dataclass(frozen=True)
class Command:
    """A verified, fresh, never-seen-before command (see :mod:`facegate.events.commands`)."""

    action: str  # "unlock" | "lock" | "lockdown_on" | "lockdown_off"
    ts: float  # the sender's Unix time, seconds
    nonce: str
    raw: dict[str, Any] = field(repr=False)


CommandHandler = Callable[[Command], None]


@runtime_checkable
class Communicator(Protocol):
    """What the service needs from a transport. Implementations never block the caller on the network."""

    @property
    def connected(self) -> bool:
        """True while a broker connection is up (always False for the null communicator)."""
        ...

    def start(self) -> None:
        """Begin connecting and delivering in the background; returns at once even if the broker is down."""
        ...

    def stop(self, flush_timeout_seconds: float) -> int:
        """Wait up to ``flush_timeout_seconds`` for pending events to be delivered, then disconnect.

        Returns the number of events still pending; they stay in the outbox for the next start.
        """
        ...

    def publish_state(self, name: str, payload: str | dict[str, Any]) -> None:
        """Record the latest value of a retained state topic (``lock/state``, ``door/state``, ``status``).

        A ``status`` dict with a lower ``status_seq`` than the one recorded is dropped (last writer wins).
        """
        ...

    def on_command(self, handler: CommandHandler) -> None:
        """Register the callback for verified commands (called on the transport's thread: be thread-safe)."""
        ...


def status_seq(payload: object) -> int:
    """``status_seq`` of a status payload (-1 when it has none): newer statuses have higher ones."""
    seq = payload.get("status_seq") if isinstance(payload, dict) else None
    return seq if isinstance(seq, int) else -1


class NullCommunicator:
    """MQTT disabled: events accumulate in the outbox (up to its limit), states are only kept in memory.

    Keeping the events means enabling MQTT later delivers the history instead of losing it.
    """

    def __init__(self, emitter: EventEmitter | None = None) -> None:
        self._emitter = emitter
        self._lock = threading.Lock()
        self._states: dict[str, str | dict[str, Any]] = {}
        self._handler: CommandHandler | None = None

    @property
    def connected(self) -> bool:
        return False

    @property
    def states(self) -> dict[str, str | dict[str, Any]]:
        """A copy of the latest published states, by name."""
        with self._lock:
            return dict(self._states)

    def start(self) -> None:
        return None

    def stop(self, flush_timeout_seconds: float) -> int:
        return self._emitter.pending if self._emitter is not None else 0

    def publish_state(self, name: str, payload: str | dict[str, Any]) -> None:
        with self._lock:
            if name == "status" and status_seq(payload) < status_seq(self._states.get(name)):
                return  # last writer wins, as in MqttCommunicator
            self._states[name] = payload

    def on_command(self, handler: CommandHandler) -> None:
        self._handler = handler
