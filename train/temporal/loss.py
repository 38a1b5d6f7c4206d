"""The temporal distillation loss: task (+ Hinton) + lambda x KL(teacher weights || student weights)."""

from __future__ import annotations

import torch

from train.distill.losses import hinton_loss
from train.temporal.interpolate import resample_weights

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


def temporal_distill_loss(
    student_logits: torch.Tensor,
    student_weights: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    teacher_weights: torch.Tensor | None,
    T: float = 2.0,
    alpha: float = 1.0,
    lam: float = 0.0,
) -> torch.Tensor:
    """`hinton_loss(...) + lam * temporal_kl(teacher_weights, student_weights)`.

    alpha = 1 and lam = 0 is plain cross-entropy; lam > 0 needs the teacher's weights.
    """
    if lam < 0:
        raise ValueError(f"lambda={lam} must be >= 0")
    loss = hinton_loss(student_logits, teacher_logits, labels, T, alpha)
    if lam == 0:
        return loss
    if teacher_weights is None:
        raise ValueError(f"lambda={lam} > 0 needs the teacher's temporal weights (train.temporal.rollout)")
    return loss + lam * temporal_kl(teacher_weights, student_weights)
