"""``facegate doctor``: check each part a door needs and say what is wrong and how to fix it.

Installers meet the same handful of problems (camera not enabled, not in the gpio group, broker
unreachable, clock not synchronised so signed commands look expired); naming the fix saves a support call.
A check marked ``blocking`` fails for a reason the install itself must fix (the Python environment, the
models, the camera or pin library): ``facegate doctor --installer`` fails only on those, so deploy/install-pi.sh
stops there, while a camera not yet connected, an empty gallery or a broker that is down are reported only.
No check can end the run: an unexpected exception is that check's failure, with the other checks still run.
"""

from __future__ import annotations

import contextlib
import socket
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
    blocking: bool = False  # the door cannot work until the install is fixed (see the module docstring)

    def as_dict(self) -> dict[str, object]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix, "blocking": self.blocking}


def check_numpy(_config: Config) -> Check:
    from facegate.pi.checks import numpy_state

    state = numpy_state()
    return Check("numpy", state.ok, state.detail, state.fix, blocking=not state.ok)


def check_runtime(config: Config) -> Check:
    """The TFLite runtime imports and runs the detector (LiteRT reads /proc/cpuinfo: a sandbox can break it)."""
    from facegate.vision.models import Manifest
    from facegate.vision.runtime import TFLiteModel, runtime_name, without_delegate_notice

    try:
        entry = Manifest.load(config.models.dir).get("detector", config.models.detector)
        with without_delegate_notice():
            model = TFLiteModel(entry, threads=1)
        import numpy as np

        model.run(np.zeros(model.input_shape, dtype=model.input_dtype))
    except FacegateError as exc:
        return Check("runtime", False, str(exc), "re-run deploy/install-pi.sh (pip install ai-edge-litert)",
                     blocking=True)
    return Check("runtime", True, f"{runtime_name()} runs {entry.name}")


def check_groups(_config: Config) -> Check:
    from facegate.pi.checks import groups_state

    state = groups_state()
    return Check("groups", state.ok, state.detail, state.fix, blocking=not state.ok)


def check_models(config: Config) -> Check:
    from facegate.vision.models import Manifest

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
        return Check("models", False, str(exc), "restore models/ from the release or run tools/models/build_models.py")
    return Check("models", True, "verified: " + ", ".join(names))


def check_gallery(config: Config) -> Check:
    from facegate.gallery.store import Gallery
    from facegate.vision.models import Manifest

    path = config.gallery_path
    if not path.is_file():
        return Check("gallery", False, f"{path} does not exist",
                     "enrol people with 'facegate enroll --gallery PATH' or configure [sync]")
    from facegate.wiring.recovery import integrity_problem

    if (problem := integrity_problem(path)) is not None:  # issue 13: the same check the service makes at start
        return Check("gallery", False, f"{path} is damaged ({problem})",
                     "move it aside, then restore a backup, re-sync ('facegate gallery apply BUNDLE') or re-enrol")
    from facegate.gallery.templates import embedder_dim

    try:
        with Gallery(path) as gallery:
            embedder = Manifest.load(config.models.dir).get("embedder", config.models.embedder)
            gallery.check_embedder(embedder.sha256)
            persons, templates = gallery.counts()
            version = gallery.version
            problems = gallery.template_problems(embedder_dim(embedder))  # the service's start check
    except FacegateError as exc:
        return Check("gallery", False, str(exc), "re-enrol with the shipped embedder")
    if problems:
        named = "; ".join(f"person '{pid}': template {what}" for pid, what in list(problems.items())[:5])
        first = next(iter(problems))
        return Check("gallery", False, f"{path}: {len(problems)} person(s) with templates that cannot be matched "
                     f"(the service does not start): {named}",
                     f"facegate gallery remove --gallery {path} {first}, then re-enrol; or re-sync a signed bundle")
    if persons == 0:
        return Check("gallery", False, f"{path} is empty (version {version})", "enrol at least one person")
    return Check("gallery", True, f"{path}: {persons} persons, {templates} templates, version {version}")


