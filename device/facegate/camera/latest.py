"""A network camera read on its own thread into a one-slot buffer: the door always decides on the newest frame.

An IP camera sends frames at its own pace whether or not the door keeps up. Read in the door's loop, a door
slower than the stream works through an ever older backlog (TCP buffers it) or through frames broken by lost
packets (UDP overflows): the relay opens late, or for someone who already left. Here a reader thread decodes
every frame as it arrives and keeps only the newest one; ``read()`` hands out that frame once, waiting for the
next when the door has already seen it. Each frame carries its capture time (``StreamClock``: stream time
stamps mapped to the monotonic clock, else arrival), and a frame older than ``max_frame_age_ms`` when the door
asks for it is dropped and counted, never decided on.

A stream that ends, errs or sends garbage ends the reader thread with the error, and a stream that sends no
usable frame for ``stall_seconds`` is reported: both raise ``CameraError`` from ``read()``, and the camera
supervisor reopens the stream with back-off. The reader thread owns its connection and releases it itself when
it ends, so a close never races a decode in progress; ``close()`` waits for it (feeding the watchdog).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from facegate.camera.source import CameraError, Frame
from facegate.camera.stream_clock import StreamClock

log = logging.getLogger(__name__)

WAIT_SLICE_SECONDS = 0.5  # the longest a wait goes without feeding the watchdog


class Grabber(Protocol):
    """One connection to a stream. ``open()`` runs on the caller's thread, ``grab()``/``close()`` on the reader's."""

    def open(self) -> None:
        """Connect and check that this is a stream we can decode; ``CameraError`` saying why not."""
        ...

    def grab(self) -> tuple[np.ndarray, float | None] | None:
        """The next frame (RGB) and its stream time in seconds (None: the stream has none), or None for no frame
        this time (a part that was not a frame); ``CameraError`` when the stream ended, timed out or is garbage."""
        ...

    def interrupt(self) -> None:
        """Make a blocked ``grab()`` return soon (called from another thread); may do nothing."""
        ...

    def close(self) -> None: ...


@dataclass
class StreamStats:
    """Counters since the source was made (over all reconnects), for doctor, logs and tools/bench/bench_camera.py."""

    opens: int = 0
    frames_decoded: int = 0
    frames_delivered: int = 0
    frames_skipped: int = 0  # replaced in the slot by a newer frame before the door asked: never a backlog
    frames_stale: int = 0  # older than max_frame_age_ms when the door asked: dropped
    last_age_ms: float | None = None  # age of the last frame handed to the door
    width: int = 0
    height: int = 0
    fps: float = 0.0  # measured over the last connection's frames


@dataclass(frozen=True)
class _Slot:
    image: np.ndarray
    capture_mono: float
    capture_wall: float
    seq: int


class _Connection:
    """The state one reader thread shares with ``read()``; a new one per open, so a late old thread is harmless."""

    def __init__(self, grabber: Grabber, opened_at: float) -> None:
        self.grabber = grabber
        self.cond = threading.Condition()
        self.stop = threading.Event()
        self.slot: _Slot | None = None
        self.delivered_seq = 0
        self.error: CameraError | None = None
        self.last_fresh = opened_at  # the last time a frame young enough was handed out (or the open)
        self.first_arrival: float | None = None
        self.last_arrival: float | None = None
        self.thread: threading.Thread | None = None


class LatestFrameSource:
    def __init__(
        self,
        make_grabber: Callable[[], Grabber],
        name: str,
        max_frame_age_ms: float = 300.0,
        stall_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``name`` (with no credentials) names the stream in every message."""
        self.make_grabber = make_grabber
        self.name = name
        self.max_age = max_frame_age_ms / 1000.0
        self.stall_seconds = stall_seconds
        self.clock = clock
        self.heartbeat: Callable[[], None] = lambda: None  # set by the camera supervisor: the systemd watchdog
        self.stats = StreamStats()
        self._conn: _Connection | None = None
        self._index = 0
        self._lock = threading.Lock()  # the counters, written by the reader thread and read()

    def open(self) -> None:
        self.close()
        grabber = self.make_grabber()
        grabber.open()
        conn = _Connection(grabber, self.clock())
        conn.thread = threading.Thread(target=self._run, args=(conn,), name="camera-reader", daemon=True)
        with self._lock:
            self.stats.opens += 1
        self._conn = conn
        conn.thread.start()

    def _run(self, conn: _Connection) -> None:
        stream_clock = StreamClock()
        seq = 0
        error: CameraError | None = None
        try:
            while not conn.stop.is_set():
                got = conn.grabber.grab()
                if got is None:
                    continue
                arrival, wall = self.clock(), time.time()
                image, stream_time = got
                capture = stream_clock.capture_time(stream_time, arrival)
                seq += 1
                with conn.cond:
                    if conn.slot is not None and conn.slot.seq != conn.delivered_seq:
                        with self._lock:
                            self.stats.frames_skipped += 1
                    conn.slot = _Slot(image, capture, wall - (arrival - capture), seq)
                    if conn.first_arrival is None:
                        conn.first_arrival = arrival
                    conn.last_arrival = arrival
                    conn.cond.notify_all()
                with self._lock:
                    self.stats.frames_decoded += 1
                    if seq == 1:
                        self.stats.height, self.stats.width = image.shape[:2]
                    elif conn.first_arrival is not None and arrival > conn.first_arrival:
                        self.stats.fps = (seq - 1) / (arrival - conn.first_arrival)
        except CameraError as exc:
            error = exc
        except Exception as exc:  # a decoder may fail in any way; the stream is then reopened like any outage
            error = CameraError(f"{self.name}: {type(exc).__name__}: {exc}")
        finally:
            try:
                conn.grabber.close()
            except Exception as exc:  # closing a broken connection may fail too; it is gone either way
                log.debug("closing %s failed: %s", self.name, exc)
            with conn.cond:
                conn.error = error or CameraError(f"{self.name}: the stream ended")
                conn.cond.notify_all()

    def read(self) -> Frame | None:
        conn = self._conn
        if conn is None:
            raise CameraError("camera not open")
        while True:
            slot = self._next_slot(conn)
            age = self.clock() - slot.capture_mono
            if age > self.max_age:
                with self._lock:
                    self.stats.frames_stale += 1
                continue
            conn.last_fresh = self.clock()
            self._index += 1
            with self._lock:
                self.stats.frames_delivered += 1
                self.stats.last_age_ms = age * 1000.0
            return Frame(image=slot.image, ts=slot.capture_wall, index=self._index, mono_ts=slot.capture_mono)

    def _next_slot(self, conn: _Connection) -> _Slot:
        """The newest frame not yet handed out; waits for one, raising when the stream failed or stalled."""
        with conn.cond:
            while conn.slot is None or conn.slot.seq == conn.delivered_seq:
                if conn.error is not None:
                    raise conn.error
                quiet = self.clock() - conn.last_fresh
                if quiet >= self.stall_seconds:
                    raise CameraError(self._stall_message(conn))
                conn.cond.wait(min(WAIT_SLICE_SECONDS, self.stall_seconds - quiet))
                self.heartbeat()
            conn.delivered_seq = conn.slot.seq
            return conn.slot

    def _stall_message(self, conn: _Connection) -> str:
        if conn.last_arrival is None or conn.last_arrival <= conn.last_fresh:
            return f"{self.name}: no frame for {self.stall_seconds:g} s (camera.stall_seconds)"
        return (f"{self.name}: no frame younger than {self.max_age * 1000:.0f} ms (camera.max_frame_age_ms) for "
                f"{self.stall_seconds:g} s (camera.stall_seconds): frames arrive late")

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None or conn.thread is None:
            return
        conn.stop.set()
        try:
            conn.grabber.interrupt()
        except Exception as exc:
            log.debug("interrupting %s failed: %s", self.name, exc)
        deadline = self.clock() + self.stall_seconds + 5.0
        while conn.thread.is_alive() and self.clock() < deadline:
            conn.thread.join(WAIT_SLICE_SECONDS)
            self.heartbeat()
        if conn.thread.is_alive():  # a decoder stuck past its own timeout: it releases the stream when it returns
            log.warning("%s: the reader thread did not end within %.0f s; it will close the stream when it returns",
                        self.name, self.stall_seconds + 5.0)
