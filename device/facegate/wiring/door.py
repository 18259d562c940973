"""Door and panel: the relay (with contact and exit button) and the access-panel outputs fed by it."""

from __future__ import annotations

import atexit
from collections.abc import Callable
from typing import Any

from gpiozero.exc import GPIOZeroError

from facegate.access.door import Door
from facegate.config import Config, ConfigError
from facegate.panel.build import build_outputs
from facegate.panel.output import CredentialOutput


def build_door(config: Config, emit: Callable[..., Any],
               pin_factory: Any = None) -> tuple[Door, list[CredentialOutput]]:
    try:
        door = Door(config.door, emit, pin_factory=pin_factory)
    except GPIOZeroError as exc:  # no pin library, a pin used twice, an invalid pin name
        raise ConfigError(f"door: cannot set up the door pins: {exc} (on a machine without GPIO set "
                          'door.pin_factory = "mock")') from None
    atexit.register(door.close)  # the relay is released on every way out of the process
    # Access-panel outputs (facegate/panel, docs/panels.md): an OSDP reader and/or Wiegand, fed with the card
    # number of each recognised live person.
    return door, build_outputs(config, emit, door)
