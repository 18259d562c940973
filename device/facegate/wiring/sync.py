"""Fleet sync: only signed bundles, only with trusted keys configured (docs/sync.md); imported only when on."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from facegate.config import Config
from facegate.gallery.index import EmbeddingIndex

if TYPE_CHECKING:
    from facegate.sync.receiver import SyncReceiver

log = logging.getLogger("facegate.service")


def build_sync(config: Config, embedder_sha256: str, embedder_dim: int, emit: Callable[..., Any],
               on_applied: Callable[[EmbeddingIndex, dict[str, str | None], int], None]) -> SyncReceiver | None:
    has_source = config.sync.topic is not None or config.sync.url is not None
    if config.sync.public_keys and has_source:
        from facegate.sync.receiver import SyncReceiver

        return SyncReceiver(config, embedder_sha256, emit, on_applied=on_applied, embedder_dim=embedder_dim)
    if config.sync.public_keys:
        log.info("sync.public_keys without sync.topic or sync.url: bundles come only by 'facegate gallery apply'")
    elif has_source:
        log.warning("sync.topic/sync.url are set but sync.public_keys is empty: fleet sync is off")
    return None
