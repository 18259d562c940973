"""The service end to end with an access panel: replayed frames → recognition → the person's card number at
LibOSDP's control panel (over a pty) and on the Wiegand pins; a stranger produces no credential."""

from __future__ import annotations

import os
import time
import tty
from pathlib import Path
from typing import Any

import pytest
from facegate.gallery.store import Gallery
from facegate.service import Service
from gpiozero.pins.mock import MockFactory
from support.scenes import enrol, make_config, write_frames
from support.wiegand_pins import frame_from_pins

osdp = pytest.importorskip("osdp", reason="LibOSDP (pip install libosdp) is not installed")

from tools.osdp_panel import KEY, Panel, h10301, write_key  # noqa: E402
from tools.wait import wait_for  # noqa: E402

D0, D1 = 23, 24
SCENE = [("bg", 3), ("astro", 12), ("bg", 40), ("hopper", 12), ("bg", 40)]


def test_a_recognised_person_is_one_card_read_and_a_stranger_none(tmp_path: Path, photos, astro_templates,  # type: ignore[no-untyped-def]
                                                                  pipeline) -> None:
    master, slave = os.openpty()
    tty.setraw(master)
    factory = MockFactory()
    try:
        frames = write_frames(tmp_path / "frames", photos, SCENE)
        config = make_config(
            tmp_path, frames, None,
            osdp={"port": os.ttyname(slave), "scbk_file": str(write_key(tmp_path / "scbk", KEY)),
                  "facility_code": 42},
            wiegand={"data0_pin": D0, "data1_pin": D1, "format": "34", "facility_code": 1000},
        )
        enrol(config, astro_templates, pipeline)
        with Gallery(config.gallery_path) as g:
            g.set_card_number("astro", 12345)
        service = Service(config, pin_factory=factory)
        seen: list[dict[str, Any]] = []
        service.emitter.add_listener(seen.append)
        for output in service.credential_outputs:  # the panel is polling before the first frame arrives
            output.start()
        panel = Panel(master, KEY)
        try:
            wait_for(lambda: service.status()["panel"]["osdp"]["secure_channel"], 10, "the secure channel")
            for pin in (factory.pin(D0), factory.pin(D1)):
                pin.clear_states()
            assert service.run() == 0
            reads = panel.card_reads()
            time.sleep(0.5)
            reads = panel.card_reads()
        finally:
            panel.close()
        types = [e["type"] for e in seen]
        assert types.count("access_granted") == 1 and types.count("unknown_face") == 1, types
        assert len(reads) == 1 and h10301(reads[0]["data"], reads[0]["length"]) == (42, 12345)
        sent = [e for e in seen if e["type"] == "credential_sent"]
        assert sorted(e["channel"] for e in sent) == ["osdp", "wiegand"]
        assert all(e["person_id"] == "astro" for e in sent)
        assert types.index("access_granted") < types.index("credential_sent")
        wiegand = next(e for e in sent if e["channel"] == "wiegand")
        bits, _ = frame_from_pins(factory)
        one = "0" + format(1000, "016b") + format(12345, "016b")
        assert bits == (one + "1") * wiegand["attempts"]  # 12345 has six 1s in its 16 bits: odd parity 1
        assert "credential_failed" not in types
    finally:
        factory.reset()
        os.close(slave)
        os.close(master)


def test_no_card_number_and_the_panel_decision(tmp_path: Path, photos, astro_templates, pipeline) -> None:  # type: ignore[no-untyped-def]
    """decision = "panel" reports a person the door's own policy refuses (lockdown); without a card number the
    door says so instead of sending anything."""
    from facegate.access.policy import AccessPolicy

    factory = MockFactory()
    try:
        frames = write_frames(tmp_path / "frames", photos, [("bg", 2), ("astro", 12), ("bg", 10)])
        config = make_config(tmp_path, frames, None,
                             wiegand={"data0_pin": D0, "data1_pin": D1, "decision": "panel"})
        enrol(config, astro_templates, pipeline)
        with AccessPolicy(config.gallery_path, config.access) as pol:
            pol.set_lockdown(True)
        service = Service(config, pin_factory=factory)
        seen: list[dict[str, Any]] = []
        service.emitter.add_listener(seen.append)
        service.run()
        failed = [e for e in seen if e["type"] == "credential_failed"]
        assert [e["reason"] for e in seen if e["type"] == "access_denied"] == ["lockdown"]
        assert len(failed) == 1 and failed[0]["reason"] == "no_card_number" and failed[0]["channel"] == "wiegand"
    finally:
        factory.reset()


def test_bad_panel_configuration_stops_the_service_at_start(tmp_path: Path, photos) -> None:  # type: ignore[no-untyped-def]
    from facegate.config import ConfigError

    frames = write_frames(tmp_path / "frames", photos, [("bg", 1)])
    factory = MockFactory()
    try:
        config = make_config(tmp_path, frames, None, osdp={"port": "/dev/null", "scbk_file": str(tmp_path / "none")})
        with pytest.raises(ConfigError, match=r"osdp.scbk_file: .*does not exist"):
            Service(config, pin_factory=factory)
        factory.reset()
        config = make_config(tmp_path, frames, None, wiegand={"data0_pin": 17, "data1_pin": 24})  # 17: the relay
        with pytest.raises(ConfigError, match="wiegand/osdp: cannot set up the pins"):
            Service(config, pin_factory=factory)
    finally:
        factory.reset()


def test_the_panel_link_state_reaches_the_status_when_it_changes(tmp_path: Path, photos) -> None:  # type: ignore[no-untyped-def]
    """The status topic's ``panel`` object is published when the OSDP link comes up, not at the next minute's
    heartbeat (as door, lock and camera changes are)."""
    from facegate.events.communicator import NullCommunicator

    master, slave = os.openpty()
    tty.setraw(master)
    factory = MockFactory()
    try:
        frames = write_frames(tmp_path / "frames", photos, [("bg", 1)])
        config = make_config(tmp_path, frames, None,
                             osdp={"port": os.ttyname(slave), "scbk_file": str(write_key(tmp_path / "scbk", KEY))})
        transport = NullCommunicator()
        service = Service(config, pin_factory=factory, communicator=transport)
        service._status.publish_now()  # as run() does: the start-up status, panel offline
        service._status.start()
        for output in service.credential_outputs:
            output.start()
        panel = Panel(master, KEY)
        try:
            def published_online() -> bool:
                status = transport.states.get("status")
                return isinstance(status, dict) and status["panel"]["osdp"]["online"] is True

            wait_for(lambda: service.status()["panel"]["osdp"]["online"], 10, "the link up in the service")
            wait_for(published_online, 2, "a status with the link up, published on the change")
        finally:
            panel.close()
            service.shutdown()
    finally:
        factory.reset()
        os.close(slave)
        os.close(master)
