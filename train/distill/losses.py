"""Hinton's knowledge-distillation loss.

    loss = alpha * CE(student, label) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))

alpha = 1 learns from the labels alone and ignores the teacher (the convention of
the study we follow); alpha = 0 learns from the teacher alone. The T^2 factor keeps
the soft term's gradient on the same scale as the hard term's when T changes
(the soft gradient shrinks as 1/T^2 otherwise).
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
) -> torch.Tensor:
    """alpha * CE + (1 - alpha) * T^2 * KL; the teacher's logits never receive gradients.

    `teacher_logits` may be None only when alpha == 1.
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
    soft = soft_kl(student_logits, teacher_logits, T)
    return alpha * hard + (1.0 - alpha) * (T * T) * soft
