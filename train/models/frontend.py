"""Log-mel front end in plain torch ops, so that it exports into the ONNX graph.

The short-time Fourier transform is a frozen `Conv1d` whose kernels are the
windowed cosine and sine of each DFT bin; the mel projection is a frozen
`Linear`. Both are ordinary ONNX operators (Conv, MatMul), so the device needs
no feature code and MAC counting hooks see them like any other layer.

The log-mel is then normalised per window (one mean and one standard deviation
over all bins and frames): a gain change of the microphone shifts every log-mel
value by the same constant, which this removes, while the spectral tilt that
carries emotion survives.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

# Mel power floor before the log. With the window-sum DFT scaling and area-normalised
# mel filters below, white noise of RMS 1e-4 (-80 dBFS) gives mel powers near 1e-12:
# quieter than any real microphone's noise floor, louder than 16-bit quantisation noise.
POWER_FLOOR = 1e-12
# Added to the per-window log-mel variance: a silent window (variance 0) becomes all
# zeros instead of dividing by zero; speech has variances of several units.
VAR_FLOOR = 1e-2


@dataclass(frozen=True)
class LogMelConfig:
    sample_rate: int = 16000
    n_fft: int = 400  # window length in samples (25 ms at 16 kHz)
    hop: int = 160  # 10 ms
    n_mels: int = 64
    f_min: float = 40.0
    f_max: float | None = None  # None: sample_rate / 2
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.n_fft < 16 or self.hop < 1:
            raise ValueError(f"LogMelConfig: n_fft={self.n_fft} must be >= 16 and hop={self.hop} >= 1")
        top = self.f_max if self.f_max is not None else self.sample_rate / 2
        if not 0 <= self.f_min < top <= self.sample_rate / 2:
            raise ValueError(
                f"LogMelConfig: need 0 <= f_min ({self.f_min}) < f_max ({top}) <= sample_rate/2 ({self.sample_rate / 2})"
            )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    """HTK mel scale."""
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_matrix(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    """Triangular mel filters as a `[n_mels, n_fft // 2 + 1]` matrix (Slaney area normalisation).

    Each filter is evaluated at the DFT bin frequencies; a filter narrower than
    one bin (low mels with a short FFT) still gets the weight of the nearest bin,
    so no mel band is ever empty.
    """
    n_freq = n_fft // 2 + 1
    freqs = torch.linspace(0.0, sample_rate / 2, n_freq, dtype=torch.float64)
    mels = torch.linspace(hz_to_mel(torch.tensor(f_min)).item(), hz_to_mel(torch.tensor(f_max)).item(), n_mels + 2)
    edges = mel_to_hz(mels.double())
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None, :] - lower) / (centre - lower)
    down = (upper - freqs[None, :]) / (upper - centre)
    fb = torch.clamp(torch.minimum(up, down), min=0.0)
    empty = fb.sum(dim=1) == 0
    if empty.any():
        nearest = torch.argmin((freqs[None, :] - centre[empty]).abs(), dim=1)
        fb[empty, nearest] = 1.0
    fb = fb * (2.0 / (upper - lower))  # equal area per filter
    return fb.float()


def dft_kernels(n_fft: int) -> torch.Tensor:
    """Conv1d weights `[2 * n_freq, 1, n_fft]`: Hann-windowed cosines then sines.

    Scaled by 1 / sum(window), so a full-scale sine at a bin centre has magnitude 0.5.
    """
    n_freq = n_fft // 2 + 1
    n = torch.arange(n_fft, dtype=torch.float64)
    window = 0.5 - 0.5 * torch.cos(2.0 * math.pi * n / n_fft)  # periodic Hann
    k = torch.arange(n_freq, dtype=torch.float64)[:, None]
    phase = 2.0 * math.pi * k * n[None, :] / n_fft
    scale = window / window.sum()
    real = torch.cos(phase) * scale
    imag = -torch.sin(phase) * scale
    return torch.cat([real, imag], dim=0)[:, None, :].float()


class LogMel(nn.Module):
    """`[B, T]` PCM -> `[B, 1, n_mels, frames]` normalised log-mel. No trainable parameters.

    frames = 1 + (T - n_fft) // hop (no padding: every frame is real audio).
    """

    def __init__(self, cfg: LogMelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n_freq = cfg.n_fft // 2 + 1
        self.n_freq = n_freq
        self.dft = nn.Conv1d(1, 2 * n_freq, kernel_size=cfg.n_fft, stride=cfg.hop, bias=False)
        self.mel = nn.Linear(n_freq, cfg.n_mels, bias=False)
        f_max = cfg.f_max if cfg.f_max is not None else cfg.sample_rate / 2
        with torch.no_grad():
            self.dft.weight.copy_(dft_kernels(cfg.n_fft))
            self.mel.weight.copy_(mel_matrix(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, f_max))
        for p in self.parameters():
            p.requires_grad_(False)

    def n_frames(self, samples: int) -> int:
        return 1 + (samples - self.cfg.n_fft) // self.cfg.hop

    def describe(self) -> dict[str, object]:
        """The contract's `edgekd.frontend` description of what `forward` computes up to the log
        (docs/model-contract.md); the runtime recomputes it in numpy (`edgekd.frontend`)."""
        cfg = self.cfg
        return {
            "kind": "logmel",
            "sample_rate": cfg.sample_rate,
            "n_fft": cfg.n_fft,
            "hop": cfg.hop,
            "n_mels": cfg.n_mels,
            "f_min": float(cfg.f_min),
            "f_max": float(cfg.f_max if cfg.f_max is not None else cfg.sample_rate / 2),
            "window": "hann_periodic",
            "dft_scale": "window_sum",
            "mel_scale": "htk",
            "mel_norm": "area",
            "power_floor": POWER_FLOOR,
            "log": "ln",
        }

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        spec = self.dft(wave.unsqueeze(1))  # [B, 2F, frames]
        real, imag = spec[:, : self.n_freq], spec[:, self.n_freq :]
        power = real * real + imag * imag  # [B, F, frames]
        mel = self.mel(power.transpose(1, 2))  # [B, frames, n_mels]
        logmel = torch.log(mel + POWER_FLOOR).transpose(1, 2).unsqueeze(1)  # [B, 1, n_mels, frames]
        if not self.cfg.normalize:
            return logmel
        mean = _window_mean(logmel)
        centred = logmel - mean
        var = _window_mean(centred * centred)
        return centred / torch.sqrt(var + VAR_FLOOR)


def _window_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean over mels and frames of `[B, 1, n_mels, frames]`, as a mean over mels then one over frames.

    The same number (every frame has n_mels values), but it exports as two short
    ReduceMeans instead of one over ~19K values: ONNX Runtime's float32 single
    reduction drifted by ~1e-4 on the normalised log-mel of a 3 s window, which the
    network turned into 8e-4 on the logits, against 1e-5 with the staged mean.
    """
    return t.mean(dim=2, keepdim=True).mean(dim=3, keepdim=True)
