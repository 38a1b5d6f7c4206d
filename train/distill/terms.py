"""The loss terms that the training loop (`edgekd_train.distill.loop.distill`) adds up.

A term reads what the student and the teacher gave on one batch (`Outputs`: logits, and where
a term needs them, per-frame weights or CNN features) and the batch's labels, and returns one
scalar. The loop sums its terms in order; the teacher is run only when a term needs it.

- `Hinton(T, alpha)`: alpha x CE(labels) + (1 - alpha) x T^2 x KL(teacher || student) at T; where the
  teacher's `Outputs` carry `soft_weight`, per window (`edgekd_train.distill.losses.hinton_loss`).
- `FeaturePenalty(beta)`: beta x mean squared distance between student and teacher features.
- `edgekd_train.temporal.loss.TemporalAttention(lam)`: lam x KL(teacher frame weights || student's).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Protocol, Sequence

import torch
import torch.nn.functional as F

from edgekd_train.distill.losses import hinton_loss


@dataclass(frozen=True)
class Outputs:
    """What a network gives on a batch (or, cached, on every window: one row per window)."""

    logits: torch.Tensor  # [B, labels]
    frame_weights: torch.Tensor | None = None  # [B, frames]: where over time it listens
    features: torch.Tensor | None = None  # [B, channels, frames]: its CNN feature map
    # [B] in [0, 1], on a teacher's outputs: how much each window's soft targets count in Hinton's
    # term (0: that window learns from its label alone). None: every window fully. The loop sets it
    # from distill(soft_weights=...); no other term reads it.
    soft_weight: torch.Tensor | None = None

    @classmethod
    def of(cls, raw: Any) -> "Outputs":
        """A teacher's answer as `Outputs`: a logits tensor, a `(logits, frame weights)` pair (the form
        of `edgekd_train.temporal.rollout.teacher_outputs` and of shared `TeacherSteps`), or `Outputs`."""
        if isinstance(raw, Outputs):
            return raw
        if isinstance(raw, torch.Tensor):
            return cls(raw)
        if isinstance(raw, (tuple, list)) and len(raw) == 2:
            return cls(raw[0], frame_weights=raw[1])
        raise TypeError(f"a teacher gave {type(raw).__name__}; expected logits, (logits, frame weights) or Outputs")

    def _map(self, fn) -> "Outputs":
        return Outputs(**{f.name: None if (t := getattr(self, f.name)) is None else fn(t) for f in fields(self)})

    def detached(self) -> "Outputs":
        """Float32 and cut from any graph: what a teacher hands the loss."""
        return self._map(lambda t: t.detach().float())

    def to(self, device: torch.device | str) -> "Outputs":
        return self._map(lambda t: t.to(device))

    def rows(self, idx: torch.Tensor) -> "Outputs":
        return self._map(lambda t: t[idx])

    @classmethod
    def cat(cls, parts: Sequence["Outputs"]) -> "Outputs":
        return cls(**{f.name: None if getattr(parts[0], f.name) is None else torch.cat([getattr(p, f.name) for p in parts])
                      for f in fields(cls)})  # fmt: skip

    def __len__(self) -> int:
        return self.logits.shape[0]


class LossTerm(Protocol):
    """One objective of the loop. `needs_teacher` is False when the teacher's outputs are not read
    (e.g. Hinton with alpha = 1); then `teacher` is None."""

    @property
    def needs_teacher(self) -> bool: ...

    def __call__(self, student: Outputs, teacher: Outputs | None, labels: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Hinton:
    """alpha x CE(student, labels) + (1 - alpha) x T^2 x KL(softmax(teacher / T) || softmax(student / T)).
    alpha = 1: the labels alone (the teacher is not run). A teacher's `soft_weight` makes the soft
    term per window: window i gets alpha_i = 1 - soft_weight_i x (1 - alpha)."""

    T: float = 2.0
    alpha: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0 or self.T <= 0:
            raise ValueError(f"Hinton: alpha={self.alpha} must be in [0, 1] and T={self.T} > 0")

    @property
    def needs_teacher(self) -> bool:
        return self.alpha < 1.0

    def __call__(self, student: Outputs, teacher: Outputs | None, labels: torch.Tensor) -> torch.Tensor:
        if teacher is None:
            return hinton_loss(student.logits, None, labels, self.T, self.alpha)
        return hinton_loss(student.logits, teacher.logits, labels, self.T, self.alpha, weights=teacher.soft_weight)


@dataclass(frozen=True)
class FeaturePenalty:
    """beta x mean((f_student - f_teacher)^2) over CNN feature maps of the same shape: keeps a student
    initialised from the teacher (the reduced wav2vec2) near the teacher's features."""

    beta: float

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"FeaturePenalty: beta={self.beta} must be > 0 (leave the term out for none)")

    @property
    def needs_teacher(self) -> bool:
        return True

    def __call__(self, student: Outputs, teacher: Outputs | None, labels: torch.Tensor) -> torch.Tensor:
        if student.features is None or teacher is None or teacher.features is None:
            raise ValueError("FeaturePenalty needs CNN features from the student and the teacher "
                             "(Outputs.features: a student with `training_outputs`, a teacher_fn that gives them)")
        return self.beta * F.mse_loss(student.features, teacher.features.detach())


def total_loss(terms: Sequence[LossTerm], student: Outputs, teacher: Outputs | None,
               labels: torch.Tensor) -> torch.Tensor:
    """The sum of `terms`, in order."""
    if not terms:
        raise ValueError("no loss terms: give at least one (e.g. Hinton(T, alpha))")
    loss = terms[0](student, teacher, labels)
    for term in terms[1:]:
        loss = loss + term(student, teacher, labels)
    return loss


def training_outputs(model: torch.nn.Module, x: torch.Tensor) -> Outputs:
    """A student's outputs for the loss: its `training_outputs(x)` when it has one (temporal weights,
    CNN features), else its logits."""
    own = getattr(model, "training_outputs", None)
    return own(x) if callable(own) else Outputs(model(x))
