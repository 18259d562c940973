"""The fleet console: the door console's HTTP server and security model, with the fleet's routes and pages.

Why the door's own stack (facegate.web.server) rather than a framework: the fleet console needs the same
things (sessions, CSRF, Origin checks, login brake, connection limits, security headers, TLS) and those are
already written, tested and attacked there; a framework would be a second implementation of each to audit,
and a new dependency on a Pi. The fleet's handler subclasses the door's and only adds routes and the operator
role; its accounts are the door's account store with the roles ``admin`` > ``operator`` > ``viewer``, in
``<state_dir>/fleet_users.json``. Every change is written to the audit table with the user who made it.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable
from importlib import resources
from typing import Any, cast
from urllib.parse import unquote

from facegate.fleet.doors import DoorRegistry
from facegate.fleet.people import PeopleEditor
from facegate.fleet.store import EventQuery, FleetStore
from facegate.journal.export import write_csv
from facegate.journal.timespec import parse_time
from facegate.web.accounts import UserStore
from facegate.web.httpjson import HttpError
from facegate.web.pages import CONTENT_TYPES, load_static
from facegate.web.passcheck import PasswordChecker
from facegate.web.people import ConsoleError
from facegate.web.server import MAX_PHOTO_BYTES, ConsoleServer, Handler
from facegate.web.sessions import LoginLimiter, SessionStore

log = logging.getLogger(__name__)

__all__ = ["FLEET_ROLES", "FleetApp", "FleetServer", "fleet_users"]

FLEET_ROLES: tuple[str, ...] = ("admin", "operator", "viewer")
USERS_FILE = "fleet_users.json"
FAILURES_FILE = "fleet_login_failures.json"
RANK = {"viewer": 0, "operator": 1, "admin": 2}
PAGES = {"/doors": "viewer", "/journal": "viewer", "/alerts": "viewer", "/people": "admin", "/system": "admin"}
COMMANDS = ("unlock", "lock", "lockdown_on", "lockdown_off")


def fleet_users(state_dir: Any) -> UserStore:
    return UserStore(state_dir, roles=FLEET_ROLES, file_name=USERS_FILE)


class FleetApp:
    """What the handler needs: the door console's session parts, and the fleet's people, doors and journal."""

    def __init__(self, config: Any, store: FleetStore, registry: DoorRegistry, people: PeopleEditor,
                 send_command: Callable[[str, str], dict[str, Any]], regroup: Callable[[str], None],
                 system: Callable[[], dict[str, Any]]) -> None:
        self.config = config.web
        self.store, self.registry, self.people = store, registry, people
        self.send_command, self.regroup, self.system = send_command, regroup, system
        self.users = fleet_users(config.state_dir)
        self.sessions = SessionStore(self.config.session_idle_minutes * 60)
        self.limiter = LoginLimiter(path=config.state_dir / FAILURES_FILE)
        self.checker = PasswordChecker(self.users)
        self.stopping = threading.Event()

    def close(self) -> None:
        self.stopping.set()
        self.checker.close()
        self.limiter.close()


def fleet_static() -> dict[str, tuple[bytes, str]]:
    """The door console's login page and style sheet, and the fleet's own page and script."""
    table = {k: v for k, v in load_static().items() if k in ("login.html", "login.js", "app.css")}
    for entry in resources.files("facegate.fleet").joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in CONTENT_TYPES:
            table[entry.name] = (entry.read_bytes(), CONTENT_TYPES[suffix])
    return table


class FleetHandler(Handler):
    server: FleetServer

    @property
    def app(self) -> FleetApp:
        return self.server.app

    def _require(self, role: str = "viewer", *, page: bool = False) -> Any:
        session = super()._require("viewer", page=page)
        if RANK.get(session.role, -1) < RANK[role]:
            raise HttpError(403, f"{role} role required")
        return session

    def _report(self, type: str, **fields: Any) -> None:
        user = str(fields.pop("user", "-"))
        self.app.store.audit(user, type, **fields)

    def _audit(self, user: str, action: str, result: dict[str, Any], **detail: Any) -> dict[str, Any]:
        self.app.store.audit(user, action, **detail)
        return result

    def _route(self, method: str, path: str) -> Callable[[], None] | None:
        a = self.app
        if method == "GET":
            if path in ("/", "/live"):
                return lambda: self._redirect("/doors")
            if path == "/login":
                return lambda: self._static("login.html")
            if path.startswith("/static/"):
                return lambda: self._static(path.removeprefix("/static/"))
            if path in PAGES:
                return lambda: self._fleet_page(path)
            simple: dict[str, tuple[str, Callable[[Any], None]]] = {
                "/api/session": ("viewer", lambda s: self._json({"user": s.user, "role": s.role, "csrf": s.csrf})),
                "/api/doors": ("viewer", lambda s: self._json(a.registry.view())),
                "/api/journal": ("viewer", lambda s: self._journal_query(csv=False)),
                "/api/journal.csv": ("viewer", lambda s: self._journal_query(csv=True)),
                "/api/alerts": ("viewer", lambda s: self._json(a.store.alerts(self.query.get("open") == "1"))),
                "/api/people": ("admin", lambda s: self._json(a.people.people(self.query.get("q", "")))),
                "/api/audit": ("admin", lambda s: self._json(a.store.audit_log())),
                "/api/system": ("admin", lambda s: self._json(a.system())),
            }
            if path in simple:
                role, fn = simple[path]
                return lambda: fn(self._require(role))
            return None
        if method != "POST":
            return None
        if path == "/api/login":
            return self._login
        if path == "/api/logout":
            return self._logout
        if path == "/api/people":
            return lambda: self._guarded("admin", lambda s: self._audit(
                s.user, "person_added", r := a.people.save(self._json_body()), person_id=r["id"], name=r["name"],
                doors=r["doors"]))
        for prefix, handler in (("/api/people/", self._fleet_person_action), ("/api/doors/", self._door_action),
                                ("/api/alerts/", self._alert_action), ("/api/journal/", self._journal_action)):
            if path.startswith(prefix):
                key, _, verb = path.removeprefix(prefix).partition("/")
                return handler(unquote(key), verb) if key else None
        return None

    def _guarded(self, role: str, fn: Callable[[Any], dict[str, Any]]) -> None:
        session = self._change(role)
        try:
            result = fn(session)
        except ConsoleError as exc:  # the fleet's PeopleError and the shared people handling's refusals
            raise HttpError(exc.status, str(exc)) from None
        self._json(result)

    def _fleet_person_action(self, pid: str, verb: str) -> Callable[[], None] | None:
        a = self.app
        verbs: dict[str, Callable[[Any], dict[str, Any]]] = {
            "": lambda s: self._audit(s.user, "person_updated", r := a.people.save(self._json_body(), pid),
                                      person_id=pid, name=r["name"], doors=r["doors"]),
            "remove": lambda s: self._audit(s.user, "person_removed", a.people.remove(pid), person_id=pid),
            "photo": lambda s: self._photo(s, pid),
        }
        fn = verbs.get(verb)
        return None if fn is None else lambda: self._guarded("admin", fn)

    def _photo(self, session: Any, pid: str) -> dict[str, Any]:
        filename = self.headers.get("X-Filename", "upload")[:200]
        result = self.app.people.add_photo(pid, self._body(MAX_PHOTO_BYTES), filename)
        return self._audit(session.user, "photo_enrolled" if result["accepted"] else "photo_refused", result,
                           person_id=pid, file=filename, reason=result["reason"])

    def _door_action(self, door: str, verb: str) -> Callable[[], None] | None:
        a = self.app
        if verb == "command":
            def command(s: Any) -> dict[str, Any]:
                action = self._json_body().get("action")
                if action not in COMMANDS:
                    raise HttpError(400, f"action: one of {', '.join(COMMANDS)}")
                if a.store.door(door) is None:
                    raise HttpError(404, f"no door {door!r}")
                return self._audit(s.user, f"door_{action}", a.send_command(door, action), door_id=door)
            return lambda: self._guarded("operator", command)
        if verb == "group":
            def group(s: Any) -> dict[str, Any]:
                value = self._json_body().get("group")
                if value is not None and (not isinstance(value, str) or not a.registry.admits(value)):
                    raise HttpError(400, "group: a name of 1-64 letters, digits, '_' or '-', or null")
                if a.store.door(door) is None:
                    raise HttpError(404, f"no door {door!r}")
                a.store.touch_door(door, door_group=value)
                a.regroup(door)
                return self._audit(s.user, "door_grouped", {"door_id": door, "group": value}, door_id=door,
                                   group=value)
            return lambda: self._guarded("admin", group)
        return None

    def _alert_action(self, key: str, verb: str) -> Callable[[], None] | None:
        if verb != "ack" or not key.isdigit() or len(key) > 18:
            return None

        def ack(s: Any) -> dict[str, Any]:
            done = self.app.store.acknowledge_alert(int(key), s.user)
            return self._audit(s.user, "alert_acknowledged", {"id": int(key), "acknowledged": done}, alert=int(key))
        return lambda: self._guarded("operator", ack)

    def _journal_action(self, event_id: str, verb: str) -> Callable[[], None] | None:
        if verb != "false-accept":
            return None

        def report(s: Any) -> dict[str, Any]:
            event = self.app.store.event(event_id)
            if event is None or event.get("type") != "access_granted":
                raise HttpError(404, f"no access_granted event {event_id[:64]!r}")
            who = event.get("name") or event.get("person_id")
            self.app.store.add_alert(event.get("device_id"), "false_accept",
                                     f"false accept reported by {s.user}: {who}", event_id)
            return self._audit(s.user, "false_accept_reported", {"event_id": event_id, "reported": True},
                               event_id=event_id, door_id=event.get("device_id"))
        return lambda: self._guarded("operator", report)

    def _fleet_page(self, path: str) -> None:
        session = self._session()
        if session is None:
            self._redirect("/login")
            return
        if RANK.get(session.role, -1) < RANK[PAGES[path]]:
            raise HttpError(403, f"{PAGES[path]} role required")
        shell, content_type = self.server.static["fleet.html"]
        self._send(200, shell.replace(b"{{page}}", path[1:].encode()), content_type)

    def _journal_query(self, csv: bool) -> None:
        q = self.query
        try:
            since = parse_time(q["since"]).timestamp() if q.get("since") else None
            until = parse_time(q["until"]).timestamp() if q.get("until") else None
            limit = max(1, min(int(q.get("limit", "100")), 10_000 if csv else 500))
            offset = max(0, int(q.get("offset", "0")))
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None
        query = EventQuery(since=since, until=until, door=q.get("door") or None, person=q.get("person") or None,
                           type=q.get("type") or None, limit=limit, offset=offset)
        rows = self.app.store.query_events(query)
        if csv:
            out = io.StringIO()
            write_csv(rows, out)
            self._send(200, out.getvalue().encode(), "text/csv; charset=utf-8",
                       {"Content-Disposition": 'attachment; filename="facegate-fleet-journal.csv"'})
            return
        self._json({"events": rows, "offset": offset, "limit": limit})


class FleetServer(ConsoleServer):
    def __init__(self, app: FleetApp) -> None:
        self.app = app
        # The door console's server reads only config, sessions, users, limiter, checker and stopping from it.
        super().__init__(cast(Any, app))
        self.RequestHandlerClass = FleetHandler
        self.static = fleet_static()
