"""The console under attack from before login: memory, connections, parsing, the login limit, streams after
logout, viewers against admins, Origin and error pages. Over real HTTP(S) against the real service on loopback
(several 127.x source addresses stand for several clients)."""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import ssl
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from facegate.validate.netaddr import limiter_key
from facegate.web.accounts import UserStore
from facegate.web.sessions import FAILURES_FILE, MAX_SESSIONS_PER_USER, SessionStore
from support.webconsole import (
    ADMIN,
    ADMIN_PASSWORD,
    VIEWER,
    VIEWER_PASSWORD,
    Client,
    Door,
    running_door,
    self_signed,
    stream_ends,
)

from tools.wait import wait_for


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def _wrong_logins(door: Door, sources: list[str], per_source: int) -> list[int]:
    """Wrong passwords, all at once: ``per_source`` parallel logins from each address."""
    def one(source: str) -> int:
        try:
            return Client(door, source=source).login(ADMIN, "not the password")
        except (ConnectionError, OSError, http.client.HTTPException):
            return 0
    jobs = [s for s in sources for _ in range(per_source)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(one, jobs))


def test_a_burst_of_wrong_logins_takes_bounded_memory_and_gives_it_back(door: Door) -> None:
    """Each scrypt check takes 16 MiB; run on the request threads, 32 parallel wrong passwords were up to 32
    checks at once (hundreds of MB), kept in the threads' malloc arenas afterwards. The service runs in this
    process, so its peak (VmHWM, reset first) and resident memory are this process's."""
    baseline = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    statuses = _wrong_logins(door, [f"127.0.1.{i}" for i in range(1, 5)], 8)
    peak = _status_kb("VmHWM")
    assert statuses.count(401) >= 4 and set(statuses) <= {401, 429}, statuses
    assert (peak - baseline) / 1024 < 80, f"peak RSS {(peak - baseline) / 1024:.0f} MB over the idle service"
    # The checks' memory goes back to the OS once the burst is over (not kept in an arena's free lists).
    assert wait_for(lambda: (_status_kb("VmRSS") - baseline) / 1024 < 40, timeout=10), \
        f"RSS still {(_status_kb('VmRSS') - baseline) / 1024:.0f} MB over the idle service"


def test_parallel_wrong_passwords_cannot_exceed_the_login_limit(door: Door) -> None:
    """The limit was checked before a password was verified and the failure counted after: 16 parallel wrong
    passwords from one address all passed the check and were all verified. At most 9 may be."""
    source = "127.0.2.1"
    statuses = _wrong_logins(door, [source], 16)
    for _ in range(12):  # then one at a time, until refused for the limit (not because the checker was busy)
        status, _, body = Client(door, source=source).request("POST", "/api/login",
                                                              {"user": ADMIN, "password": "still wrong"})
        statuses.append(status)
        if status == 429 and "failed logins" in json.loads(body)["error"]:
            break
    assert statuses.count(401) <= 9, statuses
    assert Client(door, source=source).login(ADMIN, ADMIN_PASSWORD) == 429


def test_deeply_nested_json_is_a_counted_400_not_a_traceback(door: Door, caplog: pytest.LogCaptureFixture) -> None:
    """4,000 '[' (under the login body limit) made json.loads raise RecursionError: HTTP 500, an ERROR traceback
    per request, and not a failed login. It is a 400 now, counted against the address; over the size limit, 413."""
    source = "127.0.3.1"
    c = Client(door, source=source)
    headers = {"Content-Type": "application/json"}
    with caplog.at_level(logging.WARNING, logger="facegate.web"):
        status, _, body = c.request("POST", "/api/login", raw=b"[" * 4000, headers=headers)
        assert status == 400 and "nested" in json.loads(body)["error"], body
        assert c.request("POST", "/api/login", raw=b"[" * 60_000, headers=headers)[0] == 413
        for _ in range(7):
            assert c.request("POST", "/api/login", raw=b'{"user": ' + b"[" * 3000, headers=headers)[0] == 400
        assert c.login(ADMIN, ADMIN_PASSWORD) == 429  # nine malformed attempts used up the address's budget
        # An admin's JSON endpoints take the same parser (64 KiB bodies).
        admin = Client(door)
        assert admin.login(ADMIN, ADMIN_PASSWORD) == 200
        status, _, _ = admin.request("POST", "/api/door/lockdown", raw=b"[" * 60_000,
                                     headers={**headers, "X-CSRF-Token": admin.csrf or ""})
        assert status == 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def _flood(door: Door, sources: list[str], per_source: int) -> list[socket.socket]:
    """Connections that send half a request head and then nothing (each held until the head deadline)."""
    held = []
    for source in sources:
        for _ in range(per_source):
            s = socket.socket()
            s.bind((source, 0))
            try:
                s.connect(("127.0.0.1", door.port))
                s.sendall(b"GET /login HTTP/1.1\r\nX-Slow: ")
            except OSError:
                s.close()
                continue
            held.append(s)
    return held


