"""Training windows for detectors that live on streams: what a stream holds besides the events.

A keyword or cough detector trained on isolated clips has seen little of what fills a household
stream, so it fires on ordinary speech. These windows come from the **train** part only (the
task's own split, and the training half of the corpora the task never trained on; see
edgekd_train.streams.sources), so validation and test streams stay unseen:

- `background`: random windows of speech (TESS, RAVDESS), of other tasks' sounds (coughs for a
  keyword detector, Speech Commands words for a cough detector), and of the noise recordings'
  training stretches, at random levels, some mixed with noise;
- `partial`: windows that hold only an edge of an event (at most `PARTIAL_MAX` of its audible
  span), so that a word cut in half is not the word;
- `mined`: the windows where a model raised false alarms on training streams (hard negatives).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd_train.data.clips import Clip
from edgekd_train.streams.build import active_span, scale_to

PARTIAL_MAX = 0.35  # share of an event's audible span a partial window may hold
LEVEL_DBFS = (-40.0, -12.0)
P_NOISY = 0.4  # share of background windows mixed with noise
NOISY_SNR_DB = (0.0, 20.0)


@dataclass(frozen=True)
class BackgroundPool:
    """Clips and noise to cut background windows from, with the label each kind is given."""

    clips: dict[str, list[Clip]]  # kind -> clips
    labels: dict[str, str]  # kind -> training label (e.g. speech -> _unknown_); "noise" included
    noise: list[np.ndarray]  # training stretches of the noise recordings
    weights: dict[str, float]  # how often each kind is drawn
    # Speed perturbation of the clips of `speed_kinds` (e.g. (0.85, 1.15)): each drawn clip is played
    # at a random speed in the range, which moves its pitch and formants, as another speaker's would.
    speed: tuple[float, float] | None = None
    speed_kinds: tuple[str, ...] = ("speech",)


def _crop(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if len(x) <= n:
        out = np.zeros(n, np.float32)
        off = int(rng.integers(0, n - len(x) + 1))
        out[off : off + len(x)] = x
        return out
    off = int(rng.integers(0, len(x) - n + 1))
    return x[off : off + n].astype(np.float32)


def background_windows(
    pool: BackgroundPool,
    n: int,
    window: int,
    seed: int,
    decode: Callable[[Path], np.ndarray],
) -> tuple[np.ndarray, list[str]]:
    """`n` windows of `window` samples and their labels, drawn by `pool.weights`."""
    rng = np.random.default_rng(seed)
    kinds = [k for k, w in pool.weights.items() if w > 0 and (pool.clips.get(k) or (k == "noise" and pool.noise))]
    p = np.array([pool.weights[k] for k in kinds], dtype=np.float64)
    p /= p.sum()
    cache: dict[Path, np.ndarray | None] = {}
    xs = np.zeros((n, window), np.float32)
    labels: list[str] = []
    i = 0
    while i < n:
        kind = kinds[int(rng.choice(len(kinds), p=p))]
        if kind == "noise":
            x = _crop(pool.noise[int(rng.integers(len(pool.noise)))], window, rng)
        else:
            clip = pool.clips[kind][int(rng.integers(len(pool.clips[kind])))]
            if clip.path not in cache:
                try:
                    cache[clip.path] = decode(clip.path)
                except Exception:  # a broken corpus file is skipped, as the loaders do
                    cache[clip.path] = None
            raw = cache[clip.path]
            if raw is None or not len(raw):
                continue
            if pool.speed is not None and kind in pool.speed_kinds:
                raw = speed_perturb(raw, float(rng.uniform(*pool.speed)))
            x = _crop(raw, window, rng)
            if pool.noise and rng.random() < P_NOISY:
                bed = _crop(pool.noise[int(rng.integers(len(pool.noise)))], window, rng)
                snr = rng.uniform(*NOISY_SNR_DB)
                x = x + scale_to(bed, _rms_db(x) - snr)
        xs[i] = scale_to(x, rng.uniform(*LEVEL_DBFS))
        labels.append(pool.labels[kind])
        i += 1
    return xs, labels


def speed_perturb(x: np.ndarray, factor: float) -> np.ndarray:
    """`x` played `factor` times faster (shorter, higher): resampled as if recorded at `factor` times
    the rate (Ko et al. 2015's speed perturbation, a cheap stand-in for more speakers)."""
    from edgekd_train.data.audio import resample

    if abs(factor - 1.0) < 1e-6:
        return x
    base = 10_000
    return resample(np.asarray(x, np.float32), int(round(base * factor)), base)


def _rms_db(x: np.ndarray) -> float:
    power = float(np.mean(np.square(x, dtype=np.float64)))
    return 10.0 * np.log10(power) if power > 0 else -120.0


def partial_windows(
    events: Sequence[np.ndarray], window: int, rate: int, seed: int, per_event: int = 1
) -> np.ndarray:
    """Windows holding only the start or the end of each event (at most PARTIAL_MAX of its audible span)."""
    rng = np.random.default_rng(seed)
    out = []
    for x in events:
        a, b = active_span(x, rate)
        span = b - a
        if span < rate // 20:
            continue
        for _ in range(per_event):
            keep = int(span * rng.uniform(0.1, PARTIAL_MAX))
            padded = np.concatenate([np.zeros(window, np.float32), x, np.zeros(window, np.float32)])
            a2, b2 = a + window, b + window
            if rng.random() < 0.5:  # the window ends `keep` samples into the event
                end = a2 + keep
                out.append(padded[end - window : end])
            else:  # the window starts `keep` samples before the event's end
                start = b2 - keep
                out.append(padded[start : start + window])
    return np.stack(out).astype(np.float32) if out else np.zeros((0, window), np.float32)


def mined_windows(audio: np.ndarray, rate: int, times: Sequence[float], window: int) -> np.ndarray:
    """The windows that ended at `times` (seconds) in `audio`: where a model raised false alarms."""
    out = []
    for t in times:
        end = int(round(t * rate))
        if end - window >= 0 and end <= len(audio):
            out.append(audio[end - window : end])
    return np.stack(out).astype(np.float32) if out else np.zeros((0, window), np.float32)
