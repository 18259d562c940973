"""Maps a stream's own frame times (RTP / container time stamps) onto this machine's monotonic clock.

A camera stamps each frame when it is captured; the stamps arrive here with a network and decoder delay that
varies from frame to frame and grows without bound when a reader falls behind. The smallest ``arrival -
stream_time`` seen is the delay of the frame that came through fastest: taking it as the offset makes
``capture = stream_time + offset`` an estimate that is never later than the truth by more than that fastest
frame's delay, and that shows a backlog as age (a frame that waited in a buffer has a large ``arrival -
stream_time``). The minimum is taken over a sliding window (``window_seconds``) so that a camera clock that runs
a little slow or fast (a few hundred ppm) is followed; a jump in stream time (a reconnect, a camera reboot, a
stream that loops) starts over.

Without stream time stamps (MJPEG over HTTP) the capture time is the arrival time.
"""

from __future__ import annotations

from collections import deque

# Stream time that moves backwards, or forwards by more than this relative to the arrival clock, is a new timeline.
JUMP_SECONDS = 5.0


class StreamClock:
    def __init__(self, window_seconds: float = 30.0) -> None:
        self.window = window_seconds
        self._samples: deque[tuple[float, float]] = deque()  # (arrival, arrival - stream_time), offsets ascending
        self._last: tuple[float, float] | None = None  # (stream_time, arrival) of the previous frame

    def capture_time(self, stream_time: float | None, arrival: float) -> float:
        """The frame's capture instant on the monotonic clock; never later than its arrival."""
        if stream_time is None:
            return arrival
        if self._last is not None:
            last_stream, last_arrival = self._last
            step = stream_time - last_stream
            if step < 0 or step - (arrival - last_arrival) > JUMP_SECONDS:
                self._samples.clear()
        self._last = (stream_time, arrival)
        offset = arrival - stream_time
        # A monotonic deque: each sample drops the older ones with a larger offset (they can never be the minimum
        # again), so the front is the window's minimum in amortised O(1).
        while self._samples and self._samples[-1][1] >= offset:
            self._samples.pop()
        self._samples.append((arrival, offset))
        while self._samples[0][0] < arrival - self.window:
            self._samples.popleft()
        return min(arrival, stream_time + self._samples[0][1])
