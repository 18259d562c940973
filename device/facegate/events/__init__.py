"""Events and remote control: the durable outbox, the event emitter, MQTT transport and signed commands.

Import the pieces from their modules (``facegate.events.mqtt`` pulls in paho-mqtt, which the rest does not need).
"""

from facegate.events.communicator import Command, Communicator, NullCommunicator
from facegate.events.emitter import EventEmitter
from facegate.events.ids import uuid7
from facegate.events.outbox import Outbox, OutboxError, OutboxFull

__all__ = [
    "Command",
    "Communicator",
    "EventEmitter",
    "NullCommunicator",
    "Outbox",
    "OutboxError",
    "OutboxFull",
    "uuid7",
]
