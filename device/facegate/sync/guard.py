"""What an unsigned MQTT manifest can make a door do: manifests that failed, and a download budget per hour.

The manifest is unsigned, so anyone allowed to publish on the sync topic can announce a bundle and retain junk
chunks for it. Each attempt costs the door the bundle's size in downloads and fsynced chunk files (64 chunks
of 256 KiB: 16 MiB), and an SD card wears with every write. Two bounds:

* a manifest whose chunks did not add up to its bundle is remembered as failed (by the digest of the parsed
  manifest, persisted, the :data:`REMEMBERED_FAILED` newest) and its chunks are never fetched again, whether
  its retained copy comes back (every reconnection and restart) or someone publishes it again: a live
  re-publication is exactly what an attacker with publish rights would send. The admin's way out after a
  forged chunk is a new export (``facegate gallery export --version N``), whose manifest differs;
* every chunk stored is charged to a token bucket of ``sync.max_download_bytes_per_hour`` bytes that refills
  at that rate; when it runs dry the door stops fetching chunks until it has refilled enough for the next one.
  A legitimate bundle larger than the budget still arrives, over more than an hour (chunks already stored
  are kept).

The state lives in ``state_dir/sync/guard.json`` (0600), written when a manifest fails, when the budget runs
dry and at stop, so a restart neither forgets a failed manifest nor hands out a fresh budget.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from facegate.base.private_files import write_private
from facegate.sync.chunks import Manifest

__all__ = ["REMEMBERED_FAILED", "SyncGuard", "manifest_digest"]

log = logging.getLogger(__name__)

REMEMBERED_FAILED = 256


def manifest_digest(manifest: Manifest) -> str:
    """SHA-256 of the manifest as parsed (so the same content always gives the same digest)."""
    return hashlib.sha256(manifest.to_bytes()).hexdigest()


class SyncGuard:
    """Failed manifests and the hourly download budget of one door; thread-safe."""

    def __init__(self, path: Path, max_bytes_per_hour: int, *, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        if max_bytes_per_hour < 1:
            raise ValueError("max_bytes_per_hour must be at least 1")
        self.path = Path(path)
        self.capacity = float(max_bytes_per_hour)
        self._rate = self.capacity / 3600.0  # bytes per second
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._failed: OrderedDict[str, None] = OrderedDict()
        self._tokens = self.capacity
        self._load()
        self._last = clock()

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            saved = json.loads(self.path.read_bytes())
            failed = [str(d) for d in saved["failed"]]
            tokens, wall_ts = float(saved["budget_bytes"]), float(saved["wall_ts"])
            if not (tokens >= 0.0 and wall_ts == wall_ts):  # NaN is not equal to itself
                raise ValueError("budget out of range")
        except (OSError, ValueError, TypeError, KeyError) as exc:
            # Safe side: an empty budget (it refills within the hour); failed manifests are re-learnt.
            log.warning("%s: cannot read the sync download guard (%s); starting with an empty budget", self.path, exc)
            self._tokens = 0.0
            return
        for digest in failed[-REMEMBERED_FAILED:]:
            self._failed[digest] = None
        self._tokens = min(self.capacity, tokens + max(0.0, self._wall() - wall_ts) * self._rate)

    def save(self) -> None:
        with self._lock:
            self._refill()
            doc = {"failed": list(self._failed), "budget_bytes": self._tokens, "wall_ts": self._wall()}
        try:
            write_private(self.path, json.dumps(doc).encode())
        except OSError as exc:  # the bounds still hold for this run
            log.error("%s: cannot save the sync download guard: %s", self.path, exc)

    # ------------------------------------------------------------------ failed manifests

    def failed(self, digest: str) -> bool:
        with self._lock:
            return digest in self._failed

    def remember_failed(self, digest: str) -> None:
        with self._lock:
            self._failed[digest] = None
            self._failed.move_to_end(digest)
            while len(self._failed) > REMEMBERED_FAILED:
                self._failed.popitem(last=False)
        self.save()

    # ------------------------------------------------------------------ the budget

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + max(0.0, now - self._last) * self._rate)
        self._last = now

    def available(self) -> float:
        """Bytes that may be downloaded now."""
        with self._lock:
            self._refill()
            return self._tokens

    def charge(self, nbytes: int) -> None:
        with self._lock:
            self._refill()
            self._tokens = max(0.0, self._tokens - nbytes)

    def seconds_until(self, nbytes: int) -> float:
        """How long until ``nbytes`` may be downloaded (0: now)."""
        with self._lock:
            self._refill()
            return max(0.0, (min(float(nbytes), self.capacity) - self._tokens) / self._rate)
