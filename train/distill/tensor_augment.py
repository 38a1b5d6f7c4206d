"""Batch augmentation on torch tensors, on whatever device the windows live on.

`edgekd_train.data.augment.Augment` works on one numpy window at a time on the CPU; this
does the same kinds of change (random crop, time shift, gain, background noise at
an SNR) to a whole `[B, T]` batch at once on the GPU, so that a training loop with
every window resident on the device never copies audio back to the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Below this RMS a window counts as silent: noise is then mixed relative to this level.
_SILENT_RMS = 1e-5
_SILENT_REF = 0.1


@dataclass
class TensorAugmentConfig:
    crop_samples: int | None = None  # output length; None keeps the input length
    shift_s: float = 0.1  # shift by up to this many seconds either way (zero fill)
    gain_db: tuple[float, float] = (-6.0, 6.0)
    snr_db: tuple[float, float] = (5.0, 30.0)
    p_noise: float = 0.5  # probability that a window gets background noise (needs a noise bank)
    sample_rate: int = 16000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.gain_db[0] > self.gain_db[1] or self.snr_db[0] > self.snr_db[1]:
            raise ValueError(f"ranges must be (low, high): gain_db={self.gain_db}, snr_db={self.snr_db}")
        if not 0.0 <= self.p_noise <= 1.0 or self.shift_s < 0:
            raise ValueError(f"p_noise={self.p_noise} must be in [0, 1] and shift_s={self.shift_s} not negative")
        if self.crop_samples is not None and self.crop_samples < 1:
            raise ValueError(f"crop_samples={self.crop_samples} must be positive or None")


class TensorAugment:
    """`augment(x [B, T]) -> [B, crop_samples or T]`, random per window, reproducible from the seed.

    `noise` is an optional 1-D tensor of background noise (e.g. the noise recordings
    concatenated); it is moved to the batch's device on first use. Output is clipped
    to [-1, 1] like a real ADC.
    """

    def __init__(self, cfg: TensorAugmentConfig, noise: torch.Tensor | None = None) -> None:
        self.cfg = cfg
        if noise is not None:
            noise = noise.detach().float().flatten()
            if noise.numel() == 0 or float(noise.abs().max()) == 0.0:
                raise ValueError("the noise bank is empty or silent; give real noise audio or noise=None")
        self.noise = noise
        self._gen: torch.Generator | None = None
        self._pending_state: torch.Tensor | None = None

    def _generator(self, device: torch.device) -> torch.Generator:
        if self._gen is None or self._gen.device != device:
            self._gen = torch.Generator(device=device)
            self._gen.manual_seed(self.cfg.seed)
            if self._pending_state is not None:
                self._gen.set_state(self._pending_state)
                self._pending_state = None
        return self._gen

    def get_state(self) -> torch.Tensor | None:
        return None if self._gen is None else self._gen.get_state()

    def set_state(self, state: torch.Tensor | None) -> None:
        """Restore the random stream (used when a checkpointed run resumes)."""
        if state is None:
            return
        if self._gen is None:
            self._pending_state = state
        else:
            self._gen.set_state(state)

    def _uniform(self, n: int, lo: float, hi: float, device: torch.device) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=self._generator(device), device=device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2:
            raise ValueError(f"augment wants a [batch, samples] tensor, got shape {tuple(x.shape)}")
        b, t = x.shape
        dev = x.device
        gen = self._generator(dev)
        out_len = self.cfg.crop_samples or t
        if out_len > t:
            raise ValueError(f"crop_samples={out_len} is longer than the windows ({t} samples)")
        start = torch.randint(0, t - out_len + 1, (b,), generator=gen, device=dev)
        max_shift = int(self.cfg.shift_s * self.cfg.sample_rate)
        shift = torch.randint(-max_shift, max_shift + 1, (b,), generator=gen, device=dev)
        src = start[:, None] + torch.arange(out_len, device=dev)[None, :] - shift[:, None]
        inside = (src >= 0) & (src < t)
        y = torch.gather(x, 1, src.clamp(0, t - 1)) * inside
        gain = 10.0 ** (self._uniform(b, *self.cfg.gain_db, dev) / 20.0)
        y = y * gain[:, None]
        if self.noise is not None and self.cfg.p_noise > 0:
            y = y + self._noise(y, gen)
        return y.clamp(-1.0, 1.0)

    def _noise(self, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, t = y.shape
        dev = y.device
        if self.noise is None:
            raise RuntimeError("no noise bank")
        if self.noise.device != dev:
            self.noise = self.noise.to(dev)
        bank = self.noise
        n = bank.numel()
        offset = torch.randint(0, n, (b,), generator=gen, device=dev)
        idx = (offset[:, None] + torch.arange(t, device=dev)[None, :]) % n  # loops a short bank
        noise = bank[idx]
        sig_rms = y.pow(2).mean(dim=1).sqrt()
        ref = torch.where(sig_rms > _SILENT_RMS, sig_rms, torch.full_like(sig_rms, _SILENT_REF))
        noise_rms = noise.pow(2).mean(dim=1).sqrt().clamp_min(1e-12)
        snr = self._uniform(b, *self.cfg.snr_db, dev)
        k = ref / (noise_rms * 10.0 ** (snr / 20.0))
        use = (torch.rand(b, generator=gen, device=dev) < self.cfg.p_noise).float()
        return noise * (k * use)[:, None]
