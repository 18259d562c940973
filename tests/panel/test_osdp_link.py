"""OSDP link state → events (pure state machine, fed with LibOSDP's own online / secure-channel samples), and the
key file rules. The protocol itself is exercised against LibOSDP's control panel in test_osdp.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from facegate.config import ConfigError
from facegate.panel.osdp_keys import load_scbk, store_scbk
from facegate.panel.osdp_link import SC_GRACE_SECONDS, LinkMonitor


class Events(list[tuple[str, dict[str, Any]]]):
    def __call__(self, type: str, **fields: Any) -> None:
        self.append((type, fields))


def test_secure_link_comes_up_drops_and_returns() -> None:
    events = Events()
    link = LinkMonitor(events, require_secure_channel=True)
    link.sample(0.0, online=True, secure=False)  # the handshake: polled, no session yet
    assert events == []
    link.sample(0.5, online=True, secure=True)
    link.sample(5.0, online=True, secure=True)
    assert events == [("osdp_online", {"secure_channel": True})]
    link.sample(13.0, online=False, secure=False)
    assert events[-1] == ("osdp_offline", {"reason": "no_polls", "seconds_online": 12.5})
    link.sample(14.0, online=True, secure=True)
    assert events[-1] == ("osdp_online", {"secure_channel": True}) and len(events) == 3


def test_a_panel_without_the_key_is_reported_once_per_attempt() -> None:
    events = Events()
    link = LinkMonitor(events, require_secure_channel=True)
    for t in (0.0, 1.0, SC_GRACE_SECONDS + 0.1, SC_GRACE_SECONDS + 1):
        link.sample(t, online=True, secure=False)
    assert [t for t, _ in events] == ["osdp_secure_channel_failed"] and link.state.sc_failed
    link.sample(10.0, online=False, secure=False)  # LibOSDP gives up; never online, so no osdp_offline
    assert len(events) == 1 and not link.state.sc_failed
    for t in (300.0, 304.0):  # the panel's next attempt
        link.sample(t, online=True, secure=False)
    assert [t for t, _ in events] == ["osdp_secure_channel_failed"] * 2


def test_session_lost_while_polled_is_offline() -> None:
    events = Events()
    link = LinkMonitor(events, require_secure_channel=True)
    link.sample(0.0, online=True, secure=True)
    link.sample(1.0, online=True, secure=False)
    assert events[-1] == ("osdp_offline", {"reason": "secure_channel_lost", "seconds_online": None})


def test_install_mode_reports_a_plain_link_then_the_secure_one() -> None:
    events = Events()
    link = LinkMonitor(events, require_secure_channel=False)
    link.sample(0.0, online=True, secure=False)
    link.sample(0.5, online=True, secure=True)
    assert events == [("osdp_online", {"secure_channel": False}), ("osdp_online", {"secure_channel": True})]


def test_key_file_rules(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"osdp.scbk_file: .* does not exist"):
        load_scbk(tmp_path / "missing")
    (tmp_path / "short").write_text("abcd")
    with pytest.raises(ConfigError, match="32 hex digits"):
        load_scbk(tmp_path / "short")
    (tmp_path / "default").write_text(bytes(range(0x30, 0x40)).hex())
    with pytest.raises(ConfigError, match="default key SCBK-D"):
        load_scbk(tmp_path / "default")
    key = bytes(range(16, 32))
    store_scbk(tmp_path / "sub" / "scbk", key)
    assert load_scbk(tmp_path / "sub" / "scbk") == key
    assert (tmp_path / "sub" / "scbk").stat().st_mode & 0o777 == 0o600


def test_doctor_names_panel_problems(tmp_path: Path) -> None:
    from facegate.config import parse_config
    from facegate.gallery.store import Gallery
    from facegate.panel.doctor import check_panel
    from support.sync_keys import add_random_persons

    state = tmp_path / "state"
    state.mkdir()
    assert check_panel(parse_config({"state_dir": str(state)})).detail == "no access panel configured"
    with Gallery(state / "gallery.db") as g:
        add_random_persons(g, 1)
        g.set_card_number(g.persons()[0]["id"], 70000)  # fits the gallery, not a 16-bit card field
    config = parse_config({"state_dir": str(state),
                           "osdp": {"port": str(tmp_path / "ttyUSB9"), "scbk_file": str(tmp_path / "scbk")},
                           "wiegand": {"data0_pin": 23, "data1_pin": 24}})
    check = check_panel(config)
    assert not check.ok
    assert "does not exist" in check.detail and "cannot open" in check.detail
    assert "do not fit the 26-bit" in check.detail
    assert "openssl rand -hex 16" in check.fix and "facegate gallery card" in check.fix
