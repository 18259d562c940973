"""``facegate fleet serve|user|keys``: the admin side's commands (docs/fleet.md)."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path
from typing import Any

from facegate.fleet.config import load_fleet_config
from facegate.process.logs import setup_logging
from facegate.web.accounts import UserStore
from facegate.web.users_cli import add_user_commands

__all__ = ["add_fleet_commands"]

log = logging.getLogger(__name__)


def _store(args: argparse.Namespace) -> UserStore:
    from facegate.fleet.web import fleet_users

    return fleet_users(load_fleet_config(args.config).state_dir)


def cmd_fleet_serve(args: argparse.Namespace, io: Any) -> int:
    from facegate.fleet.server import FleetService

    config = load_fleet_config(args.config)
    setup_logging(config.log_level)
    service = FleetService(config)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: service.stop_event.set())
    service.run()
    return 0


def cmd_fleet_keys(args: argparse.Namespace, io: Any) -> int:
    """The public keys every door needs (made on first use), for ``[sync] public_keys`` and ``[commands]``."""
    from facegate.fleet.server import load_or_create_key
    from facegate.sync.keys import public_key_b64

    config = load_fleet_config(args.config)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    sync = load_or_create_key(config.sync_key_path)
    command = load_or_create_key(config.command_key_path)
    io.result({"sync_public_key": public_key_b64(sync.public_key()),
               "command_public_key": public_key_b64(command.public_key()),
               "sync_topic_prefix": config.sync.topic_prefix})
    return 0


def add_fleet_commands(sub: Any) -> None:
    """Register ``fleet`` (serve, keys, user ...) on the top-level sub-parser."""
    from facegate.fleet.web import FLEET_ROLES

    fleet = sub.add_parser("fleet", help="the admin side of a multi-door site").add_subparsers(dest="fleet_action",
                                                                                             required=True)
    p = fleet.add_parser("serve", help="run the fleet console, journal and gallery publisher")
    p.add_argument("--config", type=Path, required=True, help="fleet.toml")
    p.set_defaults(func=cmd_fleet_serve)
    p = fleet.add_parser("keys", help="print the public keys doors must trust (made at first use)")
    p.add_argument("--config", type=Path, required=True, help="fleet.toml")
    p.set_defaults(func=cmd_fleet_keys)
    add_user_commands(fleet, store=_store, roles=FLEET_ROLES, what="fleet console accounts")
