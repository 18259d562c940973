"""The one typed configuration schema, loaded from TOML.

Unknown keys and bad values stop the service at start with the dotted key at fault (exit code 78, EX_CONFIG),
because a door that silently ignores a mistyped ``unlock_seconds`` is worse than one that refuses to start.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from facegate.errors import FacegateError

EXIT_CONFIG = 78


class ConfigError(FacegateError):
    """The configuration is invalid; the message names the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CameraConfig(Section):
    # "picamera2", a V4L2 index ("0"), a device path, a video file, an rtsp:// or http:// URL, or "replay:DIR".
    source: str = "picamera2"
    fps: float = Field(15.0, gt=0, le=120)
    width: int = Field(640, ge=64, le=4096)
    height: int = Field(480, ge=64, le=4096)
    loop: bool = False  # replay only: start again when the files run out
    reopen_backoff_max_seconds: float = Field(30.0, gt=0)


class ModelsConfig(Section):
    dir: Path | None = None  # default: the shipped models/ (or $FACEGATE_MODELS)
    threads: int = Field(2, ge=1, le=16)
    detector: str | None = None
    embedder: str | None = None
    five_point: bool = True
    flip_fusion: bool = False


class QualityConfig(Section):
    min_face_px: float = Field(40.0, ge=0)
    min_sharpness: float = Field(15.0, ge=0)
    min_brightness: float = Field(40.0, ge=0, le=255)
    max_brightness: float = Field(220.0, ge=0, le=255)
    max_abs_yaw_deg: float = Field(40.0, ge=0, le=90)
    max_abs_pitch_deg: float = Field(35.0, ge=0, le=90)
    min_score: float = Field(0.6, ge=0, le=1)


class RecognitionConfig(Section):
    far: float = Field(1e-4, gt=0, lt=1)  # operating point; the similarity comes from models/thresholds.json
    threshold: float | None = Field(None, ge=-1, le=1)  # overrides `far` when set
    min_margin: float = Field(0.05, ge=0, le=2)  # best identity must beat the runner-up by this much
    window_frames: int = Field(5, ge=1, le=100)  # n: frames of a track considered together
    required_frames: int = Field(3, ge=1, le=100)  # k: frames in the window that must agree on one identity
    unknown_after_frames: int = Field(5, ge=1, le=1000)
    cooldown_seconds: float = Field(10.0, ge=0)  # one visit gives one event
    track_iou: float = Field(0.3, gt=0, lt=1)
    track_timeout_seconds: float = Field(1.0, gt=0)
    # A decided track passes to a new person (who then gets a decision of their own) when a whole window of
    # good frames is all below the similarity with this FAR to the decided person, or matches someone else:
    # the next person in a queue steps into the same spot before the track could time out.
    new_person_far: float = Field(0.01, gt=0, lt=1)
    max_faces: int = Field(3, ge=1, le=20)
    quality: QualityConfig = QualityConfig()

    @model_validator(mode="after")
    def _k_within_n(self) -> RecognitionConfig:
        if self.required_frames > self.window_frames:
            raise ValueError("recognition.required_frames must not exceed recognition.window_frames")
        return self


class LivenessConfig(Section):
    """Presentation-attack detection (photos, screens): see facegate/liveness and models/README.md.

    ``operating_point`` picks the texture threshold stored with the antispoof model; each was set on the
    training subjects' live presentations (leave-one-subject-out) to reject this share of real people:
    "secure" 5%, "balanced" 2%, "convenient" 1%. Cross-validated on nuaa_dev (per presentation of 5 frames):
    see models/README.md for the measured APCER/BPCER of each.
    """

    enabled: bool = True
    operating_point: Literal["secure", "balanced", "convenient"] = "balanced"
    model: str | None = None  # manifest name of the antispoof model; None = the role's default
    min_frames: int = Field(3, ge=1, le=30)  # quality-passing frames before a decision (3 = 200 ms at 15 fps)
    window_frames: int = Field(8, ge=1, le=100)  # frames whose texture scores are averaged
    active: bool = True  # veto tracks that moved but stayed planar (a photo or screen being moved)

    @model_validator(mode="after")
    def _min_within_window(self) -> LivenessConfig:
        if self.min_frames > self.window_frames:
            raise ValueError("liveness.min_frames must not exceed liveness.window_frames")
        return self


class GalleryConfig(Section):
    path: Path = Path("gallery.db")  # relative paths are under state_dir


class DoorConfig(Section):
    relay_pin: int | str = 17
    relay_active_high: bool = True
    fail_safe: bool = False  # False = fail-secure: a de-energised relay means locked
    unlock_seconds: float = Field(5.0, gt=0, le=600)
    contact_pin: int | str | None = None
    contact_type: Literal["NO", "NC"] = "NC"  # NC: the contact is closed while the door is closed
    held_open_seconds: float = Field(30.0, gt=0)
    exit_pin: int | str | None = None
    exit_pull_up: bool = True
    buzzer_pin: int | str | None = None
    led_pin: int | str | None = None
    pin_factory: str | None = None  # e.g. "mock" for demos; default: gpiozero's own choice


