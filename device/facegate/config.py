"""The one typed configuration schema, loaded from TOML.

Unknown keys and bad values stop the service at start with the dotted key at fault (exit code 78, EX_CONFIG),
because a door that silently ignores a mistyped ``unlock_seconds`` is worse than one that refuses to start.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from facegate.errors import FacegateError
from facegate.validate.config_file import read_toml, validated
from facegate.validate.names import DOOR_ID_PATTERN, is_plain_topic

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
    # Network cameras (rtsp://, http:// MJPEG), docs/cameras.md: a frame older than this when the door is ready
    # for it is dropped (counted), never decided on; no usable frame for stall_seconds reopens the stream.
    max_frame_age_ms: float = Field(300.0, gt=0, le=60000)
    stall_seconds: float = Field(5.0, gt=0, le=300)
    open_timeout_seconds: float = Field(10.0, gt=0, le=120)
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    # A view (the door zone's crop, else the frame) whose long side exceeds 1.25x this is also searched in tiles
    # of this size, so faces far smaller than the frame are found (docs/cameras.md); 0 = never tile.
    detect_tile_px: int = Field(512, ge=0, le=4096)
    # The door zone [x, y, width, height] as fractions of the frame (0..1): only faces in it may open the door.
    # The frame is cropped to it BEFORE detection, so a smaller zone also gives the detector more pixels per face
    # (docs/decision.md, "Which face decides"). Default: the whole frame.
    roi: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)

    @field_validator("roi")
    @classmethod
    def _roi_inside_frame(cls, value: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        x, y, w, h = value
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in value):
            raise ValueError(f"{list(value)}: each of [x, y, width, height] must be a fraction of the frame, 0..1")
        if w <= 0 or h <= 0:
            raise ValueError(f"{list(value)}: width and height must be greater than 0")
        if x + w > 1.0 + 1e-9 or y + h > 1.0 + 1e-9:
            raise ValueError(f"{list(value)}: the zone must lie inside the frame (x + width <= 1, y + height <= 1)")
        return value


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
    # Explicit per-comparison FAR (the similarity comes from models/thresholds.json); None = the gallery-size
    # rule: the threshold at which a stranger visit matches anyone with chance `fpir` for the enrolled
    # templates, never looser than FAR 1e-4 (facegate/recognition/operating_point.py, docs/fairness.md).
    far: float | None = Field(None, gt=0, lt=1)
    fpir: float = Field(0.001, gt=0, lt=1)  # chance per stranger visit of matching anyone (when `far` is unset)
    # "every_group": the thresholds at which the worst demographic group of the reference set meets the FAR
    # (fitted with labels, never used at the door); "pooled": the one fitted on everyone together.
    operating_point: Literal["every_group", "pooled"] = "every_group"
    threshold: float | None = Field(None, ge=-1, le=1)  # overrides `far` and `fpir` when set
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
    # Two good frames of a track whose embeddings are less similar than this show two different faces: evidence
    # (votes, liveness) starts again (docs/decision.md; measured with tools/eval/measure_same_face.py).
    same_face_min_similarity: float = Field(0.6, ge=-1, le=1)
    max_faces: int = Field(3, ge=1, le=20)
    # Smallest face (longer side of its box, full-frame pixels) that may open the door: smaller faces are
    # further away than someone at the door. None = 15 % of the frame's shorter side (72 px at 640x480,
    # 162 px at 1920x1080); docs/decision.md, "Which face decides".
    min_face_px: float | None = Field(None, ge=0, le=4096)
    # Fair score calibration (models/fair_calibration.json, cluster-based score normalisation): off by default
    # because on lfw_dev it did not narrow the women/men false-match gap (docs/fairness.md); true = calibrated
    # scores with their own thresholds, everywhere a similarity is decided.
    fair_calibration: bool = False
    # "This was not them" (docs/decision.md): the embedding behind each grant is kept this long so an admin can
    # mark the grant as wrong (0 = keep none; never longer than journal.retention_days), and a face votes for a
    # person with negative templates only when its cosine to the person beats its cosine to their closest
    # negative by this margin (measured with tools/eval/eval_negatives.py).
    keep_grant_embeddings_days: float = Field(7.0, ge=0)
    negative_margin: float = Field(0.02, ge=-1, le=2)
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
    # Ask for a small head turn to a random side: "doubt" when the texture score is in the model's doubt band,
    # "always" for every face not clearly an attack, "off" never (docs/liveness.md).
    challenge: Literal["off", "doubt", "always"] = "doubt"
    challenge_timeout_seconds: float = Field(1.5, gt=0, le=10)  # frame time from the prompt to the turn
    challenge_min_turn: float = Field(0.15, gt=0, le=1)  # nose across the face outline, half face widths

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
    # Home Assistant unlock mode (docs/mqtt.md, "Home Assistant"): opt-in, off while no code hash is configured.
    # Hashes come from `facegate code hash`; the codes themselves are never stored on the door.
    home_assistant_codes: list[str] = []
    home_assistant_code_hashes_file: Path | None = None  # one hash per line; '#' starts a comment
    home_assistant_code_format: str = r"^\d{6,12}$"  # what HA's keypad accepts (its lock's code_format)
    home_assistant_lockdown: bool = True  # offer the lockdown switch in that mode (trusts the broker ACL)

    @field_validator("home_assistant_codes")
    @classmethod
    def _code_hashes(cls, value: list[str]) -> list[str]:
        # Checked at load: a pasted half-hash would otherwise refuse every code at the door.
        from facegate.validate.code_hash import CodeHashError, parse_code_hash

        for i, text in enumerate(value):
            try:
                parse_code_hash(text)
            except CodeHashError as exc:
                raise ValueError(f"[{i}]: {exc}") from None
        return value

    @field_validator("home_assistant_code_format")
    @classmethod
    def _regex(cls, value: str) -> str:
        import re

        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value


class OutboxConfig(Section):
    max_events: int = Field(100_000, ge=10)
    flush_timeout_seconds: float = Field(10.0, ge=0)


class AccessConfig(Section):
    door_groups: list[str] = []  # groups allowed at this door; empty = everyone enrolled
    lockdown_groups: list[str] = ["security"]  # who may still enter during lockdown
    # IANA zone key (e.g. "Europe/Berlin") in which person schedules are read; None = the device's local zone.
    timezone: str | None = None
    # "auto": a grant that depends on a validity date or schedule is refused (clock_untrusted) while the system
    # clock is not synchronised; "off": the clock is always believed (docs/decision.md, "Trusted time").
    clock_check: Literal["auto", "off"] = "auto"

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
    # What MQTT manifests (unsigned) can make the door download and store, per hour (facegate/sync/guard.py).
    max_download_bytes_per_hour: int = Field(256 * 1024 * 1024, ge=1024 * 1024, le=2**40)

    @field_validator("public_keys")
    @classmethod
    def _raw_ed25519_keys(cls, value: list[str]) -> list[str]:
        # Checked at load: a mistyped key would otherwise reject every bundle with "unknown_key" much later.
        from facegate.validate.ed25519 import SyncKeyError, parse_public_key

        for i, text in enumerate(value):
            try:
                parse_public_key(text, f"[{i}]")
            except SyncKeyError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("topic")
    @classmethod
    def _plain_topic(cls, value: str | None) -> str | None:
        if value is not None and not is_plain_topic(value):
            raise ValueError(f"{value!r} must be a plain topic: no wildcards, no leading or trailing '/'")
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith(("http://", "https://")):
            raise ValueError(f"{value!r} must be an http:// or https:// URL")
        return value


class JournalConfig(Section):
    """The access journal (facegate/journal): local history of every event, apart from the outbox."""

    enabled: bool = True
    path: Path = Path("journal.db")  # relative paths are under state_dir
    max_events: int = Field(1_000_000, ge=1)  # the oldest go first beyond this
    retention_days: float = Field(365.0, gt=0)  # and anything older than this
class PrivacyConfig(Section):
    """Encryption at rest of everything personal the door stores (facegate/privacy, docs/privacy.md)."""

    encrypt: bool = True  # gallery, journal and outbox values sealed with AES-GCM
    # Where the key lives; "auto" takes the strongest available: systemd-creds, rpi-otp, file.
    key_source: Literal["auto", "systemd-creds", "rpi-otp", "file"] = "auto"
    key_file: Path = Path("privacy.key")  # for "file" (and "auto"'s last resort); relative paths under state_dir
    require_consent: bool = False  # refuse enrolment (CLI, console, bulk, bundles) of a person without consent
    # Remove people this many days after their valid_until (None: never), with their journal rows if set below.
    retention_days_after_validity: float | None = Field(None, gt=0)
    retention_purge_journal: bool = True


def _fits_format(fmt: str, facility_code: int) -> None:
    top = 255 if fmt == "26" else 65535  # H10301: 8-bit facility; 34-bit: 16-bit facility
    if not 0 <= facility_code <= top:
        raise ValueError(f"facility_code {facility_code} does not fit the {fmt}-bit format (0-{top})")


class OsdpConfig(Section):
    """The door as an OSDP peripheral device (a card reader) on RS-485 (facegate/panel/osdp_pd.py, docs/panels.md)."""

    port: str  # serial device of the RS-485 adapter, e.g. /dev/ttyUSB0 or /dev/serial0
    baud: Literal[9600, 19200, 38400, 57600, 115200, 230400] = 9600
    address: int = Field(1, ge=0, le=126)
    scbk_file: Path  # the Secure Channel Base Key, 32 hex digits; written by install mode
    install_mode: bool = False  # commissioning only: accept the panel's default key once, store the key it sets
    decision: Literal["door", "panel"] = "door"  # "door": only people this door admits; "panel": the panel decides
    format: Literal["26", "34"] = "26"  # card data sent as raw Wiegand bits of this format
    facility_code: int = 0
    relay: bool = False  # the panel's output 0 commands drive the door relay
    tamper_pin: int | str | None = None  # optional case switch (closed = intact), reported as OSDP tamper

    @model_validator(mode="after")
    def _facility_fits(self) -> OsdpConfig:
        _fits_format(self.format, self.facility_code)
        return self


class WiegandConfig(Section):
    """Wiegand output to a panel's reader port (facegate/panel/wiegand_tx.py, docs/panels.md)."""

    data0_pin: int | str
    data1_pin: int | str
    format: Literal["26", "34"] = "26"  # "26": H10301; "34": 16-bit facility + 16-bit card
    facility_code: int = 0
    pulse_width_us: int = Field(100, ge=20, le=500)
    pulse_interval_us: int = Field(2000, ge=200, le=20_000)  # leading edge to leading edge
    driver: Literal["open_collector", "direct"] = "open_collector"  # open collector: GPIO high pulls the line low
    decision: Literal["door", "panel"] = "door"

    @model_validator(mode="after")
    def _consistent(self) -> WiegandConfig:
        _fits_format(self.format, self.facility_code)
        if self.pulse_interval_us < self.pulse_width_us + 100:
            raise ValueError("pulse_interval_us must exceed pulse_width_us by at least 100")
        if self.data0_pin == self.data1_pin:
            raise ValueError("data0_pin and data1_pin must be different pins")
        return self


