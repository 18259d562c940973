"""OSDP link state as events: a pure state machine fed with samples of LibOSDP's own view of the link.

Events (``emit(type, **fields)``):

- ``osdp_online`` {secure_channel}: the panel polls us; ``secure_channel`` true once the session is encrypted
  with the configured key. With Secure Channel required (always, outside install mode) the event waits for it.
- ``osdp_offline`` {reason: "no_polls", seconds_online}: the panel stopped polling (LibOSDP's PD times out
  after 8 s of silence): a cut cable, a panel restart, a wrong address.
- ``osdp_secure_channel_failed`` {detail}: the panel talks to us but no secure session came up within
  ``SC_GRACE_SECONDS``: its key differs from ``scbk_file`` (or it does not use Secure Channel). Reported once
  per attempt; the panel's own retry brings another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

SC_GRACE_SECONDS = 3.0


@dataclass
class LinkState:
    online: bool = False  # as reported by the last event
    secure_channel: bool = False
    since: float | None = None
    sc_failed: bool = False


class LinkMonitor:
    def __init__(self, emit: Callable[..., object], require_secure_channel: bool) -> None:
        self._emit = emit
        self._require_sc = require_secure_channel
        self.state = LinkState()
        self._talking_since: float | None = None  # LibOSDP online, no usable session yet

    def sample(self, now: float, online: bool, secure: bool) -> None:
        s = self.state
        if not online:
            self._talking_since = None
            s.sc_failed = False
            if s.online:
                seconds = None if s.since is None else round(now - s.since, 1)
                s.online, s.secure_channel, s.since = False, False, now
                self._emit("osdp_offline", reason="no_polls", seconds_online=seconds)
            return
        usable = secure or not self._require_sc
        if usable:
            self._talking_since = None
            if not s.online or s.secure_channel != secure:
                s.online, s.secure_channel, s.since, s.sc_failed = True, secure, now, False
                self._emit("osdp_online", secure_channel=secure)
            return
        # Online at the protocol level, but Secure Channel is required and not (yet) up.
        if s.online:  # the session dropped while polling goes on (a panel re-keying, or a reset)
            s.online, s.secure_channel, s.since = False, False, now
            self._emit("osdp_offline", reason="secure_channel_lost", seconds_online=None)
        if self._talking_since is None:
            self._talking_since = now
        elif not s.sc_failed and now - self._talking_since >= SC_GRACE_SECONDS:
            s.sc_failed = True
            self._emit("osdp_secure_channel_failed",
                       detail="the panel polls but no secure channel came up: its key differs from "
                              "osdp.scbk_file, or it does not use OSDP Secure Channel")
