"""The console's HTTP(S) server: the standard library's ``ThreadingHTTPServer``, one thread per connection.

Why the standard library: nothing new to install on the Pi (no wheel to build for armv7/arm64), no framework
whose defaults must be audited; the console needs a dozen routes, cookies, JSON, SSE and MJPEG, all of which are
a few lines each. TLS is the ``ssl`` module; the handshake runs on the connection's own thread (not in
``accept``), so a client that stalls mid-handshake holds up nobody.

Security model (docs/console.md): every page and API except ``/login``, ``/api/login``, ``/static/*`` and
the loopback-only ``/terminal*`` needs a session cookie; every POST needs the session's CSRF token in
``X-CSRF-Token`` and, when the browser sends one, an ``Origin`` naming this console (``web.public_url``, the
address the connection came in on, or this machine's names; never the request's own ``Host``); admin-only
routes refuse viewers with 403; static files come from a table built at start (a request path is never joined
onto a directory); every response, error pages included, carries a strict CSP (no inline script),
``frame-ancestors 'none'``, ``nosniff`` and ``no-referrer``.

Resource limits (docs/console.md): connections per client and in all, with slots kept for the device itself
(the door screen); a short deadline for the TLS handshake and the first request; request heads and JSON bodies
bounded in size and nesting; one password check at a time (facegate.web.passcheck); streams per account.
"""

from __future__ import annotations

import contextlib
import hmac
import http.client
import io
import ipaddress
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from facegate.events.ratelimit import ReportLimiter
from facegate.validate.netaddr import host_header_is_local, is_local_client, limiter_key
from facegate.web.connections import ConnectionSlots
from facegate.web.console import Console, dumps
from facegate.web.httpjson import HttpError, flag, parse_json_object
from facegate.web.origins import machine_names, origin, origin_of_url
from facegate.web.pages import PAGES, SECURITY_HEADERS, load_static
from facegate.web.passcheck import CheckerBusy
from facegate.web.people import ConsoleError
from facegate.web.priority import lower_this_thread
from facegate.web.sessions import Session
from facegate.web.streams import StreamRoutes
from facegate.web.tls import TlsFileError, server_context

log = logging.getLogger(__name__)

COOKIE = "facegate_session"
MAX_JSON_BYTES = 64 * 1024
MAX_LOGIN_JSON_BYTES = 4 * 1024  # a user name and a password of at most 1024 characters
MAX_PHOTO_BYTES = 16 * 1024 * 1024
MAX_ZIP_BYTES = 256 * 1024 * 1024
MAX_HEAD_BYTES = 32 * 1024  # request headers in all (http.server alone allows 100 lines of 64 KB)
REQUEST_HEAD_SECONDS = 10.0  # request line + headers, in all (each read alone may take `timeout`)
HANDSHAKE_SECONDS = 3.0  # a new connection's TLS handshake must be done within this
FIRST_REQUEST_SECONDS = 3.0  # ... and its first request line begun within this (an idle socket holds a slot)
KEEPALIVE_IDLE_SECONDS = 10.0  # between requests on a kept-alive connection
ERROR_TRACEBACKS_PER_MINUTE = 5  # an unexpected error's traceback is logged at most this often (anyone can cause one)