def test_four_addresses_cannot_take_the_door_screen_or_the_console_offline(door: Door) -> None:
    """16 connections from each of 4 addresses took all 64 slots: the door screen's polls from 127.0.0.1
    failed. Now each address gets fewer, a few cannot fill the pool, and the device has slots of its own."""
    held = _flood(door, [f"127.0.4.{i}" for i in range(1, 5)], 16)
    try:
        time.sleep(0.3)
        polls = [Client(door).request("GET", "/terminal/state")[0] for _ in range(10)]
        assert polls == [200] * 10, polls
        assert Client(door, source="127.0.4.9").request("GET", "/login")[0] == 200
    finally:
        for s in held:
            s.close()


def test_an_idle_connection_is_closed_after_a_few_seconds(door: Door) -> None:
    """A connection that never sends a request held its slot (and thread) for 10 s."""
    s = socket.socket()
    s.bind(("127.0.4.20", 0))
    s.connect(("127.0.0.1", door.port))
    s.settimeout(1.0)
    try:
        assert stream_ends(s, 7.0), "an idle connection was still open after 7 s"
    finally:
        s.close()


def _open(door: Door, path: str, cookie: str | None, source: str | None = None) -> tuple[int, socket.socket]:
    s = socket.socket()
    s.settimeout(10)
    if source:
        s.bind((source, 0))
    s.connect(("127.0.0.1", door.port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n\r\n".encode())
    head = s.recv(64)
    return int(head.split()[1]), s


def test_event_and_camera_streams_end_soon_after_logout_or_a_password_change(door: Door) -> None:
    """The event stream (SSE) rechecked its session every 15 s: events went on 14 s after logout."""
    c = Client(door)
    assert c.login(ADMIN, ADMIN_PASSWORD) == 200
    streams = [_open(door, path, c.cookie) for path in ["/api/events", "/api/live.mjpg"]]
    try:
        assert [status for status, _ in streams] == [200, 200]
        assert c.post("/api/logout")[0] == 200
        for (_, s), path in zip(streams, ["/api/events", "/api/live.mjpg"], strict=True):
            assert stream_ends(s, 6.0), f"{path} went on after logout"
    finally:
        for _, s in streams:
            s.close()
    users = UserStore(door.state_dir)
    users.add("sse-user", "viewer", "sse password 1")
    c = Client(door)
    assert c.login("sse-user", "sse password 1") == 200
    status, s = _open(door, "/api/events", c.cookie)
    try:
        assert status == 200
        users.passwd("sse-user", "sse password 2")
        assert stream_ends(s, 6.0), "the event stream went on after the password change"
    finally:
        s.close()


def test_a_viewers_logins_never_end_an_admins_session() -> None:
    """Sessions were capped in all (200) and the oldest evicted: a viewer logging in 205 times logged the
    admin out. The cap is per account now."""
    store = SessionStore(idle_seconds=3600)
    admin = store.create("root", "admin", "fp")
    viewer = [store.create("guard", "viewer", "fp") for _ in range(250)]
    assert store.get(admin.token) is admin
    assert sum(store.get(v.token) is not None for v in viewer) == MAX_SESSIONS_PER_USER
    assert store.get(viewer[-1].token) is not None and store.get(viewer[0].token) is None


def test_a_viewer_cannot_hold_the_admins_streams(door: Door) -> None:
    """One viewer held 16 event streams and 4 camera streams: the admin got 503 on both. Streams are capped per
    account, and an admin who finds a kind full ends a viewer's stream to take its place."""
    users = UserStore(door.state_dir)
    users.add("second-viewer", "viewer", "second viewer 1")
    viewer, other = Client(door), Client(door)
    assert viewer.login(VIEWER, VIEWER_PASSWORD) == 200 and other.login("second-viewer", "second viewer 1") == 200
    opened: list[socket.socket] = []
    try:
        statuses = {"/api/events": [], "/api/live.mjpg": []}  # type: dict[str, list[int]]
        for i in range(16):
            status, s = _open(door, "/api/events", viewer.cookie, f"127.0.5.{1 + i % 2}")
            statuses["/api/events"].append(status)
            opened.append(s)
        for i in range(4):
            status, s = _open(door, "/api/live.mjpg", viewer.cookie, f"127.0.5.{3 + i % 2}")
            statuses["/api/live.mjpg"].append(status)
            opened.append(s)
        assert statuses["/api/events"].count(200) < 16 and statuses["/api/live.mjpg"].count(200) < 4, statuses
        # A second viewer fills the camera streams (max_stream_clients = 4) ...
        for _ in range(4):
            status, s = _open(door, "/api/live.mjpg", other.cookie, "127.0.5.5")
            opened.append(s)
        assert door.service.console is not None
        assert door.service.console.stream_slots.count("camera") == door.service.config.web.max_stream_clients
        # ... and the admin still gets both kinds of stream.
        admin = Client(door)
        assert admin.login(ADMIN, ADMIN_PASSWORD) == 200
        for path in ["/api/events", "/api/live.mjpg"]:
            status, s = _open(door, path, admin.cookie, "127.0.5.6")
            opened.append(s)
            assert status == 200, path
        assert admin.get_json("/api/status")[0] == 200
    finally:
        for s in opened:
            s.close()


def test_origin_is_checked_against_the_console_not_the_host_header(door: Door) -> None:
    """The Origin was compared with the request's own Host, so a page at evil.example (DNS rebound to the door)
    sending Host and Origin evil.example passed."""
    c = Client(door, source="127.0.6.1")
    evil = {"Host": f"evil.example:{door.port}", "Origin": f"http://evil.example:{door.port}"}
    status, _, body = c.request("POST", "/api/login", {"user": ADMIN, "password": ADMIN_PASSWORD}, evil)
    assert status == 403 and "Origin" in json.loads(body)["error"]
    for origin in [f"http://127.0.0.1:{door.port}", f"http://localhost:{door.port}"]:
        status, _, _ = c.request("POST", "/api/login", {"user": ADMIN, "password": ADMIN_PASSWORD},
                                 {"Origin": origin})
        assert status == 200, origin


def test_the_standard_librarys_error_pages_carry_the_security_headers(door: Door) -> None:
    for raw, code in [(b"garbage\r\n\r\n", b"400"), (b"BREW /login HTTP/1.1\r\nHost: x\r\n\r\n", b"501"),
                      (b"GET /login HTTP/1.1\r\n" + b"X-Long: " + b"a" * 70_000 + b"\r\n\r\n", b"431")]:
        s = socket.create_connection(("127.0.0.1", door.port), timeout=8)
        try:
            s.sendall(raw)
            answer = b""
            while b"\r\n\r\n" not in answer:
                data = s.recv(4096)
                if not data:
                    break
                answer += data
        finally:
            s.close()
        head = answer.split(b"\r\n\r\n")[0].decode().lower()
        assert head.startswith(f"http/1.1 {code.decode()}"), answer[:200]
        assert "content-security-policy: default-src 'none'" in head and "x-frame-options: deny" in head, head


def test_link_local_ipv6_clients_are_counted_apart() -> None:
    """Every neighbour on the door's segment has an address in the same fe80::/64: one bucket for them all
    let one neighbour lock the others out of logging in."""
    assert limiter_key("fe80::1%eth0") != limiter_key("fe80::2%eth0")
    assert limiter_key("fe80::1%eth0") == limiter_key("fe80::1%eth0")
    assert limiter_key("2001:db8:1:2::1") == limiter_key("2001:db8:1:2::2")  # global: still one /64


def test_login_failures_survive_a_restart(tmp_path: Path) -> None:
    """The failure counts lived in memory: a restart gave every address a fresh set of guesses."""
    with running_door(tmp_path) as d:
        assert wait_for(lambda: d.service.console is not None, 20)
        c = Client(d, source="127.0.7.1")
        assert wait_for(lambda: _answers(c), 20)
        statuses = [c.login(ADMIN, f"guess {i}") for i in range(9)]
        assert statuses == [401] * 9
    path = tmp_path / "state" / FAILURES_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with running_door(tmp_path) as d:
        assert wait_for(lambda: d.service.console is not None, 20)
        c = Client(d, source="127.0.7.1")
        assert wait_for(lambda: _answers(c), 20)
        assert c.login(ADMIN, ADMIN_PASSWORD) == 429
        assert Client(d, source="127.0.7.2").login(ADMIN, ADMIN_PASSWORD) == 200


def _answers(c: Client) -> bool:
    try:
        return c.request("GET", "/login")[0] == 200
    except OSError:
        return False


def test_tls_handshake_deadline_origin_and_error_headers(tmp_path: Path) -> None:
    """Over TLS: a connection that never starts its handshake is closed within a few seconds (it held a slot
    10 s), a rebinding Origin is refused, and the standard library's 400 carries the security headers."""
    cert, key = self_signed(tmp_path)
    with running_door(tmp_path, tls_cert_file=str(cert), tls_key_file=str(key)) as d:
        context = ssl.create_default_context(cafile=str(cert))

        def https(method: str, path: str, body: bytes | None = None,
                  headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
            conn = http.client.HTTPSConnection("127.0.0.1", d.port, timeout=10, context=context)
            try:
                conn.request(method, path, body, headers or {})
                res = conn.getresponse()
                return res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()
            finally:
                conn.close()

        assert wait_for(lambda: _tls_answers(https), 20)
        idle = socket.create_connection(("127.0.0.1", d.port))
        idle.settimeout(1.0)
        try:
            assert stream_ends(idle, 7.0), "a connection without a TLS handshake was open after 7 s"
        finally:
            idle.close()
        login = json.dumps({"user": ADMIN, "password": ADMIN_PASSWORD}).encode()
        evil = {"Content-Type": "application/json", "Host": f"evil.example:{d.port}",
                "Origin": f"https://evil.example:{d.port}"}
        assert https("POST", "/api/login", login, evil)[0] == 403
        good = {"Content-Type": "application/json", "Origin": f"https://127.0.0.1:{d.port}"}
        assert https("POST", "/api/login", login, good)[0] == 200
        raw = context.wrap_socket(socket.create_connection(("127.0.0.1", d.port), timeout=8),
                                  server_hostname="127.0.0.1")
        try:
            raw.sendall(b"garbage\r\n\r\n")
            answer = raw.recv(4096).decode().lower()
        finally:
            raw.close()
        assert answer.startswith("http/1.1 400") and "content-security-policy" in answer, answer[:300]
        assert "strict-transport-security" in answer


def _tls_answers(https: object) -> bool:
    try:
        return https("GET", "/login")[0] == 200  # type: ignore[operator, no-any-return]
    except OSError:
        return False


def test_a_thread_per_connection_is_never_spent_on_a_refused_one(door: Door) -> None:
    """The slots are given back: after floods from many addresses the server holds no connection."""
    held = _flood(door, [f"127.0.8.{i}" for i in range(1, 9)], 12)
    for s in held:
        s.close()
    server = door.service.web
    assert server is not None
    assert wait_for(lambda: server.connections == 0, timeout=15), server.connections
    assert Client(door).request("GET", "/login")[0] == 200
