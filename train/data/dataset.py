"""A torch `Dataset` over clips: decoded once, cached in memory, fixed windows out.

torch is imported when a `ClipDataset` is built, so the rest of `edgekd_train.data`
works without it.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Literal, Sequence

import numpy as np

from edgekd_train.data.audio import DEFAULT_RATE, AudioDecodeError, fit_length, load_audio
from edgekd_train.data.clips import Clip

log = logging.getLogger(__name__)

# Broken files are each named once; past this many per dataset only the total is logged.
MAX_DECODE_WARNINGS = 20


def _decode(clip: Clip, rate: int) -> np.ndarray | AudioDecodeError:
    try:
        return load_audio(clip.path, rate)
    except AudioDecodeError as exc:
        return exc


class ClipDataset:
    """`(float32 tensor [window_samples], int label)` items over decodable clips.

    Every clip is decoded once at construction and kept in memory at full
    length; a file that cannot be decoded is skipped with one warning and
    counted in `.skipped` (its clip in `.skipped_clips`). Items are cropped or
    padded to the window (`crop="center"` or `"random"`), then augmented.
    Decoding runs on `workers` threads (default: up to 8, one per core);
    libsndfile and soxr release the GIL.
    """

    def __init__(
        self,
        clips: Sequence[Clip],
        labels: Sequence[str],
        rate: int = DEFAULT_RATE,
        window_samples: int = 3 * DEFAULT_RATE,
        augment: Callable[[np.ndarray], np.ndarray] | None = None,
        crop: Literal["center", "random"] = "center",
        seed: int = 0,
        workers: int | None = None,
    ) -> None:
        import torch  # noqa: F401  (fail here, with a clear error, when torch is missing)

        if crop not in ("center", "random"):
            raise ValueError(f"crop must be 'center' or 'random', got {crop!r}")
        self.labels = list(labels)
        index = {label: i for i, label in enumerate(self.labels)}
        unknown = sorted({c.label for c in clips} - set(index))
        if unknown:
            raise ValueError(f"clips carry labels {unknown} that are not in labels={self.labels}; add them or filter the clips")
        self.rate, self.window_samples, self.augment, self.crop = rate, window_samples, augment, crop
        self.rng = np.random.default_rng(seed)
        self.clips: list[Clip] = []
        self.audio: list[np.ndarray] = []
        self.skipped_clips: list[Clip] = []
        workers = workers or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            decoded = list(pool.map(lambda c: _decode(c, rate), clips))
        for clip, x in zip(clips, decoded):
            if isinstance(x, AudioDecodeError):
                self.skipped_clips.append(clip)
                if len(self.skipped_clips) <= MAX_DECODE_WARNINGS:
                    log.warning("skipping a broken file: %s", x)
                continue
            self.clips.append(clip)
            self.audio.append(x)
        if len(self.skipped_clips) > MAX_DECODE_WARNINGS:
            log.warning("skipped %d broken files in all", len(self.skipped_clips))
        self.targets = np.array([index[c.label] for c in self.clips], dtype=np.int64)

    @property
    def skipped(self) -> int:
        return len(self.skipped_clips)

    def __len__(self) -> int:
        return len(self.clips)

    def window(self, i: int) -> np.ndarray:
        """Clip `i` cropped or padded to the window, augmented if an augmenter is set."""
        x = fit_length(self.audio[i], self.window_samples, self.crop, self.rng)
        return self.augment(x) if self.augment is not None else x

    def __getitem__(self, i: int):
        import torch

        return torch.from_numpy(np.ascontiguousarray(self.window(i), dtype=np.float32)), int(self.targets[i])

    def waveforms(self, crop: Literal["center", "start"] = "center") -> np.ndarray:
        """All clips as one float32 array [n, window_samples], not augmented (for GPU-side training)."""
        out = np.zeros((len(self.audio), self.window_samples), dtype=np.float32)
        for i, x in enumerate(self.audio):
            out[i] = fit_length(x, self.window_samples, crop)
        return out
