"""The web console's security rules, over real HTTP against the real service (no browser needed for these)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from facegate.config import ConfigError, parse_config
from facegate.validate.netaddr import host_header_is_local, is_local_client
from facegate.web.accounts import UserStore
from facegate.web.server import PAGES
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

API_GETS = ["/api/session", "/api/status", "/api/events", "/api/recent", "/api/live.mjpg", "/api/journal",
            "/api/journal.csv", "/api/people", "/api/capture.mjpg", "/api/capture/quality", "/api/system"]
API_POSTS = ["/api/logout", "/api/door/unlock", "/api/door/lock", "/api/door/lockdown", "/api/people",
             "/api/people/x", "/api/people/x/remove", "/api/people/x/capture", "/api/people/x/photo",
             "/api/people-bulk", "/api/people/x/export"]


def admin(door: Door) -> Client:
    c = Client(door)
    assert c.login(ADMIN, ADMIN_PASSWORD) == 200
    return c


def test_every_page_and_api_refuses_without_a_session(door: Door) -> None:
    anon = Client(door)
    for page in PAGES:
        status, headers, body = anon.request("GET", page)
        assert status == 303 and headers["location"] == "/login" and body == b"", page
    for path in API_GETS:
        status, _, body = anon.request("GET", path)
        assert status == 401, path
        assert json.loads(body) == {"error": "login required"}
    for path in API_POSTS:
        status, _, _ = anon.request("POST", path, {})
        assert status == 401, path
    # A made-up cookie is no session either.
    anon.cookie = "facegate_session=forged"
    assert anon.request("GET", "/api/status")[0] == 401


def test_security_headers_on_every_response(door: Door) -> None:
    for path in ["/login", "/static/app.js", "/api/status", "/nope"]:
        _, headers, _ = Client(door).request("GET", path)
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-frame-options"] == "DENY"


def test_session_cookie_flags(door: Door) -> None:
    _, headers, _ = Client(door).request("POST", "/api/login", {"user": ADMIN, "password": ADMIN_PASSWORD})
    flags = [f.strip() for f in headers["set-cookie"].split(";")]
    assert {"HttpOnly", "Secure", "SameSite=Strict", "Path=/"} <= set(flags)


def test_missing_or_forged_csrf_token_is_refused(door: Door) -> None:
    c = admin(door)
    before = len(door.events("door_unlocked"))
    assert c.post("/api/door/unlock", csrf=False)[0] == 403
    c.csrf = "forged" + (c.csrf or "")
    status, body = c.post("/api/door/unlock")
    assert status == 403 and "CSRF" in body["error"]
    # Another user's valid token is no good either.
    other = admin(door)
    c.csrf = other.csrf
    assert c.post("/api/door/unlock")[0] == 403
    time.sleep(0.3)
    assert len(door.events("door_unlocked")) == before
    # A cross-site Origin is refused even with the right token.
    status, _, _ = other.request("POST", "/api/door/lock", {}, {"X-CSRF-Token": other.csrf or "",
                                                                   "Origin": "https://evil.example"})
    assert status == 403


def test_tenth_wrong_password_in_a_minute_is_throttled(door: Door) -> None:
    c = Client(door, source="127.0.0.3")  # its own address: the other tests' logins are not counted with it
    for i in range(9):
        assert c.login(ADMIN, f"wrong {i}") == 401
    status, headers, _ = c.request("POST", "/api/login", {"user": ADMIN, "password": "wrong 9"})
    assert status == 429 and int(headers["retry-after"]) > 0
    assert c.login(ADMIN, ADMIN_PASSWORD) == 429  # the right password too, until the window passes
    assert door.events("console_login_throttled")[-1]["address"] == "127.0.0.3"
    assert Client(door, source="127.0.0.4").login(ADMIN, ADMIN_PASSWORD) == 200  # others are not locked out


def test_no_path_traversal_in_static_files(door: Door) -> None:
    anon = Client(door)
    assert anon.request("GET", "/static/app.css")[0] == 200
    for path in ["/static/../server.py", "/static/..%2fserver.py", "/static/%2e%2e/%2e%2e/config.py",
                 "/static/../../../../etc/passwd", "/static//etc/passwd", "/static/.%2e/console.py",
                 "/static/app.css/../../server.py", "/static/__init__.py"]:
        status, _, body = anon.request("GET", path)
        assert status == 404 and b"import" not in body and b"root:" not in body, path


def test_terminal_refuses_non_loopback_clients(door: Door) -> None:
    local = Client(door)
    assert local.request("GET", "/terminal")[0] == 200
    status, _, body = local.request("GET", "/terminal/state")
    assert status == 200 and json.loads(body)["message"]
    # 127.0.0.2 is a loopback *address* but not the device's own 127.0.0.1: treated as a remote client.
    remote = Client(door, source="127.0.0.2")
    for path in ["/terminal", "/terminal/state", "/terminal/stream.mjpg"]:
        assert remote.request("GET", path)[0] == 403, path
    # A rebinding page that reaches 127.0.0.1 under another host name is refused too.
    assert local.request("GET", "/terminal", headers={"Host": "evil.example"})[0] == 403
    assert is_local_client("127.0.0.1") and is_local_client("::1")
    assert not is_local_client("127.0.0.2") and not is_local_client("192.168.1.20")
    assert host_header_is_local("localhost:8443") and host_header_is_local("[::1]:80")
    assert not host_header_is_local("door.example:8443")


def test_viewer_cannot_change_anything(door: Door) -> None:
    viewer = Client(door)
    assert viewer.login(VIEWER, VIEWER_PASSWORD) == 200
    assert viewer.get_json("/api/status")[0] == 200
    assert viewer.request("GET", "/live")[0] == 200
    for page in ["/people", "/door", "/system"]:
        assert viewer.request("GET", page)[0] == 403
    before = len(door.relay.states)
    for path in API_POSTS:
        if path != "/api/logout":
            assert viewer.post(path, {"on": True, "id": "v1"})[0] == 403, path
    assert len(door.relay.states) == before
    assert not door.service.console.lockdown()  # type: ignore[union-attr]


def test_removed_user_or_changed_password_ends_sessions(door: Door) -> None:
    users = UserStore(door.state_dir)
    users.add("temp", "admin", "temporary pass")
    c = Client(door)
    assert c.login("temp", "temporary pass") == 200
    assert c.get_json("/api/status")[0] == 200
    users.passwd("temp", "another pass!")
    assert c.get_json("/api/status")[0] == 401
    assert c.login("temp", "another pass!") == 200
    users.remove("temp")
    assert c.get_json("/api/status")[0] == 401


def test_person_api_validates_and_journals_changes(door: Door) -> None:
    c = admin(door)
    status, body = c.post("/api/people", {"id": "bad id/..", "name": "x"})
    assert status == 400 and "id" in body["error"]
    status, body = c.post("/api/people", {"id": "p1", "name": "Pat", "schedule": {"mon": [["8:00", "18:00"]]}})
    assert status == 400 and "schedule.mon[0]" in body["error"]
    assert c.post("/api/people", {"id": "p1", "name": "Pat", "groups": ["staff"]})[0] == 200
    assert c.post("/api/people", {"id": "p1"})[0] == 409
    status, people = c.get_json("/api/people?q=pat")
    assert [p["id"] for p in people] == ["p1"] and people[0]["groups"] == ["staff"]
    status, body = c.post("/api/people/p1/capture")  # the scene loops: the astronaut or nobody in view
    assert status == 200 and ("accepted" in body)
    status, body = c.post("/api/people/p1/remove", {"purge_events": False})
    assert status == 200
    actions = [(e["action"], e["user"]) for e in door.events("console_action")]
    assert ("person_added", ADMIN) in actions and ("person_removed", ADMIN) in actions


def test_console_records_consent_exports_a_subject_and_shows_the_privacy_protection(door: Door) -> None:
    c = admin(door)
    consent = {"at": "2026-03-01T09:00:00Z", "how": "signed form", "notice_version": "v3"}
    assert c.post("/api/people", {"id": "subj1", "name": "Sam Subject", "consent": consent})[0] == 200
    status, body = c.post("/api/people", {"id": "subj2", "consent": {"how": "form"}})
    assert status == 400 and "consent" in body["error"]
    assert c.get_json("/api/people?q=subj2")[1] == []  # the refused person was not left behind
    status, data = c.post("/api/people/subj1/export")
    assert status == 200 and data["record"]["name"] == "Sam Subject" and data["record"]["consent"] == consent
    assert data["templates"]["count"] == 0 and isinstance(data["journal"]["events"], list)
    assert c.post("/api/people/nobody-here/export")[0] == 404
    assert ("subject_exported", ADMIN) in [(e["action"], e["user"]) for e in door.events("console_action")]
    viewer = Client(door)
    assert viewer.login(VIEWER, VIEWER_PASSWORD) == 200 and viewer.post("/api/people/subj1/export")[0] == 403
    status, system = c.get_json("/api/system")
    privacy = next(ch for ch in system["checks"] if ch["check"] == "privacy")
    assert not privacy["ok"] and "same card" in privacy["detail"] and privacy["fix"]  # the test door's key file


def test_upload_refuses_a_non_image_with_its_reason(door: Door) -> None:
    c = admin(door)
    assert c.post("/api/people", {"id": "up1", "name": "Upload"})[0] == 200
    status, _, body = c.request("POST", "/api/people/up1/photo", raw=b"not an image",
                                headers={"X-CSRF-Token": c.csrf or "", "Content-Type": "image/jpeg",
                                         "X-Filename": "x.jpg"})
    assert status == 400 and "not a JPEG, PNG" in json.loads(body)["error"]
    c.post("/api/people/up1/remove", {})


def test_a_stalled_stream_client_is_dropped_and_the_loop_goes_on(door: Door) -> None:
    c = admin(door)
    console = door.service.console
    assert console is not None
    s = socket.create_connection(("127.0.0.1", door.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(f"GET /api/live.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {c.cookie}\r\n\r\n".encode())
    frames = door.service.stats.frames
    # Never read: the server's writes block, time out (5 s) and the client is dropped.
    assert wait_for(lambda: console.dropped_streams >= 1, timeout=30)
    assert door.service.stats.frames > frames + 30
    s.close()


def test_config_refuses_plain_http_off_loopback() -> None:
    with pytest.raises(ConfigError, match=r"web\.bind"):
        parse_config({"web": {"enabled": True, "bind": "0.0.0.0"}})
    assert parse_config({"web": {"enabled": True, "bind": "0.0.0.0", "allow_insecure_http": True}}).web.bind
    with pytest.raises(ConfigError, match="together"):
        parse_config({"web": {"tls_cert_file": "/x.pem"}})


def test_user_cli(tmp_path: Path) -> None:
    import io
    import os
    import sys

    from facegate.cli import main

    config = tmp_path / "f.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n')
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdin
    try:
        sys.stdin = io.StringIO("s3cret-password\n")
        assert main(["user", "add", "ann", "--role", "viewer", "--password-stdin", "--config", str(config)],
                    out, err) == 0
        sys.stdin = io.StringIO("short\n")
        assert main(["user", "passwd", "ann", "--password-stdin", "--config", str(config)], out, err) == 2
        assert "too short" in err.getvalue()
    finally:
        sys.stdin = old
    assert main(["user", "list", "--config", str(config)], out, err) == 0
    assert '{"user": "ann", "role": "viewer"}' in out.getvalue()
    path = tmp_path / "state" / "web_users.json"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert "s3cret" not in path.read_text() and "scrypt$" in path.read_text()
    assert UserStore(tmp_path / "state").authenticate("ann", "s3cret-password") is not None
    assert main(["user", "remove", "ann", "--config", str(config)], out, err) == 0
    assert main(["user", "remove", "ann", "--config", str(config)], out, err) == 2


def test_tls_console_off_loopback_config_and_https_login(tmp_path: Path) -> None:
    import http.client
    import ssl

    cert, key = self_signed(tmp_path)
    # With TLS a non-loopback bind is accepted (here only checked; the test itself listens on loopback).
    assert parse_config({"web": {"enabled": True, "bind": "0.0.0.0", "tls_cert_file": str(cert),
                                 "tls_key_file": str(key)}}).web.bind == "0.0.0.0"
    with running_door(tmp_path, tls_cert_file=str(cert), tls_key_file=str(key)) as door:
        context = ssl.create_default_context(cafile=str(cert))
        conn = http.client.HTTPSConnection("127.0.0.1", door.port, timeout=10, context=context)
        conn.request("POST", "/api/login", json.dumps({"user": ADMIN, "password": ADMIN_PASSWORD}),
                     {"Content-Type": "application/json", "Origin": f"https://127.0.0.1:{door.port}"})
        res = conn.getresponse()
        res.read()
        assert res.status == 200
        assert "Secure" in (res.getheader("Set-Cookie") or "")
        assert res.getheader("Strict-Transport-Security")
        conn.close()
        # A client that never finishes its handshake holds up nobody (the handshake runs on its own thread).
        stalled = socket.create_connection(("127.0.0.1", door.port))
        conn = http.client.HTTPSConnection("127.0.0.1", door.port, timeout=10, context=context)
        conn.request("GET", "/login")
        assert conn.getresponse().status == 200
        stalled.close()
        conn.close()
        # Plain HTTP on the TLS port gets nothing.
        plain = Client(door)
        with pytest.raises((ConnectionError, OSError, http.client.HTTPException)):
            plain.request("GET", "/login")


def test_upload_and_bulk_zip_enrol_through_the_console_pipeline(door: Door, astronaut) -> None:  # type: ignore[no-untyped-def]
    import io
    import zipfile

    import cv2
    from matplotlib import cbook

    c = admin(door)
    assert c.post("/api/people", {"id": "up2", "name": "Eileen upload"})[0] == 200
    ok, png = cv2.imencode(".png", cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    assert ok
    headers = {"X-CSRF-Token": c.csrf or "", "Content-Type": "image/png", "X-Filename": "astronaut.png"}
    status, _, body = c.request("POST", "/api/people/up2/photo", raw=png.tobytes(), headers=headers)
    result = json.loads(body)
    assert status == 200 and result["accepted"] and result["templates"] == 1, result
    assert door.service.console is not None and door.service.console._pipeline is not door.service.pipeline

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.write(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), "staff/hopper/hopper.jpg")
        z.writestr("staff/nobody/readme.txt", "not a photo")
        z.writestr("staff/people.csv", "id,name,groups\nhopper,Grace Hopper,staff;navy\n")
    headers = {"X-CSRF-Token": c.csrf or "", "Content-Type": "application/zip", "X-Filename": "staff.zip"}
    status, _, body = c.request("POST", "/api/people-bulk", raw=archive.getvalue(), headers=headers)
    result = json.loads(body)
    assert status == 200 and result["persons_enrolled"] == 1, result
    assert [r["reason"] for r in result["refused"]] and result["refused"][0]["person_id"] == "nobody"
    people = {p["id"]: p for p in c.get_json("/api/people")[1]}
    assert people["hopper"]["name"] == "Grace Hopper" and people["hopper"]["templates"] == 1
    actions = [e["action"] for e in door.events("console_action") if e["user"] == ADMIN]
    assert "photo_enrolled" in actions and "bulk_enrolled" in actions
    for pid in ("up2", "hopper"):
        assert c.post(f"/api/people/{pid}/remove", {"purge_events": True})[0] == 200


def test_journal_api_filters_pages_and_exports_csv(door: Door) -> None:
    c = admin(door)
    for _ in range(3):
        admin(door)
    assert wait_for(lambda: (c.get_json("/api/journal?type=console_login")[1] or {}).get("total", 0) >= 4, 10)
    status, page1 = c.get_json("/api/journal?type=console_login&limit=2")
    assert status == 200 and len(page1["events"]) == 2 and page1["next_before"]
    assert all(e["type"] == "console_login" for e in page1["events"])
    _, page2 = c.get_json(f"/api/journal?type=console_login&limit=2&before={page1['next_before']}")
    assert {e["journal_id"] for e in page2["events"]}.isdisjoint(e["journal_id"] for e in page1["events"])
    status, headers, body = c.request("GET", "/api/journal.csv?type=console_login&since=1h")
    assert status == 200 and headers["content-type"].startswith("text/csv")
    lines = body.decode().splitlines()
    assert lines[0].startswith("ts,type,person_id") and len(lines) >= 5 and "console_login" in lines[1]
    assert c.get_json("/api/journal?since=yesterday-ish")[0] == 400


def test_a_connection_flood_is_capped_and_the_console_recovers(door: Door) -> None:
    from facegate.web.connections import MAX_CONNECTIONS

    held = [socket.create_connection(("127.0.0.1", door.port)) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.3)
        extra = socket.create_connection(("127.0.0.1", door.port))
        extra.settimeout(5)
        extra.sendall(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        try:
            answer = extra.recv(100)
        except ConnectionResetError:
            answer = b""
        assert answer == b""  # closed at once: no thread was spent on it
        extra.close()
        frames = door.service.stats.frames
        assert wait_for(lambda: door.service.stats.frames > frames + 10, timeout=10)  # the door goes on
    finally:
        for s in held:
            s.close()
    # Until the server has seen the held connections close, a new one is still closed unanswered (RemoteDisconnected).
    assert wait_for(lambda: Client(door).request("GET", "/login")[0] == 200, timeout=10, ignore=(OSError,))


def test_home_assistant_device_page_links_to_the_running_console(tmp_path: Path) -> None:
    """With the console on, the discovery payload's device carries its URL (issue 10, point 9)."""
    from support.broker import Collector

    with running_door(tmp_path) as d, Collector(d.broker, "homeassistant/#") as seen:
        found = seen.wait_for(lambda m: any(x.topic.endswith("/config") for x in m), timeout=15)
        device = next(x for x in found if x.topic.endswith("/config")).json()["dev"]
        assert device["configuration_url"] == f"http://127.0.0.1:{d.port}/" == d.service.configuration_url


