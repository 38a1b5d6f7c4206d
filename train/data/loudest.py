"""Each clip's loudest window: the cough (or word) inside a longer recording, decoded once per part."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)


def loudest_window(x: np.ndarray, n: int) -> np.ndarray:
    """The `n`-sample stretch of `x` with the most energy (`x` centred and zero-padded if shorter)."""
    if len(x) <= n:
        out = np.zeros(n, np.float32)
        off = (n - len(x)) // 2
        out[off : off + len(x)] = x
        return out
    c = np.concatenate([[0.0], np.cumsum(np.square(x, dtype=np.float64))])
    start = int(np.argmax(c[n:] - c[:-n]))
    return x[start : start + n].astype(np.float32)


def decode_loudest(clips: Sequence, labels: Sequence[str], rate: int, n: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Windows, label indices and the clips kept (unreadable files are skipped and counted)."""
    from edgekd_train.data.audio import AudioDecodeError, load_audio

    xs, ys, kept, bad = [], [], [], 0
    for c in clips:
        try:
            x = load_audio(c.path, rate)
        except AudioDecodeError as exc:
            bad += 1
            log.warning("skipping %s: %s", c.path, exc)
            continue
        xs.append(loudest_window(x, n))
        ys.append(labels.index(c.label))
        kept.append(c)
    if bad:
        log.warning("%d unreadable file(s) skipped", bad)
    return np.stack(xs), np.array(ys, np.int64), kept


def bandlimit(x: np.ndarray, rate: int, band_rate: int = 8000) -> np.ndarray:
    """Resample to `band_rate` and back: nothing above band_rate / 2 survives."""
    from edgekd_train.data.audio import resample

    return np.stack([resample(resample(w, rate, band_rate), band_rate, rate)[: x.shape[1]] for w in x]).astype(np.float32)


@dataclass
class TaskData:
    """A task's windows, label indices and source clips per part (`train`, `val`, `test`)."""

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    kept: dict[str, list]
    split: Any  # covid: the `Split`; cough: the groups of each source in each part
