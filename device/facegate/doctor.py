"""``facegate doctor``: check each part a door needs and say what is wrong and how to fix it.

Installers meet the same handful of problems (camera not enabled, not in the gpio group, broker
unreachable, clock not synchronised so signed commands look expired); naming the fix saves a support call.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from facegate.config import Config
from facegate.errors import FacegateError


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix}


def check_models(config: Config) -> Check:
    from facegate.models import Manifest

    try:
        manifest = Manifest.load(config.models.dir)
        names = []
        roles: list[tuple[str, str | None]] = [("detector", config.models.detector),
                                               ("embedder", config.models.embedder), ("landmarks", None)]
        if config.liveness.enabled:  # the service refuses to start without it
            roles.append(("antispoof", config.liveness.model))
        for role, name in roles:
            names.append(manifest.get(role, name).name)
    except FacegateError as exc:
        return Check("models", False, str(exc), "restore models/ from the release or run tools/build_models.py")
    return Check("models", True, "verified: " + ", ".join(names))


def check_gallery(config: Config) -> Check:
    from facegate.gallery.store import Gallery
    from facegate.models import Manifest

    path = config.gallery_path
    if not path.is_file():
        return Check("gallery", False, f"{path} does not exist",
                     "enrol people with 'facegate enroll --gallery PATH' or configure [sync]")
    from facegate.recovery import integrity_problem

    if (problem := integrity_problem(path)) is not None:  # issue 13: the same check the service makes at start
        return Check("gallery", False, f"{path} is damaged ({problem})",
                     "move it aside, then restore a backup, re-sync ('facegate gallery apply BUNDLE') or re-enrol")
    try:
        with Gallery(path) as gallery:
            gallery.check_embedder(Manifest.load(config.models.dir).get("embedder", config.models.embedder).sha256)
            persons, templates = gallery.counts()
            version = gallery.version
    except FacegateError as exc:
        return Check("gallery", False, str(exc), "re-enrol with the shipped embedder")
    if persons == 0:
        return Check("gallery", False, f"{path} is empty (version {version})", "enrol at least one person")
    return Check("gallery", True, f"{path}: {persons} persons, {templates} templates, version {version}")


def check_camera(config: Config) -> Check:
    from facegate.camera.supervisor import make_source

    source = make_source(config.camera)
    try:
        source.open()
        frame = source.read()
    except FacegateError as exc:
        fix = ("enable the camera (rpicam-hello --list-cameras), check the ribbon cable, and that the service "
               "user is in the 'video' group") if config.camera.source == "picamera2" else \
              "check camera.source (a V4L2 index like \"0\", a file, a URL or replay:DIR)"
        return Check("camera", False, str(exc), fix)
    finally:
        source.close()
    if frame is None:
        return Check("camera", False, f"{config.camera.source} delivered no frame", "check camera.source")
    h, w = frame.image.shape[:2]
    return Check("camera", True, f"{config.camera.source}: {w}x{h} frame read")


def check_gpio(config: Config) -> Check:
    try:
        from gpiozero import OutputDevice

        factory = None
        if config.door.pin_factory == "mock":
            from gpiozero.pins.mock import MockFactory

            factory = MockFactory()
        relay = OutputDevice(config.door.relay_pin, active_high=config.door.relay_active_high,
                             initial_value=False, pin_factory=factory)
        relay.close()
    except Exception as exc:  # gpiozero raises a family of errors; all mean "cannot drive the relay"
        return Check("gpio", False, f"relay pin {config.door.relay_pin}: {exc}",
                     "run on a Raspberry Pi with the service user in the 'gpio' group, install lgpio "
                     "(apt install python3-lgpio), or set door.pin_factory = \"mock\" for a demo")
    return Check("gpio", True, f"relay on pin {config.door.relay_pin} can be driven")


def check_broker(config: Config) -> Check:
    if not config.mqtt.enabled:
        return Check("broker", True, "MQTT disabled: events stay in the outbox")
    try:
        with socket.create_connection((config.mqtt.host, config.mqtt.port), timeout=3):
            pass
    except OSError as exc:
        return Check("broker", False, f"{config.mqtt.host}:{config.mqtt.port}: {exc}",
                     "start the broker (apt install mosquitto) or fix mqtt.host / mqtt.port; events are kept "
                     "in the outbox until it is reachable")
    return Check("broker", True, f"{config.mqtt.host}:{config.mqtt.port} reachable")


def check_clock(_config: Config) -> Check:
    year = time.gmtime().tm_year
    if year < 2025:
        return Check("clock", False, f"system year is {year}",
                     "set the time (NTP): signed commands older than 30 s are rejected")
    if shutil.which("timedatectl"):
        out = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
                             capture_output=True, text=True, check=False, timeout=5).stdout.strip()
        if out == "no":
            return Check("clock", False, "NTP not synchronised",
                         "enable time sync: sudo timedatectl set-ntp true")
    return Check("clock", True, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


CHECKS: list[Callable[[Config], Check]] = [check_models, check_gallery, check_camera, check_gpio, check_broker,
                                           check_clock]


def _check_panel(config: Config) -> Check:
    from facegate.panel.doctor import check_panel

    result = check_panel(config)
    return Check("panel", result.ok, result.detail, result.fix)


CHECKS.append(_check_panel)  # OSDP key and port, Wiegand/OSDP card numbers (facegate/panel/doctor.py)


def run_checks(config: Config) -> list[Check]:
    return [check(config) for check in CHECKS]
