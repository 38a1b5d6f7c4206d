"""The stop bound: from the first stop request, how long draining may go on and when all must be done.

`serve` stops within `stop_timeout` seconds of SIGTERM/SIGINT/SIGHUP. The consumer classifies
buffered audio until the drain deadline; the part of the bound kept for closing (`CLOSE_SHARE`
of it, at most `CLOSE_RESERVE_MAX_S`) lets the sink publish `offline` and flush. A forced stop (a
second signal) skips the draining and gives the sink `FORCED_CLOSE_S`.
"""

from __future__ import annotations

import select
import socket
import time

from edgekd.config import DEFAULT_STOP_TIMEOUT_S
CLOSE_SHARE = 0.4  # of stop_timeout kept for closing the sink (publishing `offline`, flushing results)
CLOSE_RESERVE_MAX_S = 2.0
FORCED_CLOSE_S = 0.5  # after a forced stop: a disk outbox keeps what is not flushed in this time
END_OF_SOURCE_CLOSE_S = 5.0  # no stop asked for (the file ended): the sink's usual flush time


class StopBound:
    def __init__(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self.requested_at: float | None = None  # monotonic time of the first request
        self.forced = False

    @property
    def requested(self) -> bool:
        return self.requested_at is not None

    def request(self) -> None:
        if self.requested_at is None:
            self.requested_at = time.monotonic()

    def force(self) -> None:
        self.request()
        self.forced = True

    @property
    def close_reserve_s(self) -> float:
        return min(CLOSE_RESERVE_MAX_S, self.timeout_s * CLOSE_SHARE)

    def drain_left(self) -> float:
        """Seconds the buffered audio may still be classified (0 once forced); infinite before a request."""
        if self.requested_at is None:
            return float("inf")
        if self.forced:
            return 0.0
        return max(0.0, self.requested_at + self.timeout_s - self.close_reserve_s - time.monotonic())

    def time_left(self) -> float | None:
        """Seconds left of the whole bound; None before a request."""
        if self.requested_at is None:
            return None
        return max(0.0, self.requested_at + self.timeout_s - time.monotonic())

    def close_timeout(self) -> float:
        """How long the sink may take to close now."""
        left = self.time_left()
        if left is None:
            return END_OF_SOURCE_CLOSE_S
        return FORCED_CLOSE_S if self.forced else max(FORCED_CLOSE_S, left)


class Wakeup:
    """Wake one waiting thread from any thread or from a signal handler, without a lock.

    A socket pair: `set()` writes a byte, `wait(timeout)` selects on the other end and empties it. A
    `set()` before `wait()` is not lost (the byte waits). Unlike threading.Event, `set()` takes no
    lock, so a signal handler that runs in the waiting thread (Python runs them in the main thread,
    possibly inside `wait()`) cannot deadlock it; the handler's byte ends the select that the signal
    interrupted. After `close()`, `set()` does nothing."""

    def __init__(self) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)

    def set(self) -> None:
        try:
            self._w.send(b"\0")
        except OSError:  # full (a wake is already pending) or closed (nobody waits any more)
            pass

    def wait(self, timeout: float | None) -> None:
        """Until a `set()` (since the last wait) or `timeout` seconds (None: no limit)."""
        select.select([self._r], [], [], timeout)
        try:
            self._r.recv(4096)
        except OSError:
            pass

    def close(self) -> None:
        self._w.close()
        self._r.close()

