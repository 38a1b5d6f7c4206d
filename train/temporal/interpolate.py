"""Resample a per-frame weight vector to another number of frames, keeping its mass.

The weights are read as a piecewise-constant density over the clip (frame `j` of `T`
covers `[j/T, (j+1)/T)`); an output frame gets the integral of that density over its own
interval. The sum is unchanged exactly (up to rounding), mass never moves in time by more
than a frame, and going to more frames spreads a frame's weight evenly.
"""

from __future__ import annotations

import torch


def resample_weights(weights: torch.Tensor, frames: int) -> torch.Tensor:
    """`[B, T]` (or `[T]`) non-negative weights -> `[B, frames]` with the same sum per row."""
    if frames < 1:
        raise ValueError(f"frames={frames} must be >= 1")
    squeeze = weights.ndim == 1
    w = weights.unsqueeze(0) if squeeze else weights
    if w.ndim != 2 or w.shape[-1] < 1:
        raise ValueError(f"weights must be [B, T] or [T] with T >= 1, got {tuple(weights.shape)}")
    t_in = w.shape[-1]
    w64 = w.double()
    cdf = torch.cat([w64.new_zeros(w.shape[0], 1), w64.cumsum(dim=-1)], dim=-1)  # at the T+1 frame edges
    # the output frame edges in input-frame units, and the CDF there by linear interpolation
    edges = torch.linspace(0.0, float(t_in), frames + 1, dtype=torch.float64, device=w.device)
    lo = edges.floor().clamp(max=t_in - 1).long()
    frac = (edges - lo.double()).unsqueeze(0)
    at = cdf[:, lo] + frac * (cdf[:, lo + 1] - cdf[:, lo])
    out = (at[:, 1:] - at[:, :-1]).clamp_min(0.0).to(w.dtype)
    return out.squeeze(0) if squeeze else out


def mass_between(weights: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """`[B]` share of each row's weight that lies between `start` and `end` (`[B]` fractions of the clip, 0-1),
    with the same piecewise-constant reading: a frame cut by an edge counts in proportion."""
    if weights.ndim != 2 or start.shape != (weights.shape[0],) or end.shape != start.shape:
        raise ValueError(f"weights must be [B, T] with one start and end per row; got {tuple(weights.shape)}, "
                         f"{tuple(start.shape)}, {tuple(end.shape)}")
    w = weights.double()
    t = w.shape[-1]
    cdf = torch.cat([w.new_zeros(w.shape[0], 1), w.cumsum(dim=-1)], dim=-1)

    def at(frac: torch.Tensor) -> torch.Tensor:
        pos = frac.double().clamp(0.0, 1.0) * t
        lo = pos.floor().clamp(max=t - 1).long()
        rows = torch.arange(w.shape[0], device=w.device)
        return cdf[rows, lo] + (pos - lo.double()) * (cdf[rows, lo + 1] - cdf[rows, lo])

    return ((at(end) - at(start)) / cdf[:, -1].clamp_min(1e-12)).to(weights.dtype)
