"""``fleet.toml``: the fleet server's own typed schema (not the door's ``config.py``; docs/fleet.md lists the keys).

The ``[mqtt]``, ``[web]`` and ``[models]`` tables reuse the door's sections, so a key means the same thing on both
sides (TLS files, password files, the loopback-or-TLS rule of the web console).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from facegate.config import ConfigError, ModelsConfig, MqttConfig, QualityConfig, Section, WebConfig
from facegate.validate.config_file import read_toml, validated
from facegate.validate.names import is_door_id, is_plain_topic

__all__ = ["FleetConfig", "load_fleet_config", "parse_fleet_config"]

class SyncSection(Section):
    # Each door reads its own gallery under <topic_prefix>/<device_id> (its [sync] topic), so a broker ACL can
    # give a door its own topic only, and a door holds only the people allowed through it.
    topic_prefix: str = "facegate/fleet/gallery"
    key_file: Path | None = None  # Ed25519 signing key (PEM, 0600); default <state_dir>/sync.key, made at first start
    chunk_bytes: int = Field(256 * 1024, ge=1024, le=256 * 1024 * 1024)
    publish_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    publish_workers: int = Field(8, ge=1, le=64)  # doors published to at once

    @field_validator("topic_prefix")
    @classmethod
    def _plain_topic(cls, value: str) -> str:
        if not is_plain_topic(value):
            raise ValueError(f"{value!r}: a plain topic (no wildcards, no leading/trailing '/')")
        return value


class CommandsSection(Section):
    key_file: Path | None = None  # Ed25519 command key (PEM, 0600); default <state_dir>/command.key


class StorageSection(Section):
    # None: SQLite at <state_dir>/fleet.db. "sqlite:///abs/path.db" or "postgresql://user@host/db".
    url: str | None = None
    retention_days: float = Field(365.0, gt=0, le=36500)  # journal rows older than this are deleted (daily)

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError(f"{value!r}: use sqlite:///PATH or postgresql://...")
        return value


class DoorsSection(Section):
    # Doors not heard from (status, events) for this long are shown offline even without their Last Will.
    stale_seconds: float = Field(180.0, ge=10, le=86400)
    # Optional allow-list of door ids; empty = any door that publishes under the prefix is discovered.
    allow: list[str] = []  # noqa: RUF012 (pydantic copies defaults)

    @field_validator("allow")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        for door in value:
            if not is_door_id(door):  # the door's own device_id rule
                raise ValueError(f"{door!r} is not a door id (1-64 of A-Z a-z 0-9 _ -)")
        return value


class FleetConfig(Section):
    state_dir: Path = Path("/var/lib/facegate-fleet")
    log_level: str = Field("info", pattern=r"^(debug|info|warning|error)$")
    mqtt: MqttConfig = MqttConfig(client_id="facegate-fleet")
    web: WebConfig = WebConfig(enabled=True, port=8444)
    models: ModelsConfig = ModelsConfig()
    quality: QualityConfig = QualityConfig()
    sync: SyncSection = SyncSection()
    commands: CommandsSection = CommandsSection()
    storage: StorageSection = StorageSection()
    doors: DoorsSection = DoorsSection()

    @model_validator(mode="after")
    def _web_rules(self) -> FleetConfig:
        # The fleet console is always on: apply the door console's transport rule (TLS off loopback) to it.
        WebConfig.model_validate({**self.web.model_dump(), "enabled": True})
        return self

    @property
    def sync_key_path(self) -> Path:
        return self.sync.key_file or self.state_dir / "sync.key"

    @property
    def command_key_path(self) -> Path:
        return self.commands.key_file or self.state_dir / "command.key"

    @property
    def storage_url(self) -> str:
        return self.storage.url or f"sqlite:///{self.state_dir / 'fleet.db'}"

    @property
    def gallery_path(self) -> Path:
        return self.state_dir / "admin.db"

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or "facegate-fleet"


def parse_fleet_config(data: dict[str, object], origin: str = "fleet config") -> FleetConfig:
    return validated(FleetConfig, data, origin, ConfigError)


def load_fleet_config(path: Path) -> FleetConfig:
    """Read and check ``fleet.toml`` (the same reader and messages as the door's config)."""
    return parse_fleet_config(read_toml(path, ConfigError), str(path))
