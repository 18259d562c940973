"""``facegate doctor``'s fleet-sync check: a door that trusts keys and knows where bundles come from.

The schema already refuses keys that are not Ed25519 and a ``sync.topic`` with MQTT off (exit 78); what it
allows but a door rarely means is reported here: a source without keys (sync silently off) and keys without a
source (bundles only by hand). The keys are parsed once more so the check says how many are trusted.
"""

from __future__ import annotations

from typing import NamedTuple

from facegate.config import Config


class SyncCheck(NamedTuple):
    """The result; facegate.doctor turns it into its ``Check`` (importing that here would be an import cycle)."""

    ok: bool
    detail: str
    fix: str = ""


def check_sync(config: Config) -> SyncCheck:
    sync = config.sync
    sources = []
    if sync.topic is not None:
        sources.append(f"topic {sync.topic}")
    if sync.url is not None:
        sources.append(f"url {sync.url}")
    if not sync.public_keys:
        if sources:
            return SyncCheck(False, f"sync.public_keys is empty, so fleet sync is off although {' and '.join(sources)}"
                                    " is set", "add the admin's public key (facegate gallery keygen: the .pub "
                                    "file) to sync.public_keys, or remove sync.topic / sync.url")
        return SyncCheck(True, "fleet sync off (no sync.public_keys)")
    from facegate.sync.keys import SyncKeyError, parse_public_key

    try:
        for i, text in enumerate(sync.public_keys):
            parse_public_key(text, f"sync.public_keys[{i}]")
    except SyncKeyError as exc:
        return SyncCheck(False, str(exc), "paste the base64 line of the admin's .pub file")
    if sync.topic is not None and not config.mqtt.enabled:  # the schema refuses this; kept for a direct caller
        return SyncCheck(False, "sync.topic is set but mqtt.enabled is false", "enable [mqtt] or use sync.url")
    keys = f"{len(sync.public_keys)} trusted key(s)"
    if not sources:
        return SyncCheck(True, f"{keys}, no sync.topic or sync.url: bundles only by 'facegate gallery apply'")
    return SyncCheck(True, f"{keys}; bundles from {' and '.join(sources)}")
