"""Knowledge distillation: Hinton's loss and the training loop.

- `losses`: `hinton_loss(student_logits, teacher_logits, labels, T, alpha)`.
- `loop`: `DistillConfig` and `distill(student, train_x, train_y, val_x, val_y, ...)`.
"""

from train.distill.losses import hinton_loss, soft_kl

__all__ = ["hinton_loss", "soft_kl"]