class WebConfig(Section):
    """The device's web console and door screen (facegate/web; docs/console.md)."""

    enabled: bool = False
    bind: str = "127.0.0.1"
    port: int = Field(8443, ge=1, le=65535)
    tls_cert_file: Path | None = None  # PEM; deploy/web-cert.sh makes a self-signed pair
    tls_key_file: Path | None = None
    # Plain HTTP anywhere but loopback sends passwords and session cookies in the clear: only on request.
    allow_insecure_http: bool = False
    blur_strangers: bool = True  # faces not matching anyone enrolled are blurred in every view but capture
    session_idle_minutes: float = Field(30.0, gt=0, le=24 * 60)
    stream_fps: float = Field(8.0, gt=0, le=30)  # live-view JPEG rate (encoded once, shared by all viewers)
    max_stream_clients: int = Field(4, ge=1, le=64)
    # The console's address as people reach it (Home Assistant's "Visit" link); default: from bind, port and TLS.
    public_url: str | None = Field(None, pattern=r"^https?://\S+$")

    @model_validator(mode="after")
    def _secure_transport(self) -> WebConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("web.tls_cert_file and web.tls_key_file must be set together")
        if self.enabled and self.tls_cert_file is None and not self.allow_insecure_http:
            from facegate.validate.netaddr import is_loopback_host

            if not is_loopback_host(self.bind):
                raise ValueError(f"web.bind: {self.bind!r} is not loopback and no TLS is configured; set "
                                 "web.tls_cert_file/tls_key_file (deploy/web-cert.sh) or web.allow_insecure_http")
        return self


