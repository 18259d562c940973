"""``facegate user add|passwd|remove|list``: console accounts, kept in the service's state directory.

Passwords are prompted twice without echo, or read (one line) from standard input with ``--password-stdin`` for
scripts; never taken as an argument, which would land in shell history and ``ps``.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from facegate.config import load_config
from facegate.web.accounts import ROLES, AccountError, UserStore


def _store(args: argparse.Namespace) -> UserStore:
    """The door's accounts; ``add_user_commands`` callers may give another (the fleet console's)."""
    make: Callable[[argparse.Namespace], UserStore] | None = getattr(args, "store", None)
    return make(args) if make is not None else UserStore(load_config(args.config).state_dir)


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise AccountError("--password-stdin: nothing on standard input")
        return line.rstrip("\r\n")
    first = getpass.getpass("New password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise AccountError("the passwords differ")
    return first


def cmd_user_add(args: argparse.Namespace, io: Any) -> int:
    user = _store(args).add(args.name, args.role, _password(args))
    io.result({"user": user.name, "role": user.role, "added": True})
    return 0


def cmd_user_passwd(args: argparse.Namespace, io: Any) -> int:
    store = _store(args)
    if store.get(args.name) is None:  # before the prompt: do not ask for a password for nobody
        raise AccountError(f"no user {args.name!r}")
    user = store.passwd(args.name, _password(args))
    io.result({"user": user.name, "role": user.role, "password_changed": True})
    return 0


def cmd_user_remove(args: argparse.Namespace, io: Any) -> int:
    _store(args).remove(args.name)
    io.result({"user": args.name, "removed": True})
    return 0


def cmd_user_list(args: argparse.Namespace, io: Any) -> int:
    for user in _store(args).users():
        io.result({"user": user.name, "role": user.role})
    return 0


def add_user_commands(sub: Any, store: Callable[[argparse.Namespace], UserStore] | None = None,
                      roles: tuple[str, ...] = ROLES, what: str = "web console accounts") -> None:
    """Register ``user`` and its actions on ``sub`` (the top-level sub-parser, or ``fleet``'s with its store)."""
    user = sub.add_parser("user", help=what).add_subparsers(dest="action", required=True)
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config", type=Path, required=True, help="TOML config file (accounts live in state_dir)")
    secret = argparse.ArgumentParser(add_help=False)
    secret.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p = user.add_parser("add", parents=[config, secret], help="add a console user")
    p.add_argument("name")
    p.add_argument("--role", choices=roles, required=True)
    p.set_defaults(func=cmd_user_add)
    p = user.add_parser("passwd", parents=[config, secret], help="change a user's password (ends their sessions)")
    p.add_argument("name")
    p.set_defaults(func=cmd_user_passwd)
    p = user.add_parser("remove", parents=[config], help="remove a user (ends their sessions)")
    p.add_argument("name")
    p.set_defaults(func=cmd_user_remove)
    p = user.add_parser("list", parents=[config], help="users and roles")
    p.set_defaults(func=cmd_user_list)
    if store is not None:
        for parser in user.choices.values():
            parser.set_defaults(store=store)
