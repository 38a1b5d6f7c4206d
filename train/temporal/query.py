"""Student-side temporal weights: a student's own attention, or a training-only learnable query.

Students with attention over time (Att-RNN, MHAtt-RNN: `temporal_attention = True`) give
their own pooling weights (heads averaged). The others (TC-ResNet, CRNN, Wav2Small,
Wav2Tiny, the plain CNN) get a `TemporalQuery`: one learned query vector scored against
each frame of the feature map `features(wave) -> [B, C, frames]`, softmax over frames.
The query only shapes the feature map through the temporal loss during training; the
model's own forward (what ONNX export traces) never calls it, so the exported graph
holds none of its parameters.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edgekd_train.distill.terms import Outputs


class TemporalQuery(nn.Module):
    """`[B, C, frames]` -> softmax over frames of `<q, W h_t> / sqrt(d)`: `[B, frames]`."""

    def __init__(self, channels: int, dim: int | None = None) -> None:
        super().__init__()
        dim = dim or channels
        self.key = nn.Conv1d(channels, dim, kernel_size=1)
        self.query = nn.Parameter(torch.randn(dim) / math.sqrt(dim))
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        scores = torch.einsum("bdt,d->bt", self.key(h), self.query) * self.scale
        return torch.softmax(scores, dim=-1)


class TemporalStudent(nn.Module):
    """A student plus, when it has no attention of its own, a training-only `TemporalQuery`.

    `forward(wave)` is the student's own forward (logits); `forward_train(wave)` returns
    `(logits, weights [B, frames])` for the temporal loss (`training_outputs` for the loop);
    export `exportable()`.
    """

    def __init__(self, student: nn.Module, use_own_attention: bool | None = None) -> None:
        super().__init__()
        for part in ("features", "pool", "head"):
            if not callable(getattr(student, part, None)):
                raise TypeError(f"{type(student).__name__} has no `{part}`: temporal distillation needs "
                                "features(wave) -> [B, C, frames], pool(h) -> (pooled, weights), head(pooled)")
        own = bool(getattr(student, "temporal_attention", False)) if use_own_attention is None else use_own_attention
        self.student = student
        self.query: TemporalQuery | None = None if own else TemporalQuery(int(student.channels))
        self.n_labels = getattr(student, "n_labels", None)
        self.name = getattr(student, "name", type(student).__name__)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.student(wave)

    def forward_train(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.student.features(wave)
        pooled, weights = self.student.pool(h)
        logits = self.student.head(pooled)
        if self.query is not None:
            weights = self.query(h)
        return logits, weights

    def training_outputs(self, wave: torch.Tensor) -> Outputs:
        """The logits and frame weights that the training loop's terms read."""
        logits, weights = self.forward_train(wave)
        return Outputs(logits, frame_weights=weights)

    def exportable(self) -> nn.Module:
        """The student alone: what `edgekd_train.export.export_onnx` should get."""
        return self.student
