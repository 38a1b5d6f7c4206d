"""The log-mel front end in numpy, computed incrementally on a stream.

A model file that describes its front end (`edgekd.frontend`, docs/model-contract.md) can have its
log-mel frames computed outside the graph. Frame `i` of a stream covers samples
`[i * hop, i * hop + n_fft)` after the stream's origin, whatever window it later falls into, so a
stream's frames are computed once and every window of every model with the same front end reads
them: `LogMelStream.push` computes only the frames the new samples complete.

The arithmetic is that of the training side's `LogMel` (periodic Hann window, DFT scaled by the
window's sum, HTK mel filters of equal area, a power floor, natural log), in float64, with every
frame computed on its own: the same frame gives the same numbers however the audio was chunked.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

KIND_LOGMEL = "logmel"
# The one value each fixed field of a log-mel description may take (what the arithmetic below does).
FIXED_FIELDS = {
    "window": "hann_periodic",
    "dft_scale": "window_sum",
    "mel_scale": "htk",
    "mel_norm": "area",
    "log": "ln",
}


class FrontEndError(ValueError):
    """A front-end description that this runtime cannot compute; the message names the field."""


@dataclass(frozen=True)
class LogMelSpec:
    """An `edgekd.frontend` description of kind `logmel`."""

    sample_rate: int
    n_fft: int
    hop: int
    n_mels: int
    f_min: float
    f_max: float
    power_floor: float
    kind: str = KIND_LOGMEL
    window: str = "hann_periodic"
    dft_scale: str = "window_sum"
    mel_scale: str = "htk"
    mel_norm: str = "area"
    log: str = "ln"

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> LogMelSpec:
        if raw.get("kind") != KIND_LOGMEL:
            raise FrontEndError(f"kind={raw.get('kind')!r}: this runtime computes kind {KIND_LOGMEL!r} only")
        names = {f for f in cls.__dataclass_fields__}
        missing = sorted(names - set(raw))
        unknown = sorted(set(raw) - names)
        if missing or unknown:
            raise FrontEndError(f"fields missing {missing}, unknown {unknown}; a logmel front end has {sorted(names)}")
        for key, value in FIXED_FIELDS.items():
            if raw[key] != value:
                raise FrontEndError(f"{key}={raw[key]!r}: this runtime computes {key}={value!r} only")
        ints = {k: raw[k] for k in ("sample_rate", "n_fft", "hop", "n_mels")}
        for key, value in ints.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise FrontEndError(f"{key}={value!r} must be a positive integer")
        floats = {k: raw[k] for k in ("f_min", "f_max", "power_floor")}
        for key, value in floats.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise FrontEndError(f"{key}={value!r} must be a finite number")
        spec = cls(**ints, **{k: float(v) for k, v in floats.items()})
        if spec.n_fft < 16:
            raise FrontEndError(f"n_fft={spec.n_fft} must be at least 16")
        if not 0.0 <= spec.f_min < spec.f_max <= spec.sample_rate / 2:
            raise FrontEndError(f"need 0 <= f_min ({spec.f_min}) < f_max ({spec.f_max}) <= sample_rate/2")
        if not spec.power_floor > 0.0:
            raise FrontEndError(f"power_floor={spec.power_floor} must be above 0 (the log of 0 is not finite)")
        return spec

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def canonical(self) -> str:
        """Canonical JSON: two models whose front ends print the same share one computation."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def n_frames(self, samples: int) -> int:
        """Frames in a window of `samples` samples (no padding: 0 if the window is shorter than n_fft)."""
        return max(0, 1 + (samples - self.n_fft) // self.hop)


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filters(spec: LogMelSpec) -> np.ndarray:
    """`[n_mels, n_fft // 2 + 1]` triangular filters on the HTK scale, each of area 2 / (upper - lower).

    A filter narrower than one DFT bin gets the weight of the nearest bin, so no band is empty.
    """
    freqs = np.linspace(0.0, spec.sample_rate / 2, spec.n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(spec.f_min), hz_to_mel(spec.f_max), spec.n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None, :] - lower) / (centre - lower)
    down = (upper - freqs[None, :]) / (upper - centre)
    fb = np.clip(np.minimum(up, down), 0.0, None)
    empty = np.flatnonzero(fb.sum(axis=1) == 0)
    if empty.size:
        fb[empty, np.argmin(np.abs(freqs[None, :] - centre[empty]), axis=1)] = 1.0
    return fb * (2.0 / (upper - lower))


def hann_periodic(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * math.pi * np.arange(n, dtype=np.float64) / n)