class Config(Section):
    device_id: str = Field("door", pattern=rf"^{DOOR_ID_PATTERN}$")
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
    journal: JournalConfig = JournalConfig()
    osdp: OsdpConfig | None = None  # [osdp]: an OSDP reader for the site's panel; absent = off
    wiegand: WiegandConfig | None = None  # [wiegand]: Wiegand output; absent = off
    web: WebConfig = WebConfig()
    privacy: PrivacyConfig = PrivacyConfig()

    @model_validator(mode="after")
    def _sync_topic_needs_mqtt(self) -> Config:
        if self.sync.public_keys and self.sync.topic is not None and not self.mqtt.enabled:
            raise ValueError("sync.topic uses the [mqtt] broker, but mqtt.enabled is false (or use sync.url)")
        return self

    @model_validator(mode="after")
    def _grant_embeddings_within_journal(self) -> Config:
        if self.recognition.keep_grant_embeddings_days > self.journal.retention_days:
            raise ValueError(f"recognition.keep_grant_embeddings_days ({self.recognition.keep_grant_embeddings_days:g})"
                             f" must not exceed journal.retention_days ({self.journal.retention_days:g}): a grant's "
                             "embedding is kept only while its journal entry is")
        return self

    @property
    def gallery_path(self) -> Path:
        return self.gallery.path if self.gallery.path.is_absolute() else self.state_dir / self.gallery.path

    @property
    def journal_path(self) -> Path:
        return self.journal.path if self.journal.path.is_absolute() else self.state_dir / self.journal.path


def parse_config(data: dict[str, object], origin: str = "config") -> Config:
    return validated(Config, data, origin, ConfigError)


def load_config(path: Path, overrides: dict[str, object] | None = None) -> Config:
    """Read TOML and validate; ``overrides`` are dotted keys from the command line (e.g. camera.source)."""
    data = read_toml(path, ConfigError)
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