# ---------------------------------------------------------------- review r2: regressions for defects found


def test_upload_refuses_an_image_too_large_to_decode(door: Door) -> None:
    """A photo upload goes through the same size gate as `facegate enroll`: a small file that decodes to 48 MP
    (a decompression bomb) is refused before OpenCV allocates it, and nothing is enrolled."""
    import cv2
    import numpy as np

    ok, png = cv2.imencode(".png", np.zeros((6000, 8000), dtype=np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok and len(png) < 1024 * 1024
    c = admin(door)
    assert c.post("/api/people", {"id": "bomb1", "name": "Bomb"})[0] == 200
    enrolled = len(door.events("console_action"))
    status, _, body = c.request("POST", "/api/people/bomb1/photo", raw=png.tobytes(),
                                headers={"X-CSRF-Token": c.csrf or "", "Content-Type": "image/png",
                                         "X-Filename": "bomb.png"})
    assert status == 413 and "megapixels" in json.loads(body)["error"], body
    assert not [e for e in door.events("console_action")[enrolled:] if e["action"] == "photo_enrolled"]
    c.post("/api/people/bomb1/remove", {})


def _open_stream(door: Door, cookie: str | None) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", door.port), timeout=10)
    s.sendall(f"GET /api/live.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n\r\n".encode())
    assert s.recv(64).startswith(b"HTTP/1.1 200")
    return s


def test_live_stream_ends_when_the_session_ends(door: Door) -> None:
    """Logging out, a changed password or a removed account stops an open camera stream too (not only SSE)."""
    users = UserStore(door.state_dir)
    users.add("watcher", "viewer", "watcher pass 1")
    c = Client(door)
    assert c.login("watcher", "watcher pass 1") == 200
    s = _open_stream(door, c.cookie)
    try:
        users.remove("watcher")
        assert stream_ends(s, 10), "the removed user's camera stream went on"
    finally:
        s.close()
    c = admin(door)
    s = _open_stream(door, c.cookie)
    try:
        assert c.post("/api/logout")[0] == 200
        assert stream_ends(s, 10), "the camera stream outlived its logged-out session"
    finally:
        s.close()


def test_a_successful_login_does_not_reset_the_failure_count(door: Door) -> None:
    """Someone who holds any account (say a viewer's) cannot interleave their own good logins to keep guessing
    the admin's password at full speed: the 10th failure from an address in a minute is throttled regardless."""
    c = Client(door, source="127.0.0.5")
    statuses = []
    for _ in range(3):
        statuses += [c.login(ADMIN, f"guess {i}") for i in range(4)]
        statuses.append(c.login(VIEWER, VIEWER_PASSWORD))
    assert 429 in statuses, statuses


def test_login_limit_counts_an_ipv6_64_as_one_address() -> None:
    """One IPv6 subscriber holds a whole /64: counting each of its addresses apart would not limit them."""
    from facegate.validate.netaddr import limiter_key

    assert limiter_key("2001:db8:1:2::1") == limiter_key("2001:db8:1:2:ffff:1:2:3")
    assert limiter_key("2001:db8:1:2::1") != limiter_key("2001:db8:1:3::1")
    assert limiter_key("::ffff:192.0.2.1") == limiter_key("192.0.2.1") != limiter_key("192.0.2.2")
    assert limiter_key("127.0.0.1") == "127.0.0.1"


def test_one_address_cannot_hold_every_connection(door: Door) -> None:
    """Slowloris: idle connections from one client (each may wait 30 s per read) must not use up the whole
    connection budget; another client (the door screen, an admin) is still served."""
    from facegate.web.connections import MAX_CONNECTIONS

    held = []
    try:
        for _ in range(MAX_CONNECTIONS):
            s = socket.socket()
            s.bind(("127.0.0.6", 0))
            s.connect(("127.0.0.1", door.port))
            held.append(s)
        time.sleep(0.5)
        assert Client(door, source="127.0.0.7").request("GET", "/login")[0] == 200
        assert Client(door).request("GET", "/terminal")[0] == 200
    finally:
        for s in held:
            s.close()


def test_event_streams_do_not_use_up_the_camera_streams(door: Door) -> None:
    """Every Live tab holds an SSE stream beside its camera stream; SSE streams (any viewer can open them) were
    counted against max_stream_clients, so a few open tabs left the door screen without its camera."""
    c = Client(door)
    assert c.login(VIEWER, VIEWER_PASSWORD) == 200
    held = []
    try:
        for _ in range(door.service.config.web.max_stream_clients):
            s = socket.create_connection(("127.0.0.1", door.port), timeout=10)
            s.sendall(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {c.cookie}\r\n\r\n".encode())
            assert s.recv(64).startswith(b"HTTP/1.1 200")
            held.append(s)
        s = socket.create_connection(("127.0.0.1", door.port), timeout=10)
        held.append(s)
        s.sendall(b"GET /terminal/stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert s.recv(64).startswith(b"HTTP/1.1 200")
    finally:
        for s in held:
            s.close()


def test_a_request_head_sent_byte_by_byte_is_cut_off(door: Door) -> None:
    """Slowloris: each read may take 30 s, so a client trickling one header byte a second held its connection
    (and thread) for ever. The request line and headers must now arrive within REQUEST_HEAD_SECONDS in all."""
    from facegate.web.server import REQUEST_HEAD_SECONDS

    s = socket.socket()
    s.bind(("127.0.0.8", 0))
    s.connect(("127.0.0.1", door.port))
    s.settimeout(0.5)
    started = time.monotonic()
    closed_after = None
    try:
        s.sendall(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        while time.monotonic() - started < REQUEST_HEAD_SECONDS + 8:
            try:
                s.sendall(b"a")
                if s.recv(4096) == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - started
                break
    finally:
        s.close()
    assert closed_after is not None and closed_after < REQUEST_HEAD_SECONDS + 5, closed_after
    assert Client(door).request("GET", "/login")[0] == 200


def test_a_chunked_body_is_never_read_as_the_next_request(door: Door) -> None:
    """A POST with Transfer-Encoding: chunked is refused (411) and its unread body must not then be parsed as a
    second request on the same connection (request smuggling behind a proxy that shares connections)."""
    smuggled = b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    assert _answers(door, b"POST /api/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n" + smuggled).startswith(b"HTTP/1.1 411")
    # The same for a body on a method that takes none (PUT is refused, GET ignores it).
    for head in [b"PUT /api/door/unlock HTTP/1.1", b"GET /login HTTP/1.1"]:
        _answers(door, head + b"\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % len(smuggled) + smuggled)


def _answers(door: Door, raw: bytes) -> bytes:
    """The server's whole answer to ``raw`` on one connection; asserts it is exactly one response."""
    s = socket.create_connection(("127.0.0.1", door.port), timeout=5)
    try:
        s.sendall(raw)
        answer = b""
        while True:
            try:
                data = s.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            answer += data
    finally:
        s.close()
    assert answer.count(b"HTTP/1.1 ") == 1, answer[:300]
    return answer


def test_lockdown_takes_only_a_boolean(door: Door) -> None:
    """{"on": "false"} (a string from a script) turned lockdown ON and {"purge_events": "no"} purged: bool() of text."""
    c = admin(door)
    status, body = c.post("/api/door/lockdown", {"on": "false"})
    assert status == 400 and "on" in body["error"]
    assert not door.service.console.lockdown()  # type: ignore[union-attr]
    assert c.post("/api/people", {"id": "keep1", "name": "Keep"})[0] == 200
    status, body = c.post("/api/people/keep1/remove", {"purge_events": "no"})  # not a purge of their history
    assert status == 400 and "purge_events" in body["error"]
    assert c.post("/api/people/keep1/remove", {})[0] == 200


def test_head_on_a_stream_sends_headers_only(door: Door) -> None:
    c = admin(door)
    for path in ["/api/live.mjpg", "/api/events"]:
        s = socket.create_connection(("127.0.0.1", door.port), timeout=8)
        try:
            s.sendall(f"HEAD {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {c.cookie}\r\n\r\n".encode())
            assert stream_ends(s, 6), path  # answered and closed, not an endless body
        finally:
            s.close()


def test_request_headers_are_capped_in_total(door: Door) -> None:
    """http.server takes 100 header lines of 64 KB each (~6.5 MB, held several times while parsed) from anyone
    before any check: 64 such connections could take a Pi Zero's memory from the door. The head is capped."""
    from facegate.web.server import MAX_HEAD_BYTES

    filler = "".join(f"X-Fill-{i}: {'a' * 2000}\r\n" for i in range(MAX_HEAD_BYTES // 2000 + 2))
    s = socket.create_connection(("127.0.0.1", door.port), timeout=8)
    try:
        s.sendall(f"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n{filler}\r\n".encode())
        assert s.recv(64).startswith(b"HTTP/1.1 431")
    finally:
        s.close()
    assert Client(door).request("GET", "/login", headers={"X-Fill": "a" * 2000})[0] == 200


def test_system_page_shows_each_groups_false_matches_and_the_threshold(door: Door) -> None:
    code, system = admin(door).get_json("/api/system")
    assert code == 200
    op = system["status"]["operating_point"]
    assert op["operating_point"] == "every_group" and op["source"] == "fpir"
    assert op["templates"] == system["status"]["gallery"]["templates"]
    rows = {(r["far"], r["group"]): r for r in system["groups"]}
    assert {g for _, g in rows} == {"female", "male"}
    for far in (1e-3, 1e-4):  # the door's default points keep the promise for each group of the reference set
        for group in ("female", "male"):
            r = rows[(far, group)]
            assert r["meets_far"] is True and r["fmr_ci95"][1] <= 1.5 * far and r["impostor_pairs"] > 100_000
    assert rows[(1e-4, "female")]["door_at_or_above"] and op["threshold"] >= rows[(1e-4, "female")]["similarity"]