def check_camera(config: Config) -> Check:
    """Opens the configured camera and reads one frame (for picamera2: the import, then a test capture)."""
    from facegate.camera.latest import LatestFrameSource
    from facegate.camera.source import CameraError, CameraLibraryError
    from facegate.camera.supervisor import make_source
    from facegate.camera.urls import redact

    source = make_source(config.camera)
    name = redact(config.camera.source)  # a stream URL's password is never shown
    stream = ""
    try:
        source.open()
        frame = source.read()
        if isinstance(source, LatestFrameSource):  # a network camera: two seconds of it, for rate and age
            deadline, ages = time.monotonic() + 2.0, []
            while time.monotonic() < deadline and (f := source.read()) is not None:
                ages.append(time.monotonic() - (f.mono_ts or 0.0))
            s = source.stats
            stream = (f", {s.fps:.1f} fps, frame age {1000 * sorted(ages)[len(ages) // 2]:.0f} ms median "
                      f"({s.frames_stale} dropped as older than {config.camera.max_frame_age_ms:g} ms)") if ages else ""
    except FacegateError as exc:
        fix = exc.fix if isinstance(exc, CameraError) and exc.fix else \
            "check camera.source (a V4L2 index like \"0\", a file, a URL or replay:DIR)"
        return Check("camera", False, str(exc), fix, blocking=isinstance(exc, CameraLibraryError))
    finally:
        with contextlib.suppress(Exception):  # a camera that failed to open may fail to close too
            source.close()
    if frame is None:
        return Check("camera", False, f"{name} delivered no frame", "check camera.source")
    h, w = frame.image.shape[:2]
    return Check("camera", True, f"{name}: {w}x{h} frame read{stream}")


def check_gpio(config: Config) -> Check:
    """The relay pin can be driven, and through the right pin library (on a Pi 5 only lgpio reaches the pins)."""
    from facegate.pi.checks import board_model

    model = board_model()
    try:
        from gpiozero import OutputDevice

        factory = None
        if config.door.pin_factory == "mock":
            from gpiozero.pins.mock import MockFactory

            factory = MockFactory()
        relay = OutputDevice(config.door.relay_pin, active_high=config.door.relay_active_high,
                             initial_value=False, pin_factory=factory)
        factory_name = type(relay.pin_factory).__name__
        relay.close()
    except Exception as exc:  # gpiozero raises a family of errors; all mean "cannot drive the relay"
        return Check("gpio", False, f"relay pin {config.door.relay_pin} ({model or 'not a Raspberry Pi'}): {exc}",
                     "run on a Raspberry Pi with the service user in the 'gpio' group, install lgpio "
                     "(apt install python3-lgpio), or set door.pin_factory = \"mock\" for a demo",
                     blocking=model is not None)
    where = f"{model}" if model else "not a Raspberry Pi"
    if model and "Raspberry Pi 5" in model and factory_name not in ("LGPIOFactory", "MockFactory"):
        return Check("gpio", False, f"{where}: pin factory {factory_name} cannot reach the Pi 5's header pins",
                     'apt install python3-lgpio and set door.pin_factory = "lgpio"', blocking=True)
    return Check("gpio", True, f"relay on pin {config.door.relay_pin} can be driven through {factory_name} ({where})")


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
    """The same answer the service acts on (facegate/access/clock.py): an untrusted clock refuses timed grants."""
    from facegate.access.clock import ClockProbe

    state = ClockProbe().state()
    if not state.trusted:
        return Check("clock", False, state.detail,
                     state.fix + "; signed commands older than 30 s are rejected as well")
    return Check("clock", True, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + f": {state.detail}")


CHECKS: list[Callable[[Config], Check]] = [check_numpy, check_models, check_runtime, check_gallery, check_camera,
                                           check_gpio, check_groups, check_broker, check_clock]


def _guarded(check: Callable[[Config], Check], config: Config) -> Check:
    name = check.__name__.removeprefix("check_")
    try:
        return check(config)
    except Exception as exc:  # doctor reports; it never dies with a traceback instead of the other checks
        return Check(name, False, f"the check itself failed: {type(exc).__name__}: {exc}",
                     "re-run deploy/install-pi.sh; if it persists, report this line", blocking=True)


def _check_panel(config: Config) -> Check:
    from facegate.panel.doctor import check_panel

    result = check_panel(config)
    return Check("panel", result.ok, result.detail, result.fix)


