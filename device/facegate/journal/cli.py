"""``facegate events`` and the journal side of ``facegate gallery remove``.

Kept here so the journal's command-line contract lives beside the journal; :mod:`facegate.cli` only attaches
these. Same conventions: JSON lines on stdout (or CSV with ``--csv``), messages on stderr, exit 0 ok, 2 bad
input (a bad time, no journal where one was expected), 78 a bad config.

``facegate events`` opens the journal read-only, so it works while the service writes (WAL) and can be run by
any user who may read the file. It prints the newest ``--limit`` matching events, oldest first (like a log);
``--newest-first`` reverses that, ``--limit 0`` prints every match.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from facegate.base.output import Output
from facegate.errors import FacegateError

__all__ = ["add_events_command", "add_purge_options", "outbox_target", "purge_events", "purge_target", "scrub_outbox"]

EXIT_OK = 0


def _time(text: str) -> Any:
    from facegate.journal.timespec import parse_time

    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _types(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [t for value in values for t in (part.strip() for part in value.split(",")) if t]


def cmd_events(args: argparse.Namespace, io: Output) -> int:
    from facegate.config import load_config
    from facegate.journal.export import write_csv
    from facegate.journal.store import Journal

    if args.limit < 0:
        raise FacegateError(f"--limit {args.limit}: must be 0 (everything) or more")
    config = load_config(args.config)
    path = config.journal_path
    if not path.is_file():
        state = "" if config.journal.enabled else " ([journal] enabled = false in this config)"
        raise FacegateError(f"{path}: no journal here{state}; the service creates it when it runs with the journal on")
    types = _types(args.type)
    with Journal(path, readonly=True) as journal:
        filters: dict[str, Any] = {"since": args.since, "until": args.until, "types": types, "person": args.person}
        rows = journal.query(**filters, limit=args.limit or None, newest_first=True)
        total = journal.count(**filters) if args.limit and len(rows) == args.limit else len(rows)
    if not args.newest_first:
        rows.reverse()
    if args.csv:
        write_csv(rows, io.out)
        io.out.flush()
    else:
        for row in rows:
            io.result(row)
    if total > len(rows):
        io.message(f"showing the newest {len(rows)} of {total} matching events (--limit 0 for all)")
    return EXIT_OK


def add_events_command(sub: Any) -> None:
    p = sub.add_parser("events", help="search the door's access journal (works while the service runs)",
                       description="Events from the local access journal, JSON lines (or --csv). Times: ISO-8601 "
                                   "(no zone = local time) or an age like 30m, 24h, 7d, 2w.")
    p.add_argument("--config", type=Path, required=True, help="the door's TOML config (finds the journal)")
    p.add_argument("--since", type=_time, default=None, help="from this time on (inclusive), e.g. 24h or 2026-12-01")
    p.add_argument("--until", type=_time, default=None, help="before this time (exclusive)")
    p.add_argument("--type", action="append", default=None,
                   help="event type(s), comma-separated or repeated (e.g. access_granted,access_denied)")
    p.add_argument("--person", default=None, help="a person id, or a name (case-insensitive)")
    p.add_argument("--limit", type=int, default=100, help="newest N matching events (default 100; 0 = all)")
    p.add_argument("--csv", action="store_true", help="CSV with a header instead of JSON lines")
    p.add_argument("--newest-first", action="store_true", help="print the newest event first")
    p.set_defaults(func=cmd_events)


# ------------------------------------------------------------------ gallery remove --purge-events


def add_purge_options(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group()
    what.add_argument("--purge-events", action="store_true",
                      help="also delete the person's events from the access journal")
    what.add_argument("--anonymise-events", "--anonymize-events", dest="anonymise_events", action="store_true",
                      help="keep the person's journal events but without their id and name")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--config", type=Path, default=None, help="door config: its [journal] path is used")
    where.add_argument("--journal", type=Path, default=None,
                       help="the journal file (default: journal.db beside the gallery)")


def purge_target(args: argparse.Namespace) -> Path | None:
    """The journal to purge, or None when no purge was asked for; checked before the gallery is touched, so a
    journal that cannot be found leaves the person in place rather than half-removed."""
    if not (args.purge_events or args.anonymise_events):
        return None
    if args.config is not None:
        from facegate.config import load_config

        path = load_config(args.config).journal_path
    elif args.journal is not None:
        path = args.journal
    else:
        path = Path(args.gallery).parent / "journal.db"
    if not path.is_file():
        raise FacegateError(f"{path}: no access journal here; pass --config FILE or --journal PATH "
                            "(nothing was removed)")
    return path


def outbox_target(args: argparse.Namespace) -> Path:
    """The outbox beside the door's state: ``state_dir/outbox.db`` of ``--config``, else beside the gallery."""
    if args.config is not None:
        from facegate.config import load_config

        return load_config(args.config).state_dir / "outbox.db"
    return Path(args.gallery).parent / "outbox.db"


def scrub_outbox(path: Path) -> dict[str, Any]:
    """Clear delivered events (and the WAL) from the outbox, when there is one (facegate.events.outbox)."""
    if not path.is_file():
        return {"outbox_scrubbed": False}
    from facegate.events.outbox import scrub_delivered

    if not scrub_delivered(path):
        raise FacegateError(f"{path}: delivered events could not be cleared from the WAL (another process is "
                            "reading it); run the command again")
    return {"outbox_scrubbed": True}


def purge_events(path: Path, person_id: str, anonymise: bool) -> dict[str, Any]:
    from facegate.journal.store import Journal

    with Journal(path) as journal:
        changed = journal.purge_person(person_id, anonymise=anonymise)
    key = "events_anonymised" if anonymise else "events_purged"
    return {key: changed, "journal": str(path)}
