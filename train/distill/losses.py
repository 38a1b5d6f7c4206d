"""Hinton's knowledge-distillation loss.

    loss = alpha * CE(student, label) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))

alpha = 1 learns from the labels alone and ignores the teacher (the convention of
the study we follow); alpha = 0 learns from the teacher alone. The T^2 factor keeps
the soft term's gradient on the same scale as the hard term's when T changes
(the soft gradient shrinks as 1/T^2 otherwise).

With per-window `weights` w (in [0, 1]) the soft targets apply to each window in proportion to w:
window i is trained with its own alpha_i = 1 - w_i * (1 - alpha), and the loss is the batch mean of

    alpha_i * CE_i + (1 - alpha_i) * T^2 * KL_i

so w_i = 1 is Hinton's loss above and w_i = 0 the hard-label loss alone (alpha = 1) for that window.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch. No T^2 factor."""
    return F.kl_div(
        F.log_softmax(student_logits / T, dim=-1),
        F.log_softmax(teacher_logits.detach() / T, dim=-1),
        reduction="batchmean",
        log_target=True,
    )


def hinton_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor,
    T: float,
    alpha: float,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """alpha * CE + (1 - alpha) * T^2 * KL; the teacher's logits never receive gradients.

    `teacher_logits` may be None only when alpha == 1. `weights` (`[B]`, each in [0, 1]): how much
    each window's soft targets count (the module docstring); None: every window fully, the plain loss.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if T <= 0:
        raise ValueError(f"temperature T must be > 0, got {T}")
    hard = F.cross_entropy(student_logits, labels) if alpha > 0 else student_logits.new_zeros(())
    if alpha == 1.0:
        return hard
    if teacher_logits is None:
        raise ValueError(f"alpha={alpha} < 1 needs teacher logits; pass them, or use alpha=1 to train without a teacher")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"teacher logits {tuple(teacher_logits.shape)} and student logits {tuple(student_logits.shape)} differ: "
            "the teacher and the student must share the label list and order"
        )
    if weights is not None:
        return _weighted_hinton(student_logits, teacher_logits, labels, T, alpha, weights)
    soft = soft_kl(student_logits, teacher_logits, T)
    return alpha * hard + (1.0 - alpha) * (T * T) * soft


def _weighted_hinton(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, T: float,
                     alpha: float, weights: torch.Tensor) -> torch.Tensor:
    """The batch mean of alpha_i * CE_i + (1 - alpha_i) * T^2 * KL_i, alpha_i = 1 - w_i * (1 - alpha)."""
    w = weights.detach().to(student_logits.dtype)
    if w.shape != student_logits.shape[:1]:
        raise ValueError(f"weights {tuple(w.shape)} must hold one entry per window of the batch ({student_logits.shape[0]})")
    soft_share = w * (1.0 - alpha)  # 1 - alpha_i
    hard = F.cross_entropy(student_logits, labels, reduction="none")
    kl = F.kl_div(
        F.log_softmax(student_logits / T, dim=-1),
        F.log_softmax(teacher_logits.detach() / T, dim=-1),
        reduction="none",
        log_target=True,
    ).sum(-1)
    return ((1.0 - soft_share) * hard + soft_share * (T * T) * kl).mean()
