"""SpecAugment-style masking of the log-mel, in training mode only.

Each window gets `n_freq_masks` bands of up to `max_freq` mel bins and
`n_time_masks` stretches of up to `max_time` frames set to zero (the mean of the
normalised log-mel). In eval mode it is the identity, so the exported graph
(traced in eval mode) holds none of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class SpecAugmentConfig:
    n_freq_masks: int = 2
    max_freq: int = 8  # mel bins
    n_time_masks: int = 2
    max_time: int = 20  # frames


def _band_mask(batch: int, size: int, n_masks: int, max_width: int, device: torch.device) -> torch.Tensor:
    """`[batch, size]` bool, True inside any of `n_masks` random bands of width 0..max_width."""
    pos = torch.arange(size, device=device)[None, None, :]
    width = torch.randint(0, max_width + 1, (batch, n_masks, 1), device=device)
    start = (torch.rand(batch, n_masks, 1, device=device) * (size - width + 1).clamp_min(1)).long()
    return ((pos >= start) & (pos < start + width)).any(dim=1)


class SpecAugment(nn.Module):
    def __init__(self, cfg: SpecAugmentConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """`[B, 1, n_mels, frames]` -> same shape, masked when training."""
        if not self.training:
            return spec
        b, _, n_mels, frames = spec.shape
        c = self.cfg
        f = _band_mask(b, n_mels, c.n_freq_masks, min(c.max_freq, n_mels), spec.device)  # [B, n_mels]
        t = _band_mask(b, frames, c.n_time_masks, min(c.max_time, frames), spec.device)  # [B, frames]
        keep = ~(f[:, None, :, None] | t[:, None, None, :])
        return spec * keep