class Handler(StreamRoutes):
    server: ConsoleServer
    server_version = "facegate"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds a client may take to send a request (socket timeout)

    # ------------------------------------------------------------------ plumbing

    def setup(self) -> None:
        """A TLS connection's handshake, done here within ``HANDSHAKE_SECONDS`` (the socket timeout bounds each
        read, so a deadline timer bounds their sum): a connection that never starts TLS holds its slot 3 s."""
        super().setup()
        self._dead = False
        self._requests = 0
        if not isinstance(self.connection, ssl.SSLSocket):
            return
        timer = threading.Timer(HANDSHAKE_SECONDS, self._head_too_slow)
        timer.daemon = True
        timer.start()
        try:
            self.connection.settimeout(HANDSHAKE_SECONDS)
            self.connection.do_handshake()
            self.connection.settimeout(self.timeout)
        except (OSError, ValueError) as exc:  # ssl.SSLError and TimeoutError are OSErrors
            log.debug("%s: no TLS handshake: %s", self.client_address[0], exc)
            self._dead = True
        finally:
            timer.cancel()

    def handle(self) -> None:
        if not self._dead:
            super().handle()

    def handle_one_request(self) -> None:
        """One request, whose head must arrive within ``REQUEST_HEAD_SECONDS``: the socket timeout bounds each
        read, not their sum, so without this a client trickling a byte at a time holds a connection for ever.
        Until its first byte, the wait is ``FIRST_REQUEST_SECONDS`` on a new connection (an idle connection
        holds a slot) and ``KEEPALIVE_IDLE_SECONDS`` between requests."""
        self._head_timer = threading.Timer(REQUEST_HEAD_SECONDS, self._head_too_slow)
        self._head_timer.daemon = True
        self._head_timer.start()
        with contextlib.suppress(OSError):
            self.connection.settimeout(KEEPALIVE_IDLE_SECONDS if self._requests else FIRST_REQUEST_SECONDS)
        self._requests += 1
        try:
            super().handle_one_request()
        finally:
            self._head_timer.cancel()

    def parse_request(self) -> bool:
        with contextlib.suppress(OSError):  # the request line is in: the usual per-read timeout from here on
            self.connection.settimeout(self.timeout)
        rfile = self.rfile
        self.rfile = _HeadLimit(rfile, MAX_HEAD_BYTES)  # type: ignore[assignment]
        try:
            ok = super().parse_request()  # reads the headers (431 when over the limit)
        finally:
            self.rfile = rfile
        self._head_timer.cancel()
        return ok

    def _head_too_slow(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):  # the plain socket's shutdown: the reading thread sees end of file
            socket.socket.shutdown(self.connection, socket.SHUT_RDWR)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.client_address[0], format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (bad request line 400, header too long 431, unknown method 501)
        as JSON with the security headers of every other response, and the connection closed."""
        if self.request_version == "HTTP/0.9":  # an unparsable request line: still answer with headers
            self.request_version = "HTTP/1.1"
        self.close_connection = True
        self._body_read = True  # nothing more is read from this connection
        reason = message or self.responses.get(code, ("error",))[0]
        with contextlib.suppress(OSError):
            self._send(code, dumps({"error": reason[:200]}), "application/json")

    def _extra_headers(self) -> dict[str, str]:
        return self.server.extra_headers

    @property
    def console(self) -> Console:
        return self.server.console

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in {**SECURITY_HEADERS, **self.server.extra_headers, **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        request_headers = getattr(self, "headers", None) or {}
        if not getattr(self, "_body_read", False) and (request_headers.get("Content-Length", "0") != "0"
                                                       or "Transfer-Encoding" in request_headers):
            self.close_connection = True  # an unread body (sized or chunked) would be taken for the next request
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, dumps(obj), "application/json", headers)

    def _redirect(self, location: str) -> None:
        self._send(303, b"", "text/plain", {"Location": location})

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._json({"error": "method not allowed"}, 405)

    do_DELETE = do_PATCH = do_OPTIONS = do_PUT

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        path = url.path
        self._body_read = False
        try:
            route = self._route(method, path)
            if route is None:
                raise HttpError(404, "not found")
            route()
        except HttpError as exc:
            self._json({"error": exc.message}, exc.status, exc.headers)
        except ConsoleError as exc:
            self._json({"error": str(exc)}, exc.status)
        except (BrokenPipeError, ConnectionResetError, TimeoutError, ssl.SSLError):
            self.close_connection = True
        except Exception:
            held_back = self.server.error_reports.admit()
            if held_back is None:  # anyone can send requests: their tracebacks must not flood the log
                log.debug("console request %s %s failed", method, path, exc_info=True)
            else:
                log.exception("console request %s %s failed (%d more tracebacks held back before this one)",
                              method, path, held_back)
            self.close_connection = True
            with contextlib.suppress(Exception):
                self._json({"error": "internal error"}, 500)

    # ------------------------------------------------------------------ authentication

    def _session(self) -> Session | None:
        header = self.headers.get("Cookie")
        if not header:
            return None
        try:
            cookie = SimpleCookie(header)
        except CookieError:
            return None
        morsel = cookie.get(COOKIE)
        session = self.console.sessions.get(morsel.value if morsel else None)
        if session is None:
            return None
        user = self.console.users.get(session.user)
        if user is None or self.console.users.fingerprint(user) != session.fingerprint:
            self.console.sessions.end(session.token)  # password changed or user removed: the session ends
            return None
        return session

    def _require(self, role: str = "viewer", *, page: bool = False) -> Session:
        session = self._session()
        if session is None:
            if page:
                raise _Redirect("/login")
            raise HttpError(401, "login required")
        if role == "admin" and session.role != "admin":
            raise HttpError(403, "admin role required")
        return session

    def _change(self, role: str = "admin") -> Session:
        """A state-changing request: session, role, same origin and the session's CSRF token."""
        self._check_origin()
        session = self._require(role)
        token = self.headers.get("X-CSRF-Token", "")
        if not hmac.compare_digest(token.encode(), session.csrf.encode()):
            raise HttpError(403, "missing or wrong CSRF token")
        return session

    def _check_origin(self) -> None:
        """A browser's ``Origin`` must name this console as configured or as reached (the socket's own address),
        never merely equal the request's ``Host``: a DNS-rebinding page sends a matching Host and Origin."""
        origin = self.headers.get("Origin")
        if origin is not None and origin.lower() not in self.server.origins_for(self.connection):
            raise HttpError(403, f"cross-origin request refused: Origin {origin[:100]!r} is not this console's "
                                 "address (set web.public_url to the address people use)")

    def _body(self, limit: int) -> bytes:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise HttpError(411, "Content-Length required") from None
        if length < 0 or length > limit:
            raise HttpError(413, f"request body over {limit} bytes")
        data = self.rfile.read(length)
        self._body_read = True
        if len(data) != length:
            raise HttpError(400, "request body cut short")
        return data

    def _json_body(self, limit: int = MAX_JSON_BYTES) -> dict[str, Any]:
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            raise HttpError(415, "send application/json")
        return parse_json_object(self._body(limit) or b"{}")

    def _client(self) -> str:
        return str(self.client_address[0])

    # ------------------------------------------------------------------ routing

    def _route(self, method: str, path: str) -> Callable[[], None] | None:
        if method == "GET":
            if path == "/":
                return lambda: self._redirect("/live")
            if path == "/login":
                return lambda: self._static("login.html")
            if path.startswith("/static/"):
                return lambda: self._static(path.removeprefix("/static/"))
            if path in PAGES:
                return lambda: self._page(path)
            if path == "/terminal":
                return lambda: self._terminal(lambda: self._static("terminal.html"))
            if path == "/terminal/state":
                return lambda: self._terminal(lambda: self._json(self.console.terminal_state()))
            if path == "/terminal/stream.mjpg":
                return lambda: self._terminal(lambda: self._mjpeg("live", None))
            simple: dict[str, tuple[str, Callable[[Session], None]]] = {
                "/api/session": ("viewer", lambda s: self._json({"user": s.user, "role": s.role, "csrf": s.csrf})),
                "/api/status": ("viewer", lambda s: self._json(self.console.live_state())),
                "/api/events": ("viewer", self._events),
                "/api/recent": ("viewer", lambda s: self._json(self.console.hub.recent())),
                "/api/live.mjpg": ("viewer", lambda s: self._mjpeg("live", s)),
                "/api/journal": ("viewer", lambda s: self._journal(csv=False)),
                "/api/journal.csv": ("viewer", lambda s: self._journal(csv=True)),
                "/api/people": ("admin", lambda s: self._json(self.console.people(self.query.get("q", "")))),
                "/api/capture.mjpg": ("admin", lambda s: self._mjpeg("capture", s)),
                "/api/capture/quality": ("admin", lambda s: self._json(self.console.capture_quality())),
                "/api/system": ("admin", lambda s: self._json(self.console.system())),
            }
            if path in simple:
                role, fn = simple[path]
                return lambda: fn(self._require(role))
            return None
        if method == "POST":
            if path == "/api/login":
                return self._login
            if path == "/api/logout":
                return self._logout
            actions: dict[str, Callable[[Session], Any]] = {
                "/api/door/unlock": lambda s: self.console.unlock(s.user),
                "/api/door/lock": lambda s: self.console.lock(s.user),
                "/api/door/lockdown": lambda s: self.console.set_lockdown(s.user, flag(self._json_body(), "on")),
                "/api/people": lambda s: self.console.save_person(s.user, self._json_body()),
                "/api/journal/not-them": lambda s: self.console.not_them(s.user, self._json_body()),
            }
            if path in actions:
                action = actions[path]
                return lambda: self._json(action(self._change()))
            if path == "/api/people-bulk":
                return lambda: self._json(self.console.bulk_zip(
                    self._change().user, self._body(MAX_ZIP_BYTES), self.headers.get("X-Filename", "upload.zip")[:200]))
            if path.startswith("/api/people/"):
                return self._person_action(path.removeprefix("/api/people/"))
        return None

    def _person_action(self, rest: str) -> Callable[[], None] | None:
        pid, _, verb = rest.partition("/")
        pid = unquote(pid)
        if not pid:
            return None
        c = self.console
        verbs: dict[str, Callable[[Session], Any]] = {
            "": lambda s: c.save_person(s.user, self._json_body(), pid),
            "remove": lambda s: c.remove_person(s.user, pid, flag(self._json_body(), "purge_events", False)),
            "capture": lambda s: c.capture(s.user, pid),
            "export": lambda s: c.subject_export(s.user, pid),  # subject access: docs/privacy.md
            "photo": lambda s: c.upload_photo(s.user, pid, self._body(MAX_PHOTO_BYTES),
                                              self.headers.get("X-Filename", "upload")[:200]),
        }
        if verb not in verbs:
            return None
        fn = verbs[verb]
        return lambda: self._json(fn(self._change()))

    # ------------------------------------------------------------------ handlers

    def _static(self, name: str) -> None:
        item = self.server.static.get(name)
        if item is None:
            raise HttpError(404, "not found")
        body, content_type = item
        self._send(200, body, content_type)

    def _page(self, path: str) -> None:
        try:
            self._require(PAGES[path], page=True)
        except _Redirect as r:
            self._redirect(r.location)
            return
        shell, content_type = self.server.static["app.html"]
        self._send(200, shell.replace(b"{{page}}", path[1:].encode()), content_type)

    def _terminal(self, then: Callable[[], None]) -> None:
        """The door screen: read-only, no login, and only for the device itself (see facegate.validate.netaddr)."""
        if not is_local_client(self._client()) or not host_header_is_local(self.headers.get("Host")):
            raise HttpError(403, "the door screen is only served to the device itself (loopback)")
        then()

    def _login(self) -> None:
        self._check_origin()
        address = self._client()
        key = limiter_key(address)  # an IPv6 /64 is one client (see facegate.validate.netaddr)
        limiter = self.console.limiter
        # Counted as a failure before anything is checked, so parallel guesses cannot all pass the limit; a
        # malformed body stays counted too (it is an attempt); only a right password or a busy checker un-count.
        stamp = limiter.reserve(key)
        if stamp is None:
            if limiter.note_throttled(key):
                self._report("console_login_throttled", address=address)
            wait = limiter.retry_after(key)
            raise HttpError(429, "too many failed logins; try again later", {"Retry-After": str(int(wait) + 1)})
        body = self._json_body(MAX_LOGIN_JSON_BYTES)
        name, password = body.get("user"), body.get("password")
        if not isinstance(name, str) or not isinstance(password, str) or len(password) > 1024 or len(name) > 256:
            raise HttpError(400, "user and password required")
        try:
            user = self.console.checker.authenticate(name, password)
        except CheckerBusy:
            limiter.release(key, stamp)
            raise HttpError(429, "too many logins at once; try again in a moment", {"Retry-After": "1"}) from None
        if user is None:
            raise HttpError(401, "wrong user name or password")
        # Only this attempt is un-counted, never earlier failures: a holder of any account (a viewer) could
        # otherwise interleave their own good logins and guess the admin's password without limit.
        limiter.release(key, stamp)
        session = self.console.sessions.create(user.name, user.role, self.console.users.fingerprint(user))
        self._report("console_login", user=user.name, role=user.role, address=address)
        cookie = f"{COOKIE}={session.token}; Path=/; HttpOnly; Secure; SameSite=Strict"
        self._json({"user": user.name, "role": user.role, "csrf": session.csrf}, headers={"Set-Cookie": cookie})

    def _report(self, type: str, **fields: Any) -> None:
        """A login or a throttled address, as an event of the door (the fleet console audits them instead)."""
        self.console.emit_event(type, **fields)

    def _logout(self) -> None:
        session = self._change("viewer")
        self.console.sessions.end(session.token)
        self._json({"logged_out": True},
                   headers={"Set-Cookie": f"{COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0"})

    def _journal(self, csv: bool) -> None:
        from facegate.journal import parse_time
        from facegate.journal.export import write_csv

        q = self.query
        try:
            since = parse_time(q["since"]) if q.get("since") else None
            until = parse_time(q["until"]) if q.get("until") else None
            limit = max(1, min(int(q.get("limit", "50")), 100_000 if csv else 500))
            before = int(q["before"]) if q.get("before") else None
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None
        types = [t for t in q.get("type", "").split(",") if t] or None
        person = q.get("person") or None
        journal = self.console.journal()
        rows = journal.query(since=since, until=until, types=types, person=person, limit=limit, before_id=before)
        if csv:
            out = io.StringIO()
            write_csv(rows, out)
            self._send(200, out.getvalue().encode(), "text/csv; charset=utf-8",
                       {"Content-Disposition": 'attachment; filename="facegate-journal.csv"'})
            return
        total = journal.count(since=since, until=until, types=types, person=person)
        self._json({"events": rows, "total": total,
                    "next_before": rows[-1]["journal_id"] if len(rows) == limit and rows else None})


