"""Knowledge distillation: Hinton's loss, the loss terms, the training loop, batch augmentation on the device.

- `losses`: `hinton_loss(student_logits, teacher_logits, labels, T, alpha)`.
- `terms`: `Outputs`, the `LossTerm` protocol, `Hinton` and `FeaturePenalty`, `total_loss`.
- `loop`: `DistillConfig` and `distill(student, train_x, train_y, val_x, val_y, ..., terms=...)`, the one
  loop every student, the reduced wav2vec2 and the scratch teacher are trained by.
- `teacher_steps`: a teacher's outputs on every batch of a seed, computed once and shared.
- `tensor_augment`: `TensorAugment`, random crop/shift/gain/noise on `[B, T]` tensors.

Only the loss is re-exported here; import `loop` and `tensor_augment` from their modules.
"""

from edgekd_train.distill.losses import hinton_loss, soft_kl

__all__ = ["hinton_loss", "soft_kl"]
