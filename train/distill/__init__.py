"""Knowledge distillation: Hinton's loss, the training loop, batch augmentation on the device.

- `losses`: `hinton_loss(student_logits, teacher_logits, labels, T, alpha)`.
- `loop`: `DistillConfig` and `distill(student, train_x, train_y, val_x, val_y, ...)`.
- `tensor_augment`: `TensorAugment`, random crop/shift/gain/noise on `[B, T]` tensors.

Only the loss is re-exported here; import `loop` and `tensor_augment` from their modules.
"""

from train.distill.losses import hinton_loss, soft_kl

__all__ = ["hinton_loss", "soft_kl"]
