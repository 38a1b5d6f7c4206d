"""Health figures: latency percentiles, window rates, process CPU and resident memory.

No psutil: CPU time comes from os.times() and resident memory from /proc/self/statm.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import numpy as np

LATENCY_HISTORY = 1024  # recent windows the percentiles are taken over
PERCENTILES = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0))


class LatencyTracker:
    """The last LATENCY_HISTORY values, in a preallocated array."""

    def __init__(self, size: int = LATENCY_HISTORY) -> None:
        self._values = np.zeros(size, dtype=np.float64)
        self._count = 0
        self.observers: list[Callable[[float], None]] = []  # e.g. a Prometheus histogram (edgekd.metrics)

    def add(self, value_ms: float) -> None:
        self._values[self._count % len(self._values)] = value_ms
        self._count += 1
        for observe in self.observers:
            observe(value_ms)

    @property
    def count(self) -> int:
        return self._count

    def summary(self) -> dict[str, float]:
        n = min(self._count, len(self._values))
        if n == 0:
            return {name: 0.0 for name, _ in PERCENTILES} | {"max": 0.0}
        v = np.sort(self._values[:n]).tolist()
        out = {name: round(percentile_of_sorted(v, q), 3) for name, q in PERCENTILES}
        out["max"] = round(v[-1], 3)
        return out


def percentile_of_sorted(values: list[float], q: float) -> float:
    """numpy.percentile(values, q) with its default ('linear') method, for values already sorted.

    The same arithmetic as numpy's, without calling it: numpy.percentile imports numpy.ma on first
    use, which a serving process would otherwise carry (about 1.2 MiB) for its stats alone."""
    n = len(values)
    virtual = (n - 1) * (q / 100)  # numpy's virtual index for 'linear'
    if virtual >= n - 1:
        return values[-1]
    below = math.floor(virtual)
    t = virtual - below
    a, b = values[below], values[below + 1]
    if t >= 0.5:  # numpy's _lerp: from the nearer end
        return b - (b - a) * (1 - t)
    return a + (b - a) * t


class ModelCounters:
    """What one model did: windows classified, gated and published, and how fast."""

    def __init__(self) -> None:
        self.windows = 0
        self.gated = 0
        self.published = 0
        self.nonfinite = 0  # windows whose scores were NaN or infinite: not published
        self.inference = LatencyTracker()
        self.pipeline = LatencyTracker()
        self._rate_windows = 0
        self._rate_time = time.monotonic()
        self.abandoned = 0  # windows cut but not classified because a stop could not wait for them

    def windows_per_s(self) -> float:
        """Windows (classified or gated) per second since the last call."""
        now = time.monotonic()
        done = self.windows + self.gated
        elapsed = now - self._rate_time
        rate = (done - self._rate_windows) / elapsed if elapsed > 0 else 0.0
        self._rate_windows, self._rate_time = done, now
        return round(rate, 3)


class ProcessMeter:
    """Process CPU percent of one core between calls, and resident memory."""

    def __init__(self) -> None:
        self._cpu = self._cpu_seconds()
        self._wall = time.monotonic()

    @staticmethod
    def _cpu_seconds() -> float:
        t = os.times()
        return t.user + t.system

    def cpu_percent(self) -> float:
        cpu, wall = self._cpu_seconds(), time.monotonic()
        elapsed = wall - self._wall
        pct = 100.0 * (cpu - self._cpu) / elapsed if elapsed > 0 else 0.0
        self._cpu, self._wall = cpu, wall
        return round(max(0.0, pct), 2)

    @staticmethod
    def rss_mb() -> float:
        try:
            with open("/proc/self/statm") as fh:
                pages = int(fh.read().split()[1])
        except (OSError, IndexError, ValueError):
            return 0.0
        return round(pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024), 2)
