"""The soak's console client (tools/checks/soak.py --console) against the real console: it streams, and when its
session ends under it (here: the admin's password is set again, which ends every session of that user) it
signs in again and the live view and the event stream resume."""

from __future__ import annotations

import threading
from pathlib import Path

from facegate.web.accounts import UserStore
from support.webconsole import ADMIN, ADMIN_PASSWORD, running_door

from tools.checks import soak
from tools.wait import wait_for


def test_console_client_streams_and_signs_in_again_when_its_session_ends(tmp_path: Path) -> None:
    with running_door(tmp_path) as door:
        stop = threading.Event()
        client = soak.ConsoleClient(door.port, ADMIN, ADMIN_PASSWORD, stop)
        try:
            wait_for(lambda: client.live["frames"] >= 5 and client.events["received"] >= 1, 90, "frames and events")
            before = client.live["frames"]
            UserStore(door.state_dir).passwd(ADMIN, ADMIN_PASSWORD)  # a new hash: the old session is void
            wait_for(lambda: client.logins >= 2 and client.live["connects"] >= 2 and client.events["connects"] >= 2,
                     90, "a second sign-in and both streams back")
            wait_for(lambda: client.live["frames"] >= before + 5, 90, "frames after the sign-in")
        finally:
            stop.set()
        report = client.report({e["event_id"]: e["type"] for e in door.events()})
        # The stream that noticed the session's end first (both recheck it within a second) was refused on
        # reconnecting and made the client sign in again.
        assert report["errors"].get("live_401", 0) + report["errors"].get("events_401", 0) >= 1, report["errors"]
        assert report["live"].get("bad_frames", 0) == 0
        assert report["stored_events_seen_on_sse"] >= 1
        assert report["stored_events"] == report["stored_events_seen_on_sse"] + sum(
            report["stored_not_seen_on_sse_by_type"].values())
