"""The temporal distillation term: lambda x KL(teacher frame weights || student frame weights).

The training loop adds it to Hinton's term (`edgekd_train.distill.terms`): task (+ Hinton) + lambda x KL.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgekd_train.distill.terms import Outputs
from edgekd_train.temporal.interpolate import resample_weights

EPS = 1e-8


def temporal_kl(teacher: torch.Tensor, student: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """KL(teacher || student) between per-frame weight vectors `[B, T]`, averaged over the batch.

    The teacher's weights are resampled to the student's frames (mass kept) and both are
    renormalised to sum to one; the teacher never gets gradients.
    """
    if teacher.ndim != 2 or student.ndim != 2 or teacher.shape[0] != student.shape[0]:
        raise ValueError(f"temporal weights must be [B, T] with one row per window; got {tuple(teacher.shape)} "
                         f"(teacher) and {tuple(student.shape)} (student)")
    t = teacher.detach().to(student.dtype)
    if t.shape[-1] != student.shape[-1]:
        t = resample_weights(t, student.shape[-1])
    t = t.clamp_min(0.0)
    t = t / t.sum(dim=-1, keepdim=True).clamp_min(eps)
    s = student / student.sum(dim=-1, keepdim=True).clamp_min(eps)
    kl = (t * (torch.log(t.clamp_min(eps)) - torch.log(s.clamp_min(eps)))).sum(dim=-1)
    return kl.mean()


@dataclass(frozen=True)
class TemporalAttention:
    """lam x `temporal_kl(teacher frame weights, student frame weights)`: pulls where the student
    listens towards where the teacher does. Leave the term out for lam = 0."""

    lam: float

    def __post_init__(self) -> None:
        if self.lam <= 0:
            raise ValueError(f"TemporalAttention: lambda={self.lam} must be > 0 (leave the term out for none)")

    @property
    def needs_teacher(self) -> bool:
        return True

    def __call__(self, student: Outputs, teacher: Outputs | None, labels: torch.Tensor) -> torch.Tensor:
        if teacher is None or teacher.frame_weights is None:
            raise ValueError(f"lambda={self.lam} > 0 needs the teacher's temporal weights (edgekd_train.temporal.rollout)")
        if student.frame_weights is None:
            raise ValueError("the temporal term needs the student's frame weights: wrap it in "
                             "edgekd_train.temporal.query.TemporalStudent")
        return self.lam * temporal_kl(teacher.frame_weights, student.frame_weights)
