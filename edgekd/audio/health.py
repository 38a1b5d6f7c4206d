"""Checks on audio before it reaches the models: invalid samples, clipping, DC offset.

- NaN or infinite samples (a float WAV written by a broken tool, a driver bug) are replaced by 0
  and counted: a single NaN would otherwise turn a whole window's scores into NaN.
- Clipping (samples at full scale) and a DC offset (the mean far from 0) are counted and warned
  about, naming the input and what to do; the audio is left as it is and serving goes on.

Warnings are rate limited (one per kind every WARN_INTERVAL_S, with how many were held back).
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

log = logging.getLogger(__name__)

CLIP_LEVEL = 0.999  # |sample| at or above this is at full scale (int16 32767/32768 = 0.99997)
CLIP_WARN_FRACTION = 0.01  # warn when more than 1% of a block is at full scale
DC_WARN_LEVEL = 0.05  # warn when a block's mean is further than this from 0 (full scale 1.0)
BLOCK_SECONDS = 1.0  # clipping and DC offset are judged per block of this much audio
WARN_INTERVAL_S = 60.0


class AudioHealth:
    """Counters and in-place sanitising for one input (`name` appears in every warning)."""

    def __init__(self, name: str, rate: int) -> None:
        self.name = name
        self.rate = int(rate)
        self.samples = 0
        self.nonfinite = 0  # samples that were NaN or infinite (replaced by 0)
        self.clipped = 0  # samples at full scale
        self.dc_blocks = 0  # blocks whose mean was beyond DC_WARN_LEVEL
        self.last_dc = 0.0  # mean of the last whole block
        self._block = max(1, int(self.rate * BLOCK_SECONDS))
        self._acc_sum = 0.0
        self._acc_clipped = 0
        self._acc_n = 0
        self._last_warn: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def check(self, x: np.ndarray) -> np.ndarray:
        """`x` with NaN/Inf replaced by 0 (in place if it is a writable float32 array)."""
        if not len(x):
            return x
        self.samples += len(x)
        total = float(x.sum(dtype=np.float64))
        # the float64 sum of finite float32 samples is finite, so a finite sum means nothing to replace
        if not math.isfinite(total):
            x, total = self._sanitise(x)
        if len(x) <= self._block - self._acc_n:  # the usual case: the chunk lies within one block
            self._add(x, total)
        else:
            self._blocks(x)
        return x

    def _sanitise(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        bad = ~np.isfinite(x)
        n_bad = int(np.count_nonzero(bad))
        if not n_bad:  # finite samples whose sum overflowed (float64 input): nothing to replace
            return x, float(x.sum(dtype=np.float64))
        if not x.flags.writeable:
            x = x.copy()
        x[bad] = 0.0
        self.nonfinite += n_bad
        self._warn(
            "nonfinite",
            f"audio from {self.name}: {n_bad} samples were NaN or infinite and were replaced by silence "
            f"({self.nonfinite} in all); the file or the capture driver produces invalid floats: export the "
            "file again from its source, or check the driver",
        )
        return x, float(x.sum(dtype=np.float64))

    def _add(self, part: np.ndarray, total: float) -> None:
        """Count a part that fits in the current block, whose float64 sum is `total`."""
        self._acc_sum += total
        # two reductions without a temporary array; counted only when a sample reaches full scale
        if part.max() >= CLIP_LEVEL or part.min() <= -CLIP_LEVEL:
            clipped = int(np.count_nonzero(np.abs(part) >= CLIP_LEVEL))
            self._acc_clipped += clipped
            self.clipped += clipped
        self._acc_n += len(part)
        if self._acc_n == self._block:
            self._judge_block()

    def _blocks(self, x: np.ndarray) -> None:
        i = 0
        while i < len(x):
            take = min(len(x) - i, self._block - self._acc_n)
            part = x[i : i + take]
            self._add(part, float(part.sum(dtype=np.float64)))
            i += take

    def _judge_block(self) -> None:
        n = self._acc_n
        mean = self._acc_sum / n
        self.last_dc = mean
        if self._acc_clipped > CLIP_WARN_FRACTION * n:
            self._warn(
                "clipping",
                f"audio from {self.name} is clipping: {100.0 * self._acc_clipped / n:.1f}% of the last "
                f"{n / self.rate:g} s at full scale ({self.clipped} samples in all); lower the input gain "
                "(alsamixer, or the recording level) or move the microphone away from the source",
            )
        if abs(mean) > DC_WARN_LEVEL:
            self.dc_blocks += 1
            self._warn(
                "dc",
                f"audio from {self.name} has a DC offset of {mean:+.3f} (full scale 1.0) over the last "
                f"{n / self.rate:g} s; the microphone or its driver is faulty or needs a high-pass filter: "
                "scores may be off and the energy gate sees the offset as sound",
            )
        self._acc_sum = 0.0
        self._acc_clipped = 0
        self._acc_n = 0

    def _warn(self, key: str, message: str) -> None:
        now = time.monotonic()
        last = self._last_warn.get(key)
        if last is not None and now - last < WARN_INTERVAL_S:
            self._held[key] = self._held.get(key, 0) + 1
            return
        held = self._held.pop(key, 0)
        self._last_warn[key] = now
        log.warning("%s%s", message, f" ({held} similar warnings held back)" if held else "")
