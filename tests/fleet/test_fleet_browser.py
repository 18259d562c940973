"""The fleet console end to end: real headless Chromium, a real Mosquitto, two real door services on replays.

Add the astronaut with an uploaded photo at the fleet console -> both doors apply their signed bundle -> she is
granted at both -> both grants appear in the fleet journal; a signed unlock from the Doors page reaches a door;
one door goes offline, she is removed, the other door denies her at once and the offline one catches up (one
delta from the version it confirmed) when it returns, and denies her too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import pytest
from facegate.config import parse_config
from facegate.fleet.config import parse_fleet_config
from facegate.fleet.server import FleetService
from facegate.fleet.store import EventQuery
from facegate.fleet.web import fleet_users
from facegate.service import Service
from facegate.sync.keys import public_key_b64
from gpiozero.pins.mock import MockFactory
from support.broker import Mosquitto
from support.browser import MISSING, chromium_installed, headless_chromium
from support.webconsole import write_scene

from tools.demo import shipped_photos
from tools.net import free_port
from tools.wait import wait_for

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ADMIN, PASSWORD = "site-admin", "correct horse battery"
PERSON = "astronaut"


@contextmanager
def door_service(tmp: Path, device: str, broker: Mosquitto, fleet: FleetService, frames: Path) -> Iterator[Service]:
    config = parse_config({
        "device_id": device, "state_dir": str(tmp / device),
        "camera": {"source": f"replay:{frames}", "fps": 15, "loop": True},
        "door": {"relay_pin": 17, "unlock_seconds": 0.6},
        "mqtt": {"host": broker.host, "port": broker.port, "discovery": False},
        "commands": {"ed25519_public_keys": [public_key_b64(fleet.command_key.public_key())]},
        "sync": {"public_keys": [public_key_b64(fleet.sync_key.public_key())],
                 "topic": fleet.publisher.topic(device)},
        "outbox": {"flush_timeout_seconds": 2},
        "recognition": {"cooldown_seconds": 1},
        "liveness": {"enabled": False},  # the visitors are photographs pasted into frames
    })
    factory = MockFactory()
    service = Service(config, pin_factory=factory)
    thread = threading.Thread(target=service.run, name=f"door-{device}", daemon=True)
    thread.start()
    try:
        yield service
    finally:
        service.stop_event.set()
        thread.join(timeout=20)
        factory.reset()


@pytest.fixture
def site(tmp_path: Path, broker: Mosquitto) -> Iterator[tuple[Mosquitto, FleetService]]:
    config = parse_fleet_config({
        "state_dir": str(tmp_path / "fleet"),
        "mqtt": {"host": broker.host, "port": broker.port, "client_id": "facegate-fleet-test"},
        "web": {"port": free_port()},
        "sync": {"chunk_bytes": 16 * 1024},
    })
    fleet = FleetService(config)
    fleet_users(config.state_dir).add(ADMIN, "admin", PASSWORD)
    fleet.start()
    try:
        yield broker, fleet
    finally:
        fleet.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    if not chromium_installed():
        pytest.skip(MISSING)
    with headless_chromium("1400,900") as driver:
        yield driver


def events(fleet: FleetService, door: str, type: str, after: float = 0.0) -> list[dict[str, Any]]:
    return [e for e in fleet.store.query_events(EventQuery(door=door, type=type, limit=1000))
            if _ts(e) > after]


def _ts(event: dict[str, Any]) -> float:
    from facegate.fleet.doors import parse_ts

    return parse_ts(event["ts"])


def applied(fleet: FleetService, door: str) -> int | None:
    state = fleet.store.sync_state(door) or {}
    return state.get("applied_version")


def test_people_once_every_door(site: tuple[Mosquitto, FleetService], browser: Any, tmp_path: Path) -> None:
    broker, fleet = site
    frames = write_scene(tmp_path / "frames")
    photo = tmp_path / "astronaut.jpg"
    cv2.imwrite(str(photo), cv2.cvtColor(shipped_photos()[0], cv2.COLOR_RGB2BGR))
    # Tables are re-rendered by the page (search, refresh): an element read mid-render is simply read again.
    wait = WebDriverWait(browser, 30, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,))
    url = f"http://127.0.0.1:{fleet.http.port}"
    with door_service(tmp_path, "door1", broker, fleet, frames) as door1:
        door2_cm = door_service(tmp_path, "door2", broker, fleet, frames)
        door2_cm.__enter__()
        door2_up = True
        try:
            assert wait_for(lambda: {d["door_id"] for d in fleet.store.doors()} >= {"door1", "door2"}, 30)
            browser.get(url + "/login")
            browser.find_element(By.ID, "login-user").send_keys(ADMIN)
            browser.find_element(By.ID, "login-password").send_keys(PASSWORD)
            browser.find_element(By.ID, "login-submit").click()
            wait.until(ec.url_contains("/doors"))
            wait.until(ec.presence_of_element_located((By.ID, "door-door2-state")))

            # Add her once, with a photo: both doors get a signed bundle and grant her.
            browser.get(url + "/people")
            wait.until(ec.visibility_of_element_located((By.ID, "person-form")))
            browser.find_element(By.ID, "person-id").send_keys(PERSON)
            browser.find_element(By.ID, "person-name").send_keys("Eileen Collins")
            browser.find_element(By.ID, "person-photo").send_keys(str(photo))
            browser.find_element(By.ID, "person-save").click()
            wait.until(ec.text_to_be_present_in_element((By.ID, "message"), "saved with photo"))
            added = fleet.people.gallery.version
            for door in ("door1", "door2"):
                assert wait_for(lambda d=door: (applied(fleet, d) or 0) >= added, 40), fleet.store.sync_state(door)
            for door in ("door1", "door2"):
                assert wait_for(lambda d=door: any(e.get("person_id") == PERSON
                                                     for e in events(fleet, d, "access_granted")), 40, fail=False), door
            browser.get(url + "/journal")
            wait.until(ec.visibility_of_element_located((By.ID, "journal-form")))  # shown once the session is read
            browser.find_element(By.ID, "journal-person").send_keys(PERSON)
            browser.find_element(By.ID, "journal-type").send_keys("access_granted")
            browser.find_element(By.ID, "journal-search").click()
            wait.until(lambda b: {r.get_attribute("data-door") for r in
                                  b.find_elements(By.CSS_SELECTOR, "#journal tr.event-access_granted")}
                       >= {"door1", "door2"})
            browser.get(url + "/doors")
            wait.until(ec.text_to_be_present_in_element((By.ID, "door-door1-applied"), f"v{added}"))

            # A signed unlock from the console reaches the door and is journaled.
            since = time.time() - 1
            wait.until(lambda b: _click(b, "door-door1-unlock"))  # the Doors table refreshes every 2 s
            assert wait_for(lambda: any(e.get("reason") == "remote" for e in
                                          events(fleet, "door1", "door_unlocked", since)), 20)

            # door2 goes offline; she is removed; door1 denies her at once.
            door2_cm.__exit__(None, None, None)
            door2_up = False
            browser.get(url + "/people")
            wait.until(ec.element_to_be_clickable((By.ID, f"person-{PERSON}-remove"))).click()
            browser.switch_to.alert.accept()
            wait.until(ec.text_to_be_present_in_element((By.ID, "message"), "removed"))
            removed = fleet.people.gallery.version
            assert wait_for(lambda: (applied(fleet, "door1") or 0) >= removed, 30), fleet.store.sync_state("door1")
            assert applied(fleet, "door2") == added  # it was not there
            _denied(fleet, door1, "door1")

            # door2 returns and catches up from its retained manifest: denied there too.
            with door_service(tmp_path, "door2", broker, fleet, frames) as door2:
                assert wait_for(lambda: (applied(fleet, "door2") or 0) >= removed, 40), \
                    fleet.store.sync_state("door2")
                _denied(fleet, door2, "door2")
            assert fleet.store.count_events() == len({e["event_id"] for e in
                                                      fleet.store.query_events(EventQuery(limit=10_000))})
        finally:
            if door2_up:
                door2_cm.__exit__(None, None, None)


def _click(browser: Any, element_id: str) -> bool:
    try:
        browser.find_element(By.ID, element_id).click()
    except (StaleElementReferenceException, NoSuchElementException):
        return False
    return True


def _denied(fleet: FleetService, door: Service, name: str) -> None:
    """After the door applied the removal, the next full loop of the scene brings her back: no grant, a stranger."""
    live = max(_ts(e) for e in events(fleet, name, "gallery_updated"))
    assert wait_for(lambda: len(events(fleet, name, "unknown_face", live)) >= 2, 30), name
    # A frame matched against the old gallery just before the swap may still complete its grant just after it
    # (each frame sees one gallery whole); from the first stranger decision on, the new gallery decides alone.
    first_unknown = min(_ts(e) for e in events(fleet, name, "unknown_face", live))
    assert [e for e in events(fleet, name, "access_granted", first_unknown) if e.get("person_id") == PERSON] == []
    assert door.gallery.person(PERSON) is None
