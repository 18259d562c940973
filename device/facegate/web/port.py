"""The console's narrow port into the running door: all the web package may read of it or ask of it.

The service implements this Protocol; the web package depends on it alone and never imports the service (not
even for type checking), so the console can be built and tested against anything that keeps these promises,
and the service can change its inside without the console noticing. Each member is a reference read or a call
that takes a lock for microseconds: the console's threads must never hold up the frame loop.
"""

from __future__ import annotations

from typing import Any, Protocol

from facegate.access.door import Door
from facegate.config import Config
from facegate.events.emitter import EventEmitter


class DoorPort(Protocol):
    @property
    def config(self) -> Config:
        """The whole configuration the door runs with (read-only)."""
        ...

    @property
    def emitter(self) -> EventEmitter:
        """Where console actions and logins are reported, and where the console's live event feed listens."""
        ...

    @property
    def door(self) -> Door:
        """The relay: state, unlock and lock (the door schedules its own relock)."""
        ...

    @property
    def last_person(self) -> str | None:
        """Name (or id) of the last person let in."""
        ...

    @property
    def fps(self) -> float:
        """Frames per second of the frame loop, over its last few seconds."""
        ...

    @property
    def embedder_sha256(self) -> str:
        """The embedder the gallery's templates must come from."""
        ...

    @property
    def embedder_dim(self) -> int:
        """Length of one template."""
        ...

    def name_of(self, person_id: str) -> str | None:
        """The display name of an enrolled person, as the frame loop knows it now."""
        ...

    def set_lockdown(self, on: bool) -> None:
        """Store the lockdown flag and, turning it on, lock the door, atomically with respect to a grant."""
        ...

    def publish_status(self) -> None:
        """Ask for a fresh status on MQTT (coalesced)."""
        ...

    def status(self) -> dict[str, Any]:
        """The status document (the same as the MQTT status topic's)."""
        ...

    def models(self) -> list[dict[str, Any]]:
        """The models in use: name, role, sha256, quantization."""
        ...

    def sync_state(self) -> dict[str, Any] | None:
        """The installed gallery bundle (version, bundle_sha256), or None when fleet sync is off."""
        ...

    def health_checks(self) -> list[dict[str, Any]]:
        """The checks of ``facegate doctor`` that can run beside the service (models, gallery, broker, clock)."""
        ...
