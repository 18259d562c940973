"""Names that travel in MQTT topics: a door's id, and a plain topic (no wildcards, no empty level at either end).

The door's config, the fleet's config and registry, and the bundle publisher check the same rules here, so a door
id the fleet admits is always one a door can have, and a topic any of them accepts is one a broker can publish
to and a subscriber cannot widen (``+`` and ``#`` are wildcards; MQTT forbids U+0000 in a topic).
"""

from __future__ import annotations

import re

__all__ = ["DOOR_ID", "DOOR_ID_PATTERN", "is_door_id", "is_plain_topic"]

DOOR_ID_PATTERN = r"[A-Za-z0-9_-]{1,64}"  # a door's ``device_id``: one topic level, safe in file names too
DOOR_ID = re.compile(DOOR_ID_PATTERN)


def is_door_id(value: str) -> bool:
    return DOOR_ID.fullmatch(value) is not None


def is_plain_topic(value: str) -> bool:
    """A topic to publish to or subscribe to exactly: not empty, no ``+``/``#``/NUL, no leading or trailing '/'."""
    return bool(value) and not any(c in value for c in "+#\x00") and not value.startswith("/") \
        and not value.endswith("/")