class MqttConfig(Section):
    enabled: bool = True
    host: str = "localhost"
    port: int = Field(1883, ge=1, le=65535)
    # 5 by default: only MQTT 5 tells a subscriber that a live message was published retained, and lets the
    # door cap the packet size it receives (docs/mqtt.md, "Security"). "3.1.1" for brokers without MQTT 5.
    protocol: Literal["3.1.1", "5"] = "5"
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_seconds: int = Field(30, ge=5, le=3600)
    topic_prefix: str = "facegate"
    discovery: bool = True
    discovery_prefix: str = "homeassistant"


class CommandsConfig(Section):
    hmac_key: str | None = None  # hex; prefer hmac_key_file
    hmac_key_file: Path | None = None
    ed25519_public_keys: list[str] = []  # base64 raw 32-byte public keys
    max_age_seconds: float = Field(30.0, gt=0, le=3600)


class OutboxConfig(Section):
    max_events: int = Field(100_000, ge=10)
    flush_timeout_seconds: float = Field(10.0, ge=0)


class AccessConfig(Section):
    door_groups: list[str] = []  # groups allowed at this door; empty = everyone enrolled
    lockdown_groups: list[str] = ["security"]  # who may still enter during lockdown
    # IANA zone key (e.g. "Europe/Berlin") in which person schedules are read; None = the device's local zone.
    timezone: str | None = None

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str | None) -> str | None:
        # Checked at load so a typo stops the service (EX_CONFIG) instead of denying everyone at the door.
        if value is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r} (expected an IANA key like 'Europe/Berlin')") from None
        return value


class SyncConfig(Section):
    """Fleet gallery sync (docs/sync.md): signed bundles pulled from an MQTT topic and/or an HTTP(S) URL."""

    # base64 raw 32-byte Ed25519 public keys; a bundle signed by any of them is accepted. Empty: sync is off.
    # Keys without topic/url: bundles arrive only through `facegate gallery apply` (an offline door).
    public_keys: list[str] = []
    topic: str | None = None  # bundles under <topic>/manifest and <topic>/chunk/<i> (retained); uses [mqtt]
    url: str | None = None  # http(s) URL of a bundle file, polled with If-None-Match
    poll_seconds: float = Field(300.0, ge=1, le=86_400)
    max_bundle_bytes: int = Field(64 * 1024 * 1024, ge=1024, le=2**31)

    @field_validator("public_keys")
    @classmethod
    def _raw_ed25519_keys(cls, value: list[str]) -> list[str]:
        # Checked at load: a mistyped key would otherwise reject every bundle with "unknown_key" much later.
        from facegate.sync.keys import SyncKeyError, parse_public_key

        for i, text in enumerate(value):
            try:
                parse_public_key(text, f"[{i}]")
            except SyncKeyError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("topic")
    @classmethod
    def _plain_topic(cls, value: str | None) -> str | None:
        if value is not None and (not value or "+" in value or "#" in value or value.startswith("/")
                                  or value.endswith("/") or "\x00" in value):
            raise ValueError(f"{value!r} must be a plain topic: no wildcards, no leading or trailing '/'")
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith(("http://", "https://")):
            raise ValueError(f"{value!r} must be an http:// or https:// URL")
        return value


class Config(Section):
    device_id: str = Field("door", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    state_dir: Path = Path("/var/lib/facegate")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    camera: CameraConfig = CameraConfig()
    models: ModelsConfig = ModelsConfig()
    recognition: RecognitionConfig = RecognitionConfig()
    liveness: LivenessConfig = LivenessConfig()
    gallery: GalleryConfig = GalleryConfig()
    door: DoorConfig = DoorConfig()
    mqtt: MqttConfig = MqttConfig()
    commands: CommandsConfig = CommandsConfig()
    outbox: OutboxConfig = OutboxConfig()
    access: AccessConfig = AccessConfig()
    sync: SyncConfig = SyncConfig()

    @model_validator(mode="after")
    def _sync_topic_needs_mqtt(self) -> Config:
        if self.sync.public_keys and self.sync.topic is not None and not self.mqtt.enabled:
            raise ValueError("sync.topic uses the [mqtt] broker, but mqtt.enabled is false (or use sync.url)")
        return self

    @property
    def gallery_path(self) -> Path:
        return self.gallery.path if self.gallery.path.is_absolute() else self.state_dir / self.gallery.path


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{key}: {msg}")
    return "; ".join(lines)


def parse_config(data: dict[str, object], origin: str = "config") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {_describe(exc)}") from None


def load_config(path: Path, overrides: dict[str, object] | None = None) -> Config:
    """Read TOML and validate; ``overrides`` are dotted keys from the command line (e.g. camera.source)."""
    try:
        data: dict[str, object] = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    # Found by the config fuzzer (tests/test_fuzz.py): these escaped as tracebacks instead of exit code 78.
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: arrays or tables nested too deeply") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{path}: {part} must be a table")
            node = child
        node[leaf] = value
    return parse_config(data, str(path))
