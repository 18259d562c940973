"""Shared JPEG encoders for the live views: each new frame is encoded once per view, whatever the viewers.

One thread per view ("live": strangers blurred per config; "capture": nothing blurred, admin only, for the
person being enrolled) runs only while someone watches, at most ``fps`` times a second. Viewers wait for a
newer JPEG than the one they sent and skip whatever they missed, so a slow viewer sees fewer frames and holds
up nobody; one that cannot take a frame within the socket timeout is dropped by its request thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from facegate.web.live import LiveFrame, LiveSlot
from facegate.web.priority import lower_this_thread
from facegate.web.render import render_jpeg

log = logging.getLogger(__name__)


class Encoder:
    def __init__(self, slot: LiveSlot, render: Callable[[LiveFrame], bytes], fps: float, name: str) -> None:
        self._slot, self._render, self._period, self._name = slot, render, 1.0 / fps, name
        self._cond = threading.Condition()
        self._jpeg: bytes | None = None
        self._seq = 0
        self._watchers = 0
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.encoded = 0

    def attach(self) -> None:
        with self._cond:
            self._watchers += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"facegate-web-{self._name}", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def detach(self) -> None:
        with self._cond:
            self._watchers = max(0, self._watchers - 1)

    @property
    def watchers(self) -> int:
        return self._watchers

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def wait_jpeg(self, after_seq: int, timeout: float) -> tuple[int, bytes] | None:
        """A JPEG newer than ``after_seq`` (waiting up to ``timeout``), or None."""
        with self._cond:
            self._cond.wait_for(lambda: self._stopped or (self._jpeg is not None and self._seq > after_seq),
                                timeout=timeout)
            if self._jpeg is None or self._seq <= after_seq:
                return None
            return self._seq, self._jpeg

    def _run(self) -> None:
        lower_this_thread()
        last = 0
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopped or self._watchers > 0)
                if self._stopped:
                    return
            frame = self._slot.wait_newer(last, timeout=1.0)
            if frame is None:
                continue
            started = time.monotonic()
            last = frame.seq
            try:
                jpeg = self._render(frame)
            except Exception:  # a bad frame must not end the view
                log.exception("could not render frame %d", frame.seq)
                continue
            self.encoded += 1
            with self._cond:
                self._seq += 1
                self._jpeg = jpeg
                self._cond.notify_all()
            time.sleep(max(0.0, self._period - (time.monotonic() - started)))


def make_encoders(slot: LiveSlot, name_of: Callable[[str], str | None], blur: bool, fps: float) -> dict[str, Encoder]:
    return {
        "live": Encoder(slot, lambda f: render_jpeg(f, name_of, blur), fps, "live"),
        "capture": Encoder(slot, lambda f: render_jpeg(f, name_of, False), fps, "capture"),
    }
