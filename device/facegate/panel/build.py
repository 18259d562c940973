"""Builds the configured credential outputs for the service (``[osdp]``, ``[wiegand]``); none when absent.

LibOSDP is imported only when ``[osdp]`` is configured, so a door without a panel never needs the library.
"""

from __future__ import annotations

from collections.abc import Callable

from gpiozero.exc import GPIOZeroError

from facegate.access.door import Door
from facegate.config import Config, ConfigError
from facegate.panel.output import CredentialOutput


def build_outputs(config: Config, emit: Callable[..., object], door: Door) -> list[CredentialOutput]:
    outputs: list[CredentialOutput] = []
    try:
        if config.wiegand is not None:
            from facegate.panel.wiegand_tx import WiegandOutput

            outputs.append(WiegandOutput(config.wiegand, emit, pin_factory=door.pin_factory))
        if config.osdp is not None:
            try:
                from facegate.panel.osdp_pd import OsdpReader
            except ImportError as exc:
                raise ConfigError(f"osdp: LibOSDP is not installed ({exc}); pip install libosdp") from None
            outputs.append(OsdpReader(config.osdp, emit, door))
    except GPIOZeroError as exc:  # a pin used twice (e.g. by the door), an invalid pin name
        for output in outputs:
            output.close()
        raise ConfigError(f"wiegand/osdp: cannot set up the pins: {exc}") from None
    except BaseException:
        for output in outputs:
            output.close()
        raise
    return outputs
