"""Waveform augmentation: time shift, gain, background noise at a random SNR."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgekd_train.data.audio import DEFAULT_RATE, AudioDecodeError, find_audio_files, load_audio

log = logging.getLogger(__name__)

# Below this RMS a window counts as silent: noise is then mixed relative to full scale.
_SILENT_RMS = 1e-5


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`signal + k * noise` with k chosen so that the mix has the given SNR (dB)."""
    s, n = rms(signal), rms(noise)
    if n == 0:
        return signal.astype(np.float32, copy=True)
    ref = s if s > _SILENT_RMS else 0.1
    k = ref / (n * 10 ** (snr_db / 20))
    return (signal + k * noise).astype(np.float32)


class Augment:
    """Callable on a float32 window; returns an augmented copy of the same length.

    In order: shift by up to `shift_s` seconds either way (zero fill), gain drawn
    from `gain_db`, and with probability `p_noise` a random stretch of a noise
    file from `noise_dir` mixed at an SNR drawn from `snr_db`. The result is
    clipped to [-1, 1]. Reproducible from `seed`.
    """

    def __init__(
        self,
        noise_dir: str | Path | None = None,
        snr_db: tuple[float, float] = (5.0, 30.0),
        gain_db: tuple[float, float] = (-6.0, 6.0),
        shift_s: float = 0.1,
        p_noise: float = 0.5,
        seed: int = 0,
        rate: int = DEFAULT_RATE,
    ) -> None:
        if snr_db[0] > snr_db[1] or gain_db[0] > gain_db[1]:
            raise ValueError(f"ranges must be (low, high): snr_db={snr_db}, gain_db={gain_db}")
        if not 0 <= p_noise <= 1 or shift_s < 0:
            raise ValueError(f"p_noise={p_noise} must be in [0, 1] and shift_s={shift_s} not negative")
        self.snr_db, self.gain_db, self.shift_s, self.p_noise, self.rate = snr_db, gain_db, shift_s, p_noise, rate
        self.rng = np.random.default_rng(seed)
        self.noises: list[np.ndarray] = []
        if noise_dir is not None:
            self.noises = self._load_noises(Path(noise_dir))

    def _load_noises(self, folder: Path) -> list[np.ndarray]:
        if not folder.is_dir():
            raise FileNotFoundError(f"noise folder {folder} does not exist (give a folder of wav/flac/ogg noise recordings)")
        noises = []
        for path in find_audio_files(folder):
            try:
                x = load_audio(path, self.rate)
            except AudioDecodeError as exc:
                log.warning("noise: skipping %s", exc)
                continue
            if rms(x) > 0:
                noises.append(x)
        if not noises:
            raise FileNotFoundError(f"noise folder {folder} holds no decodable, non-silent audio file")
        log.info("augment: %d noise recordings, %.0f s in all", len(noises), sum(map(len, noises)) / self.rate)
        return noises

    def noise_window(self, n: int) -> np.ndarray:
        """A random stretch of `n` samples from a random noise file (looped if shorter)."""
        noise = self.noises[int(self.rng.integers(len(self.noises)))]
        if len(noise) < n:
            noise = np.tile(noise, n // len(noise) + 1)
        start = int(self.rng.integers(0, len(noise) - n + 1))
        return noise[start : start + n]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        out = np.zeros(n, dtype=np.float32)
        max_shift = int(self.shift_s * self.rate)
        shift = int(self.rng.integers(-max_shift, max_shift + 1)) if max_shift else 0
        if shift >= 0:
            out[shift:] = x[: n - shift]
        else:
            out[:shift] = x[-shift:]
        out *= np.float32(10 ** (self.rng.uniform(*self.gain_db) / 20))
        if self.noises and self.rng.random() < self.p_noise:
            out = mix_at_snr(out, self.noise_window(n), float(self.rng.uniform(*self.snr_db)))
        return np.clip(out, -1.0, 1.0)
