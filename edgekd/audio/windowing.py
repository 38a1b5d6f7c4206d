"""Cutting a stream into overlapping windows, and resampling it on the way.

`Windower` emits a window each time `hop` new samples have arrived after the first full window.
Which windows come out, and their contents, depend only on the samples, never on how they were
chunked: window n covers samples [n*hop, n*hop + window) of the stream.

It keeps the last `window` samples twice over in a 2*window array (each sample is written at i
and i + window), so every window is a contiguous view with no copy and no allocation.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

DEFAULT_HOP_FRACTION = 0.25  # hop = window / 4 unless configured


def default_hop(window: int) -> int:
    return max(1, int(round(window * DEFAULT_HOP_FRACTION)))


class Windower:
    def __init__(self, window: int, hop: int) -> None:
        if window < 1 or hop < 1:
            raise ValueError(f"window and hop must be positive (window={window}, hop={hop})")
        self.window = int(window)
        self.hop = int(hop)
        self._buf = np.zeros(2 * self.window, dtype=np.float32)
        self.reset(0)

    def reset(self, position: int) -> None:
        """Start afresh at stream sample `position` (after a gap, e.g. dropped audio)."""
        self._buf.fill(0.0)
        self.position = int(position)  # stream index of the next sample to arrive
        self._origin = self.position
        self._next_end = self.position + self.window
        self.emitted = 0

    def _write(self, x: np.ndarray) -> None:
        w = self.window
        pos = (self.position - self._origin) % w
        n = len(x)
        first = min(n, w - pos)
        self._buf[pos : pos + first] = x[:first]
        self._buf[pos + w : pos + w + first] = x[:first]
        if first < n:
            self._buf[: n - first] = x[first:]
            self._buf[w : w + n - first] = x[first:]
        self.position += n

    def _view(self) -> np.ndarray:
        pos = (self.position - self._origin) % self.window
        return self._buf[pos : pos + self.window]

    def push(self, samples: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """Feed samples; yields (start index, window view) for each window they complete.

        The view is only valid until the generator resumes: use it (or copy it) at once.
        """
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        i = 0
        n = len(x)
        while i < n:
            # never write more than one window at once, so the double buffer stays consistent
            k = min(self._next_end - self.position, n - i, self.window)
            self._write(x[i : i + k])
            i += k
            if self.position == self._next_end:
                self.emitted += 1
                yield self.position - self.window, self._view()
                self._next_end += self.hop

    def samples_until_window(self) -> int:
        """Samples still to come before the next window ends."""
        return self._next_end - self.position

    def flush_short(self) -> Iterator[tuple[int, np.ndarray]]:
        """At the end of a stream that never filled one window, yield it zero-padded once."""
        if self.emitted == 0 and self.position > self._origin:
            pad = self._next_end - self.position
            yield from self.push(np.zeros(pad, dtype=np.float32))


class Resampler:
    """Streaming resampling from one rate to another (soxr); chunking does not change the output.

    `position_for(source_index)` maps a source sample index to this stream's index, used to
    restart cleanly after a gap.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = int(in_rate)
        self.out_rate = int(out_rate)
        self._stream = None
        self.reset()

    @property
    def passthrough(self) -> bool:
        return self.in_rate == self.out_rate

    def reset(self) -> None:
        if not self.passthrough:
            import soxr

            self._stream = soxr.ResampleStream(self.in_rate, self.out_rate, 1, dtype="float32", quality="HQ")

    def position_for(self, source_index: int) -> int:
        return int(round(source_index * self.out_rate / self.in_rate))

    def process(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        if self.passthrough:
            return samples
        return self._stream.resample_chunk(np.asarray(samples, dtype=np.float32), last=last)
