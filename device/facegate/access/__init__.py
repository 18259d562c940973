"""Access control: the door hardware (:mod:`.door`) and who may open it, when (:mod:`.policy`)."""

from facegate.access.door import Door, pin_factory_from_name
from facegate.access.policy import (
    AccessDecision,
    AccessPolicy,
    PersonPolicy,
    PolicyError,
    parse_schedule,
)

__all__ = [
    "AccessDecision",
    "AccessPolicy",
    "Door",
    "PersonPolicy",
    "PolicyError",
    "parse_schedule",
    "pin_factory_from_name",
]
