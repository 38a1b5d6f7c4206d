"""The fixed-size buffer between capture and the consumer.

Capture calls `write` and never waits (unless the source asks to, as a file read faster than real
time does): when the consumer falls behind, the oldest unread audio is overwritten and the
consumer is told how many samples it lost. The consumer calls `read_into`, which blocks on a
condition (no busy-waiting) until audio arrives (or as much as it asks for: a window's worth),
the writer closes, or the timeout passes.

Samples are counted from 0 at start; the counter is what timestamps are made from. When capture
stops for a while (a microphone unplugged and plugged in again), the source calls `skip(n)` for
the samples that never came, so that the counter, and the timestamps, keep up with the clock; the
reader is told (`skipped`) and jumps over them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

MAX_MARKS = 4096  # arrival times kept for unread writes; older ones are forgotten


@dataclass(frozen=True)
class ReadResult:
    start: int  # index (in samples since start) of the first sample read
    count: int  # samples copied into the caller's array
    dropped: int  # samples overwritten before they could be read, just before `start`
    arrival: float  # time.monotonic() when the last sample read was written
    skipped: int = 0  # samples that never came (capture was down), just before `start`


class RingBuffer:
    """Mono float32 samples in a preallocated array. One writer thread, one reader thread."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"ring buffer capacity must be at least 1 sample, got {capacity}")
        self.capacity = int(capacity)
        self._buf = np.zeros(self.capacity, dtype=np.float32)
        self._written = 0  # total samples ever written
        self._read = 0  # total samples consumed or dropped
        self._dropped = 0
        self._marks: deque[tuple[int, float]] = deque(maxlen=MAX_MARKS)  # (end index, arrival)
        self._skips: deque[tuple[int, int]] = deque()  # (first index, count) of samples that never came
        self._skipped = 0
        self._closed = False
        self._cond = threading.Condition()
        self._want = 1  # unread samples the waiting reader asked for: smaller writes do not wake it

    @property
    def written(self) -> int:
        return self._written

    @property
    def dropped(self) -> int:
        """Samples lost in all, because the reader fell behind."""
        return self._dropped

    @property
    def skipped(self) -> int:
        """Samples that never came, in all (see `skip`)."""
        return self._skipped

    @property
    def closed(self) -> bool:
        return self._closed

    def available(self) -> int:
        with self._cond:
            return min(self._written - self._read, self.capacity)

    def write(self, samples: np.ndarray, arrival: float | None = None, block: bool = False) -> None:
        """Append samples. Never waits unless `block` (then waits for room, for non-live sources)."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        n = len(x)
        if n == 0:
            return
        if n > self.capacity:  # only the newest capacity samples can be kept
            if block:
                for i in range(0, n, self.capacity):
                    self.write(x[i : i + self.capacity], arrival, block=True)
                return
            with self._cond:
                self._written += n - self.capacity
            x = x[-self.capacity :]
            n = self.capacity
        with self._cond:
            if block:
                while not self._closed and self._written + n - self._read > self.capacity:
                    self._cond.wait(0.5)
            start = self._written % self.capacity
            first = min(n, self.capacity - start)
            self._buf[start : start + first] = x[:first]
            if first < n:
                self._buf[: n - first] = x[first:]
            self._written += n
            self._marks.append((self._written, time.monotonic() if arrival is None else arrival))
            if self._written - self._read >= self._want:
                self._cond.notify_all()

    def skip(self, n: int) -> None:
        """`n` samples that never came (capture was down): the counter moves on without them."""
        n = int(n)
        if n <= 0:
            return
        with self._cond:
            self._skips.append((self._written, n))
            self._written += n
            self._skipped += n
            self._marks.append((self._written, time.monotonic()))
            self._cond.notify_all()

    def close(self) -> None:
        """The writer is done: readers drain what is left and then see `count == 0`."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def discard(self) -> int:
        """Drop every unread sample (a stop that cannot wait for them); returns how many real samples went."""
        with self._cond:
            start = max(self._read, self._written - self.capacity)
            never_came = sum(max(0, min(first + count, self._written) - max(first, start)) for first, count in self._skips)
            n = self._written - start - never_came
            self._read = self._written
            self._skips.clear()
            self._marks.clear()
            self._cond.notify_all()
            return n

    def _jump_skips(self) -> int:
        """Move the reader over samples that never came, if it has reached them (lock held)."""
        skipped = 0
        while self._skips and self._skips[0][0] <= self._read:
            first, count = self._skips.popleft()
            if first + count > self._read:
                skipped += first + count - self._read
                self._read = first + count
        return skipped

    def read_into(self, out: np.ndarray, timeout: float | None = None, want: int = 1) -> ReadResult:
        """Copy the oldest unread samples (up to one write, at most len(out)) into `out`.

        Returns count 0 when nothing arrived within `timeout` or the buffer is closed and empty.
        Reading one write at a time keeps each chunk's arrival time exact. With `want` (the samples
        the reader needs before it has work, e.g. until its next window ends; at most half the
        ring), it sleeps until that many are unread, the writer closes or skips, or `timeout`
        passes: the writes before then do not wake it, and it then reads as always.
        """
        with self._cond:
            want = max(1, min(int(want), self.capacity // 2))
            if self._written - self._read < want and not self._closed:
                self._want = want
                self._cond.wait(timeout)
                self._want = 1
            skipped = self._jump_skips()
            dropped = 0
            oldest = self._written - self.capacity
            if self._read < oldest:
                dropped = oldest - self._read
                self._dropped += dropped
                self._read = oldest
                skipped += self._jump_skips()
            start = self._read
            while self._marks and self._marks[0][0] <= start:
                self._marks.popleft()
            end = self._marks[0][0] if self._marks else self._written
            if self._skips:
                end = min(end, self._skips[0][0])  # never read into samples that never came
            arrival = self._marks[0][1] if self._marks else time.monotonic()
            n = min(end - start, len(out))
            if n > 0:
                pos = start % self.capacity
                first = min(n, self.capacity - pos)
                out[:first] = self._buf[pos : pos + first]
                if first < n:
                    out[first:n] = self._buf[: n - first]
                self._read = start + n
            self._cond.notify_all()
            return ReadResult(start=start, count=n, dropped=dropped, arrival=arrival, skipped=skipped)