class LogMelFrames:
    """Frames -> log-mel rows, each row computed independently of the others (chunking never matters)."""

    def __init__(self, spec: LogMelSpec) -> None:
        self.spec = spec
        window = hann_periodic(spec.n_fft)
        self._scaled_window = window / window.sum()
        self._filters = mel_filters(spec)
        self._filters_t = np.ascontiguousarray(self._filters.T)

    def compute(self, frames: np.ndarray) -> np.ndarray:
        """`[n, n_fft]` samples -> `[n, n_mels]` float32 log-mel."""
        spectrum = np.fft.rfft(frames * self._scaled_window, axis=1)  # float64
        power = spectrum.real * spectrum.real + spectrum.imag * spectrum.imag
        # one [1, F] x [F, n_mels] product per frame: a single product over all rows would round
        # each row differently depending on how many rows it got (BLAS blocking), i.e. on the chunking
        mel = np.matmul(power[:, None, :], self._filters_t)[:, 0, :]
        mel += self.spec.power_floor
        return np.log(mel).astype(np.float32)

    def of_window(self, window: np.ndarray) -> np.ndarray:
        """Log-mel of one whole window, `[frames, n_mels]` (what a model's body takes, less the batch axis)."""
        x = np.asarray(window, dtype=np.float32).reshape(-1)
        n = self.spec.n_frames(len(x))
        if n == 0:
            return np.zeros((0, self.spec.n_mels), dtype=np.float32)
        idx = np.arange(self.spec.n_fft)[None, :] + self.spec.hop * np.arange(n)[:, None]
        return self.compute(x[idx])


class LogMelStream:
    """One stream's log-mel frames, computed as they are needed, the latest `keep` of them kept.

    `push(samples)` takes audio; `frames(first, count)` reads frames by their index since the origin
    (a contiguous `[count, n_mels]` view, valid until the next call), computing those that the
    samples pushed so far complete, or None where they are not all there (not complete yet, or
    older than the `keep` frames before the newest). Frames are computed in batches: when a window
    asks, or when a window's worth of audio is waiting, whichever comes first (one batch per window
    at a long hop, instead of one per capture chunk). `reset(position)` starts afresh at a stream
    sample index (after a gap): frame 0 then starts at `position`.
    """

    def __init__(self, spec: LogMelSpec, keep: int) -> None:
        if keep < 1:
            raise ValueError(f"keep={keep} must be at least one frame")
        self.spec = spec
        self.keep = int(keep)
        self._frames = LogMelFrames(spec)
        self._store = np.zeros((2 * self.keep, spec.n_mels), dtype=np.float32)
        self._compute_every = max(spec.n_fft, self.keep * spec.hop)  # samples waiting
        self._index: dict[int, np.ndarray] = {}
        self.reset(0)

    def reset(self, position: int) -> None:
        self.origin = int(position)  # stream sample index of frame 0
        self.total = 0  # frames computed since the origin
        self._base = 0  # frame index of store row 0
        self._rows = 0  # rows of the store in use
        self._waiting: list[np.ndarray] = []  # samples from the next frame's start on
        self._waiting_len = 0

    @property
    def available(self) -> int:
        """Frames the samples pushed so far complete (computed or not yet)."""
        return self.total + self.spec.n_frames(self._waiting_len)

    def push(self, samples: np.ndarray) -> None:
        x = np.array(samples, dtype=np.float32).reshape(-1)  # a copy: the caller may reuse its buffer
        if x.size:
            self._waiting.append(x)
            self._waiting_len += x.size
        if self._waiting_len >= self._compute_every:
            self._compute()

    def _compute(self) -> None:
        spec = self.spec
        n = spec.n_frames(self._waiting_len)
        if n == 0:
            return
        buf = np.concatenate(self._waiting) if len(self._waiting) > 1 else self._waiting[0]
        new = self._frames.compute(buf[self._frame_index(n)])
        rest = buf[n * spec.hop :]
        self._waiting = [rest] if rest.size else []
        self._waiting_len = rest.size
        self._append(new)

    def _frame_index(self, n: int) -> np.ndarray:
        index = self._index.get(n)
        if index is None:
            index = np.arange(self.spec.n_fft)[None, :] + self.spec.hop * np.arange(n)[:, None]
            if n <= 64:  # the sizes a hop brings, not a whole file's
                self._index[n] = index
        return index

    def _append(self, new: np.ndarray) -> None:
        n = len(new)
        if self._rows + n > len(self._store):
            # drop what no window can still ask for: frames older than `keep` before the newest
            drop = max(0, self._rows - self.keep)
            self._store[: self._rows - drop] = self._store[drop : self._rows]
            self._base += drop
            self._rows -= drop
            if self._rows + n > len(self._store):
                grown = np.zeros((self._rows + n + self.keep, self.spec.n_mels), dtype=np.float32)
                grown[: self._rows] = self._store[: self._rows]
                self._store = grown
        self._store[self._rows : self._rows + n] = new
        self._rows += n
        self.total += n

    def frames(self, first: int, count: int) -> np.ndarray | None:
        if first + count > self.total:
            self._compute()
        lo = first - self._base
        if first < 0 or lo < 0 or lo + count > self._rows:
            return None
        return self._store[lo : lo + count]

    def frame_at(self, position: int) -> int | None:
        """The index of the frame that starts at stream sample `position`, or None if none does."""
        offset = position - self.origin
        if offset < 0 or offset % self.spec.hop:
            return None
        return offset // self.spec.hop
