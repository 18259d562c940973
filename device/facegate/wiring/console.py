"""The web console and door screen, served on their own threads (imported only when ``[web] enabled``).

The console sees the door only through :class:`facegate.web.port.DoorPort`; the frame loop only drops each
frame's results into the console's overwrite-only slot (facegate/web/live.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from facegate.config import Config, ConfigError
from facegate.validate.netaddr import console_url
from facegate.web.port import DoorPort

if TYPE_CHECKING:
    from facegate.vision.pipeline import FacePipeline
    from facegate.web.console import Console
    from facegate.web.server import ConsoleServer


def configuration_url(config: Config) -> str:
    """The console's URL for Home Assistant's device page."""
    return console_url(config.web.bind, config.web.port, config.web.tls_cert_file is not None, config.web.public_url)


def build_console(config: Config, door: DoorPort,
                  make_pipeline: Callable[[], FacePipeline]) -> tuple[Console, ConsoleServer]:
    """The console and its bound (not yet serving) server; ConfigError when the port or TLS files are unusable."""
    from facegate.web.console import Console
    from facegate.web.server import ConsoleServer

    console = Console(door, make_pipeline=make_pipeline)
    try:
        return console, ConsoleServer(console)
    except (OSError, ValueError) as exc:  # port in use, unreadable or mismatched TLS files
        raise ConfigError(f"web: cannot serve on {config.web.bind}:{config.web.port}: {exc}") from None