class _HeadLimit:
    """The request's reader while its headers are parsed: more than ``limit`` bytes in all is a LineTooLong,
    which http.server answers with 431."""

    def __init__(self, raw: Any, limit: int) -> None:
        self._raw, self._left = raw, limit

    def readline(self, size: int = -1) -> bytes:
        cap = self._left + 1 if size < 0 else min(size, self._left + 1)
        line: bytes = self._raw.readline(cap)
        self._left -= len(line)
        if self._left < 0:
            raise http.client.LineTooLong(f"request headers over {MAX_HEAD_BYTES} bytes")
        return line


class _Redirect(Exception):
    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


class ConsoleServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 32

    def __init__(self, console: Console) -> None:
        config = console.config
        self.console = console
        self.static = load_static()
        self.scheme = "https" if config.tls_cert_file else "http"
        self.extra_headers: dict[str, str] = {}
        family_v6 = ":" in config.bind
        if family_v6:
            self.address_family = socket.AF_INET6
        super().__init__((config.bind, config.port), Handler)
        if config.tls_cert_file is not None and config.tls_key_file is not None:
            try:  # the files' errors name the key and the file (facegate/web/tls.py)
                context = server_context(config.tls_cert_file, config.tls_key_file)
            except TlsFileError:
                self.server_close()
                raise
            # The handshake happens on the request thread at the first read, not in accept().
            self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
            self.extra_headers["Strict-Transport-Security"] = "max-age=31536000"
        self._thread: threading.Thread | None = None
        self.slots = ConnectionSlots()
        self.error_reports = ReportLimiter(burst=ERROR_TRACEBACKS_PER_MINUTE, per_minute=ERROR_TRACEBACKS_PER_MINUTE)
        self._public_origin = origin_of_url(config.public_url) if config.public_url else None
        self._names = machine_names()

    # ------------------------------------------------------------------ origins

    def origins_for(self, connection: socket.socket) -> set[str]:
        """The ``Origin`` values a browser on this console's own pages sends over ``connection``: the configured
        ``web.public_url``, or this server as reached (the address the connection came in on, this machine's
        names) at the bound port. Never anything from the request itself."""
        origins = {self._public_origin} if self._public_origin else set()
        try:
            local = str(connection.getsockname()[0]).partition("%")[0]
        except OSError:
            return origins
        hosts = set(self._names)
        try:
            ip = ipaddress.ip_address(local)
        except ValueError:
            ip = None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip is not None:
            hosts.add(f"[{ip.compressed}]" if ip.version == 6 else str(ip))
            if ip.is_loopback:
                hosts |= {"localhost", "127.0.0.1", "[::1]"}
        return origins | {origin(self.scheme, host, self.port) for host in hosts}

    @property
    def connections(self) -> int:
        return self.slots.connections

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.take(request, client_address):
            self.shutdown_request(request)  # closed at once: a flood costs no thread
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        lower_this_thread()
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that failed outside any request (a reset during setup): no traceback on stderr."""
        log.debug("console connection from %s failed", client_address[0], exc_info=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        """Serve on a thread of its own; a second call does nothing."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._serve, name="facegate-web", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        lower_this_thread()
        self.serve_forever(poll_interval=0.5)

    def stop(self) -> None:
        self.console.stopping.set()
        self.shutdown()
        self.server_close()
