"""Door I/O on gpiozero's own MockFactory: relay pulses from the mock pin's state history, lock modes,
contact events, exit button, callbacks and release on close. Real time, short durations, polled deadlines."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from facegate.access.door import Door
from facegate.config import DoorConfig
from gpiozero import OutputDevice
from gpiozero.pins.mock import MockFactory
from support.recorded_events import Events

from tools.wait import wait_for

RELAY, CONTACT, EXIT, BUZZER, LED_PIN = 17, 22, 27, 5, 6
PULSE = 0.3  # the measured pulse
SHORT = 0.1  # for tests that only need a relock to happen
TOLERANCE = 0.15  # scheduling slack on a loaded CI box; the door thread itself wakes within ~1 ms


def pulses(pin: Any, energised_level: bool) -> list[float]:
    """Durations of the completed energised (or released) spans in a MockPin's history.

    MockPin.states holds (seconds since the previous change, new level); the span that starts at entry i
    lasts states[i + 1].timestamp.
    """
    states = pin.states
    return [states[i + 1].timestamp for i in range(1, len(states) - 1) if states[i].state == energised_level]


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    """Unlike the shared fixture (support/scenes.py, which only forgets the pins), this one closes them: each
    pin drops its edge callback and returns to input, so a door a test left open cannot act on a pin later."""
    f = MockFactory()
    yield f
    f.close()


@pytest.fixture
def events() -> Events:
    return Events()


def make(factory: MockFactory, events: Events, **config: Any) -> Door:
    config.setdefault("unlock_seconds", PULSE)
    return Door(DoorConfig(relay_pin=RELAY, **config), events, pin_factory=factory)


def shut_door(factory: MockFactory, contact_type: str) -> None:
    # Contact to ground with the pull-up: "contact closed" reads low. NC is closed while the door is.
    pin = factory.pin(CONTACT)
    pin.drive_low() if contact_type == "NC" else pin.drive_high()


def open_door(factory: MockFactory, contact_type: str) -> None:
    pin = factory.pin(CONTACT)
    pin.drive_high() if contact_type == "NC" else pin.drive_low()


def test_starts_locked_and_pulses_for_unlock_seconds(factory: MockFactory, events: Events) -> None:
    with make(factory, events) as door:
        relay = factory.pin(RELAY)
        assert door.locked and relay.state is False  # fail-secure, active high: de-energised = low
        door.unlock("face")
        assert not door.locked and relay.state is True
        wait_for(lambda: door.locked)
        [duration] = pulses(relay, energised_level=True)
        assert PULSE <= duration < PULSE + TOLERANCE
        assert events.types() == ["door_unlocked", "door_locked"]
        assert events.of("door_unlocked")[0] == {"reason": "face", "seconds": PULSE, "extended": False}
        assert events.of("door_locked")[0] == {"reason": "timeout"}


def test_active_low_relay_inverts_the_pin_level(factory: MockFactory, events: Events) -> None:
    with make(factory, events, relay_active_high=False) as door:
        relay = factory.pin(RELAY)
        assert relay.state is True  # locked = de-energised = HIGH on an active-low driver
        door.unlock("face")
        assert relay.state is False
        wait_for(lambda: door.locked)
        [duration] = pulses(relay, energised_level=False)
        assert PULSE <= duration < PULSE + TOLERANCE
        assert relay.state is True


def test_fail_safe_holds_power_while_locked(factory: MockFactory, events: Events) -> None:
    with make(factory, events, fail_safe=True) as door:
        relay = factory.pin(RELAY)
        assert door.locked and relay.state is True  # maglock: energised = locked
        door.unlock("face")
        assert relay.state is False
        wait_for(lambda: door.locked)
        [released] = pulses(relay, energised_level=False)
        assert PULSE <= released < PULSE + TOLERANCE
        assert relay.state is True


def test_retrigger_extends_one_pulse_and_never_shortens(factory: MockFactory, events: Events) -> None:
    with make(factory, events) as door:
        relay = factory.pin(RELAY)
        door.unlock("face")
        time.sleep(0.15)
        door.unlock("face")
        door.unlock("mqtt", seconds=0.05)  # shorter request: must not cut the running release
        wait_for(lambda: door.locked)
        [duration] = pulses(relay, energised_level=True)  # exactly one pulse, not three
        assert 0.15 + PULSE <= duration < 0.15 + PULSE + TOLERANCE
        assert [e["extended"] for e in events.of("door_unlocked")] == [False, True, True]
        assert len(events.of("door_locked")) == 1


def test_lock_ends_a_release_now(factory: MockFactory, events: Events) -> None:
    with make(factory, events, unlock_seconds=5.0) as door:
        door.unlock("face")
        door.lock()
        assert door.locked and factory.pin(RELAY).state is False
        assert events.of("door_locked") == [{"reason": "command"}]
        time.sleep(0.05)
        door.lock()  # already locked: no second event
        assert len(events.of("door_locked")) == 1


def test_unlock_rejects_bad_durations(factory: MockFactory, events: Events) -> None:
    with make(factory, events) as door:
        for bad in (0, -1, float("nan"), float("inf"), 601):
            with pytest.raises(ValueError, match="unlock seconds"):
                door.unlock("x", seconds=bad)
        assert door.locked and events.items == []


@pytest.mark.parametrize("contact_type", ["NC", "NO"])
def test_contact_open_close_events(factory: MockFactory, events: Events, contact_type: str) -> None:
    with make(factory, events, contact_pin=CONTACT, contact_type=contact_type) as door:
        shut_door(factory, contact_type)
        assert door.door_open is False and door.state()["door"] == "closed"
        door.unlock("face")
        events.clear()
        open_door(factory, contact_type)
        assert door.door_open is True
        shut_door(factory, contact_type)
        assert events.types() == ["door_opened", "door_closed"]
        assert events.of("door_opened")[0] == {"locked": False}
        assert events.of("door_closed")[0]["seconds_open"] >= 0


def test_held_open_fires_once(factory: MockFactory, events: Events) -> None:
    with make(factory, events, contact_pin=CONTACT, held_open_seconds=0.2) as door:
        shut_door(factory, "NC")
        door.unlock("face")
        open_door(factory, "NC")
        wait_for(lambda: bool(events.of("door_held_open")))
        time.sleep(0.15)  # would have fired again by now if it repeated
        [held] = events.of("door_held_open")
        assert 0.2 <= held["seconds"] < 0.2 + TOLERANCE
        assert door.state()["held_open"] is True
        shut_door(factory, "NC")
        assert door.state()["held_open"] is False
        open_door(factory, "NC")  # a new opening re-arms the alarm
        shut_door(factory, "NC")
        assert len(events.of("door_held_open")) == 1


def test_forced_open_only_while_locked_and_outside_grace(factory: MockFactory, events: Events) -> None:
    with make(factory, events, contact_pin=CONTACT, unlock_seconds=0.1) as door:
        door.forced_open_grace_seconds = 0.15
        shut_door(factory, "NC")
        # Opened during a release: not forced.
        door.unlock("face")
        open_door(factory, "NC")
        shut_door(factory, "NC")
        wait_for(lambda: door.locked)
        # Opened just after the relock (within grace): not forced.
        open_door(factory, "NC")
        shut_door(factory, "NC")
        assert events.of("door_forced_open") == []
        # Opened while locked, after the grace: forced.
        time.sleep(0.2)
        open_door(factory, "NC")
        assert events.types()[-2:] == ["door_opened", "door_forced_open"]
        assert events.of("door_opened")[-1] == {"locked": True}


def test_no_forced_open_for_a_door_already_open_at_start(factory: MockFactory, events: Events) -> None:
    # The pull-up makes an NC contact read "open" until driven: no edge, so no alarm.
    with make(factory, events, contact_pin=CONTACT) as door:
        assert door.door_open is True
        assert events.items == []


@pytest.mark.parametrize("contact_type", ["NC", "NO"])
def test_mock_pins_from_the_config_start_with_the_door_shut(events: Events, contact_type: str) -> None:
    """A bench door (``pin_factory = "mock"``, the example's ``contact_pin = 27``) must not read its undriven
    NC contact as a door propped open: that gave ``door_held_open`` after held_open_seconds, with no
    ``door_opened``."""
    config = DoorConfig(relay_pin=RELAY, contact_pin=CONTACT, contact_type=contact_type, pin_factory="mock",
                        held_open_seconds=0.2)
    with Door(config, events) as door:
        assert door.door_open is False and door.state()["door"] == "closed"
        time.sleep(0.5)  # past held_open_seconds and a contact re-read: the door is still shut
        assert door.door_open is False
        assert events.of("door_held_open") == [] and events.of("door_opened") == []
        # The pins are gpiozero's MockFactory all the same: driving the contact opens the door as usual.
        pin = door.pin_factory.pin(CONTACT)
        pin.drive_high() if contact_type == "NC" else pin.drive_low()
        assert door.door_open is True and events.types()[-2:] == ["door_opened", "door_forced_open"]


@pytest.mark.parametrize("pull_up", [True, False])
def test_exit_button_requests_exit_and_pulses(factory: MockFactory, events: Events, pull_up: bool) -> None:
    with make(factory, events, exit_pin=EXIT, exit_pull_up=pull_up, unlock_seconds=SHORT) as door:
        button = factory.pin(EXIT)
        press, release = (button.drive_low, button.drive_high) if pull_up else (button.drive_high, button.drive_low)
        press()
        release()
        assert events.types() == ["exit_request", "door_unlocked"]
        assert events.of("door_unlocked")[0]["reason"] == "exit_button"
        wait_for(lambda: door.locked)
        [duration] = pulses(factory.pin(RELAY), energised_level=True)
        assert SHORT <= duration < SHORT + TOLERANCE


def test_led_follows_the_lock_and_buzzer_beeps(factory: MockFactory, events: Events) -> None:
    with make(factory, events, led_pin=LED_PIN, buzzer_pin=BUZZER, unlock_seconds=SHORT) as door:
        led, buzzer = factory.pin(LED_PIN), factory.pin(BUZZER)
        door.unlock("face")
        assert led.state is True
        wait_for(lambda: door.locked)
        assert led.state is False
        wait_for(lambda: buzzer.state is False and len(buzzer.states) >= 3)
        [beep] = pulses(buzzer, energised_level=True)
        assert 0.1 <= beep < 0.1 + TOLERANCE + 0.1


def test_a_failing_led_cannot_keep_the_door_open(factory: MockFactory, events: Events,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with make(factory, events, led_pin=LED_PIN, unlock_seconds=SHORT) as door:
        def broken(value: bool) -> None:
            raise OSError("LED pin write failed")

        monkeypatch.setattr(factory.pin(LED_PIN), "_set_state", broken)  # a fault on this pin only
        states: list[tuple[str, str]] = []
        door.on_state(lambda name, value: states.append((name, value)))
        door.unlock("face")
        assert not door.locked and factory.pin(RELAY).state is True
        wait_for(lambda: door.locked)
        assert factory.pin(RELAY).state is False
        assert states[-1] == ("lock", "LOCKED") and events.types()[-1] == "door_locked"


def test_on_state_reports_current_then_every_change(factory: MockFactory, events: Events) -> None:
    seen: list[tuple[str, str]] = []
    with make(factory, events, contact_pin=CONTACT, unlock_seconds=SHORT) as door:
        shut_door(factory, "NC")
        door.on_state(lambda kind, value: seen.append((kind, value)))
        assert seen == [("lock", "LOCKED"), ("door", "closed")]
        door.unlock("face")
        open_door(factory, "NC")
        shut_door(factory, "NC")
        wait_for(lambda: door.locked)
    assert seen == [
        ("lock", "LOCKED"), ("door", "closed"),
        ("lock", "UNLOCKED"), ("door", "open"), ("door", "closed"), ("lock", "LOCKED"),
    ]


def test_without_contact_no_door_state(factory: MockFactory, events: Events) -> None:
    seen: list[tuple[str, str]] = []
    with make(factory, events) as door:
        door.on_state(lambda kind, value: seen.append((kind, value)))
        assert seen == [("lock", "LOCKED")]
        assert door.state()["door"] == "unknown"


def test_failing_subscribers_cannot_keep_the_door_open(factory: MockFactory) -> None:
    def broken_emit(type: str, **fields: Any) -> None:
        raise RuntimeError("outbox down")

    with Door(DoorConfig(relay_pin=RELAY, unlock_seconds=SHORT), broken_emit, pin_factory=factory) as door:
        door.on_state(lambda kind, value: 1 / 0)
        door.unlock("face")
        wait_for(lambda: door.locked)
        assert factory.pin(RELAY).state is False


def test_callbacks_may_call_back_into_the_door(factory: MockFactory) -> None:
    box: list[Door] = []

    def emit(type: str, **fields: Any) -> None:
        if type == "door_unlocked" and fields["reason"] == "face":
            box[0].lock(reason="reentrant")

    with Door(DoorConfig(relay_pin=RELAY, unlock_seconds=5.0), emit, pin_factory=factory) as door:
        box.append(door)
        door.unlock("face")
        assert door.locked


def test_concurrent_unlocks_make_one_pulse(factory: MockFactory, events: Events) -> None:
    with make(factory, events, unlock_seconds=SHORT) as door:
        start = threading.Barrier(8)

        def hammer() -> None:
            start.wait()
            for _ in range(20):
                door.unlock("face")

        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wait_for(lambda: door.locked)
        assert len(pulses(factory.pin(RELAY), energised_level=True)) == 1
        assert len(events.of("door_unlocked")) == 160
        assert len(events.of("door_locked")) == 1


@pytest.mark.parametrize(("fail_safe", "active_high"), [(False, True), (False, False), (True, True), (True, False)])
def test_close_releases_the_relay_and_the_pins(
    factory: MockFactory, events: Events, fail_safe: bool, active_high: bool
) -> None:
    seen: list[tuple[str, str]] = []
    door = make(factory, events, fail_safe=fail_safe, relay_active_high=active_high, unlock_seconds=SHORT,
                contact_pin=CONTACT, exit_pin=EXIT, led_pin=LED_PIN, buzzer_pin=BUZZER)
    door.on_state(lambda kind, value: seen.append((kind, value)))
    door.unlock("face")
    door.close()
    relay = factory.pin(RELAY)
    released_level = not active_high
    assert relay.state is released_level
    changes = len(relay.states)
    time.sleep(SHORT + 0.05)  # the cancelled relock timer must not touch the pin again
    assert len(relay.states) == changes and relay.state is released_level
    # Released: de-energised is locked for fail-secure and open for fail-safe, and that is reported.
    assert door.locked is (not fail_safe)
    assert seen[-1] == ("lock", "UNLOCKED" if fail_safe else "LOCKED")
    door.close()  # idempotent
    door.unlock("late")  # ignored after close
    assert relay.state is released_level
    # Every pin was given back to the factory.
    for pin in (RELAY, CONTACT, EXIT, LED_PIN, BUZZER):
        OutputDevice(pin, pin_factory=factory).close()


def test_close_while_locked_fail_secure_emits_nothing(factory: MockFactory, events: Events) -> None:
    door = make(factory, events)
    door.close()
    assert events.items == [] and door.state()["closed"] is True


def test_poll_with_a_hand_driven_clock(factory: MockFactory, events: Events) -> None:
    now = [1000.0]
    door = Door(
        DoorConfig(relay_pin=RELAY, contact_pin=CONTACT, held_open_seconds=30.0),
        events, pin_factory=factory, clock=lambda: now[0],
    )
    try:
        shut_door(factory, "NC")
        door.unlock("face", seconds=10)
        open_door(factory, "NC")
        now[0] += 10.0
        door.poll()
        assert door.locked
        now[0] += 20.5
        door.poll()
        assert events.of("door_held_open") == [{"seconds": 30.5}]
        assert events.of("door_forced_open") == []
    finally:
        door.close()
