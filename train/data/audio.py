"""Decode an audio file to float32 mono at a given rate; crop or pad to a window.

soundfile (libsndfile) decodes wav, flac, ogg (Vorbis/Opus) and mp3; soxr
resamples. soxr is imported only when a file's rate differs from the target,
and scipy stands in for it where soxr is missing (the remote GPU machine has
scipy but not soxr).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Literal

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_RATE = 16_000
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif")

CropMode = Literal["center", "random", "start"]


class AudioDecodeError(RuntimeError):
    """A file could not be decoded. The message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot decode audio {self.path}: {reason}")


def resample(x: np.ndarray, src_rate: int, rate: int) -> np.ndarray:
    """Resample float32 mono `x` from `src_rate` to `rate` Hz."""
    if src_rate == rate:
        return x
    try:
        import soxr
    except ImportError:
        soxr = None
    if soxr is not None:
        return np.asarray(soxr.resample(x, src_rate, rate, quality="HQ"), dtype=np.float32)
    try:
        from math import gcd

        from scipy.signal import resample_poly
    except ImportError:
        raise RuntimeError(
            f"resampling {src_rate} Hz to {rate} Hz needs soxr or scipy: `pip install soxr`"
        ) from None
    g = gcd(src_rate, rate)
    return resample_poly(x, rate // g, src_rate // g).astype(np.float32)


def load_audio(path: str | Path, rate: int = DEFAULT_RATE) -> np.ndarray:
    """Decode `path` to float32 mono in [-1, 1] at `rate` Hz.

    Raises `AudioDecodeError` for a missing, unreadable, empty or non-finite file.
    """
    path = Path(path)
    try:
        import soundfile as sf
    except ImportError:
        raise RuntimeError(
            "decoding audio needs soundfile: `pip install soundfile` (its wheels bundle libsndfile)"
        ) from None
    if not path.is_file():
        raise AudioDecodeError(path, "no such file")
    try:
        data, src_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises several types for broken files
        raise AudioDecodeError(path, f"{type(exc).__name__}: {exc}") from None
    if data.size == 0:
        raise AudioDecodeError(path, "the file holds no samples")
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(mono).all():
        raise AudioDecodeError(path, "the file holds NaN or infinite samples")
    # Lossy codecs (Opus, Vorbis, MP3) overshoot full scale a little; models take [-1, 1].
    return np.clip(resample(mono, int(src_rate), rate), -1.0, 1.0).astype(np.float32)


def fit_length(
    x: np.ndarray,
    n: int,
    mode: CropMode = "center",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Crop or zero-pad `x` to exactly `n` samples.

    `center` crops or pads symmetrically, `start` keeps the beginning and pads
    at the end, `random` picks the crop offset (or the padding split) with `rng`.
    """
    if n <= 0:
        raise ValueError(f"window length must be positive, got {n}")
    if mode not in ("center", "random", "start"):
        raise ValueError(f"crop mode must be 'center', 'random' or 'start', got {mode!r}")
    length = len(x)
    if length == n:
        return x.astype(np.float32, copy=True)
    slack = abs(length - n)
    if mode == "start":
        offset = 0
    elif mode == "center":
        offset = slack // 2
    else:
        rng = rng if rng is not None else np.random.default_rng()
        offset = int(rng.integers(0, slack + 1))
    if length > n:
        return x[offset : offset + n].astype(np.float32, copy=True)
    out = np.zeros(n, dtype=np.float32)
    out[offset : offset + length] = x
    return out



def find_audio_files(folder: str | Path, extensions: Iterable[str] = AUDIO_EXTENSIONS) -> list[Path]:
    """Audio files in or below `folder`, sorted, hidden files and folders left out.

    Double extensions like `x.wav.ogg` count by their last suffix.
    """
    folder = Path(folder)
    exts = {e.lower() for e in extensions}
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in exts
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.is_file()
    )
