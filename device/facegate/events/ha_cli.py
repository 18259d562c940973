"""``facegate code hash``: turn a Home Assistant unlock code into the hash the door's config holds.

The code is read from stdin (never from the command line, where it would land in the shell history and in
``ps``), so ``facegate code hash`` prompts on a terminal and ``printf %s "$CODE" | facegate code hash`` works in a
script. Same conventions as the rest of the CLI: the JSON result on stdout, messages on stderr, exit 2 on bad
input.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from facegate.base.output import Output

__all__ = ["add_code_commands"]

EXIT_OK, EXIT_BAD_INPUT = 0, 2


def _read_code() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("code: ")
    line = sys.stdin.readline()
    return line.removesuffix("\n").removesuffix("\r")


def cmd_code_hash(args: argparse.Namespace, io: Output) -> int:
    import re

    from facegate.events.ha_codes import MIN_CODE_CHARS, hash_code

    code = _read_code()
    if len(code) < MIN_CODE_CHARS:
        io.message(f"stdin: the code must have at least {MIN_CODE_CHARS} characters (6 or more recommended)")
        return EXIT_BAD_INPUT
    if args.code_format and not re.fullmatch(args.code_format, code):
        io.message(f"stdin: the code does not match --code-format {args.code_format!r}, so Home Assistant "
                   "would refuse to send it")
        return EXIT_BAD_INPUT
    digest = hash_code(code)
    io.result({"hash": digest})
    io.message("add it to the door's config: [commands] home_assistant_codes = [" + json.dumps(digest) + "]")
    return EXIT_OK


def _regex(text: str) -> str:
    """argparse type for --code-format: a regular expression Python can compile."""
    import re

    try:
        re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a regular expression: {exc}") from None
    return text


def add_code_commands(sub: Any) -> None:
    """Attach ``code hash`` to the top-level ``facegate`` sub-parsers."""
    code = sub.add_parser("code", help="Home Assistant unlock codes").add_subparsers(dest="action", required=True)
    p = code.add_parser("hash", help="read a code from stdin and print its scrypt hash for home_assistant_codes")
    p.add_argument("--code-format", type=_regex, default=r"^\d{6,12}$",
                   help=r"refuse codes that do not match this regex (default ^\d{6,12}$, the door's default "
                        "commands.home_assistant_code_format); '' accepts any")
    p.set_defaults(func=cmd_code_hash)
