"""``facegate doctor``'s access-panel check: the OSDP key and serial port, and card numbers that the configured
formats cannot carry (those people would get ``credential_failed`` at the door instead of a card read)."""

from __future__ import annotations

import os
import termios
from typing import NamedTuple

from facegate.config import Config, ConfigError
from facegate.panel.wiegand import FORMATS


class PanelCheck(NamedTuple):
    """The result; facegate.doctor turns it into its ``Check`` (importing that here would be an import cycle)."""

    ok: bool
    detail: str
    fix: str = ""


def _port_problem(port: str) -> str | None:
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        return f"cannot open {port}: {exc.strerror}"
    try:
        termios.tcgetattr(fd)
    except termios.error:
        return f"{port} is not a serial port"
    finally:
        os.close(fd)
    return None


def _cards_that_do_not_fit(config: Config, fmt_name: str) -> list[str]:
    from facegate.gallery.store import Gallery

    if not config.gallery_path.is_file():
        return []
    top = FORMATS[fmt_name].max_card
    with Gallery(config.gallery_path) as gallery:
        return [p["id"] for p in gallery.persons() if p["card_number"] is not None and p["card_number"] > top]


def check_panel(config: Config) -> PanelCheck:
    parts, problems, fixes = [], [], []
    if config.osdp is not None:
        o = config.osdp
        if o.install_mode:
            problems.append("osdp.install_mode is on")
            fixes.append("turn osdp.install_mode off once the panel has set the key")
        else:
            try:
                from facegate.panel.osdp_keys import load_scbk

                load_scbk(o.scbk_file)
            except ConfigError as exc:
                problems.append(str(exc))
                fixes.append("provision the key (openssl rand -hex 16) or commission once with install_mode")
        port = _port_problem(o.port)
        if port is not None:
            problems.append(port)
            fixes.append("check the RS-485 adapter (ls /dev/serial/by-id) and that the service user is in 'dialout'")
        parts.append(f"OSDP reader {o.address} on {o.port} at {o.baud} baud")
    for section, fmt in (("osdp", config.osdp and config.osdp.format), ("wiegand", config.wiegand and
                                                                           config.wiegand.format)):
        if fmt:
            too_big = _cards_that_do_not_fit(config, fmt)
            if too_big:
                problems.append(f"{section}: card numbers of {', '.join(too_big[:10])} do not fit the {fmt}-bit format")
                fixes.append("change those card numbers ('facegate gallery card') or the format")
    if config.wiegand is not None:
        w = config.wiegand
        parts.append(f"Wiegand {w.format}-bit on pins {w.data0_pin}/{w.data1_pin}")
    if not parts:
        return PanelCheck(True, "no access panel configured")
    if problems:
        return PanelCheck(False, "; ".join(problems), "; ".join(fixes))
    return PanelCheck(True, "; ".join(parts))