def _check_recognition(config: Config) -> Check:
    """The matcher works on this gallery: a face-sized probe through the embedder and the index gives
    similarities a cosine can have (the service reports recognition_error when it does not)."""
    import numpy as np

    from facegate.gallery.store import Gallery
    from facegate.vision.embedder import Embedder
    from facegate.vision.models import Manifest
    from facegate.vision.runtime import TFLiteModel

    if not config.gallery_path.is_file():
        return Check("recognition", False, f"{config.gallery_path} does not exist: no one can be recognised",
                     "enrol people or configure [sync]")
    try:
        entry = Manifest.load(config.models.dir).get("embedder", config.models.embedder)
        embedder = Embedder(TFLiteModel(entry, threads=1))
        probe = embedder.embed(np.full((112, 112, 3), 128, dtype=np.uint8))[0]
        with Gallery(config.gallery_path) as gallery:
            index = gallery.build_index()
        top = index.search(probe, k=1)
    except Exception as exc:  # what the frame loop would meet on every face
        return Check("recognition", False, f"matching fails: {type(exc).__name__}: {exc}",
                     "see the gallery check; remove the person named there and re-enrol, or re-sync the gallery")
    return Check("recognition", True, f"{embedder.dim}-value embeddings match {index.templates} templates"
                 + (f" (probe best {top[0].similarity:.3f})" if top else ""))


def _check_threshold(config: Config) -> Check:
    """The threshold the door derives for this gallery, and whether recognition.fpir is met at a usable TAR."""
    from facegate.wiring.threshold_info import gallery_threshold

    derived, _version = gallery_threshold(config)
    d = derived.as_dict()
    detail = (f"threshold {d['threshold']} ({d['source']}, {d['operating_point']}) for {d['templates']} templates; "
              f"per-comparison FAR {d['far']}, predicted chance per stranger visit {d['fpir_predicted']}, "
              f"TAR per frame {d['tar']}")
    if derived.warning:
        return Check("threshold", False, f"{detail}: {derived.warning}",
                     "raise recognition.fpir, or set recognition.far explicitly (docs/fairness.md)", blocking=False)
    return Check("threshold", True, detail)


CHECKS.append(_check_panel)  # OSDP key and port, Wiegand/OSDP card numbers (facegate/panel/doctor.py)
CHECKS.append(_check_threshold)  # recognition.fpir against the gallery's size (facegate/wiring/threshold_info.py)
CHECKS.append(_check_recognition)  # the matcher on this gallery (facegate/recognition/health.py reports it live)


def _check_negatives(config: Config) -> Check:
    """"This was not them" (docs/decision.md): how many grant faces are kept (biometric data, counted so an
    operator can see it) and how many negative templates the gallery holds."""
    from facegate.gallery.store import Gallery
    from facegate.recognition.grant_embeddings import FILE_NAME, GrantEmbeddings

    days = config.recognition.keep_grant_embeddings_days
    path = config.state_dir / FILE_NAME
    try:
        kept = 0
        if path.is_file():
            with GrantEmbeddings(path, days) as grants:
                grants.expire()  # with 0 days nothing may stay
                kept = grants.count()
        negatives = 0
        if config.gallery_path.is_file():
            with Gallery(config.gallery_path) as gallery:
                negatives = len(gallery.negatives())
    except Exception as exc:
        return Check("negatives", False, f"{path}: {type(exc).__name__}: {exc}",
                     f"check the state directory's permissions; deleting {path} only forgets recent grants' faces")
    return Check("negatives", True, f"{kept} grant faces kept (for {days:g} days, {path}), {negatives} negative "
                 "templates in the gallery")


CHECKS.append(_check_negatives)


def check_console(config: Config) -> Check:
    from facegate.web.doctor import check_console as check

    result = check(config)
    return Check("console", result.ok, result.detail, result.fix)


def check_sync(config: Config) -> Check:
    from facegate.sync.doctor import check_sync as check

    result = check(config)
    return Check("sync", result.ok, result.detail, result.fix)


CHECKS += [check_console, check_sync]  # [web] files, accounts, port (facegate/web/doctor.py); [sync] (sync/doctor.py)


def check_privacy(config: Config) -> Check:
    """Which protection the door's personal data has against a stolen card (facegate/privacy/doctor.py)."""
    from facegate.privacy.doctor import privacy_state

    state = privacy_state(config)
    return Check("privacy", state.ok, state.detail, state.fix)


CHECKS.append(check_privacy)


def run_checks(config: Config) -> list[Check]:
    return [_guarded(check, config) for check in CHECKS]
