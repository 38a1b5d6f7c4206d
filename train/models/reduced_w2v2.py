"""The reduced wav2vec2 student: the teacher's CNN feature encoder and its first few transformer
layers, initialised from the teacher's weights (issue 4, section 4).

Distilled by the training loop (`edgekd_train.distill.loop.distill`) with Hinton's term plus a feature
penalty that keeps the student's CNN features near the teacher's (`beta * mean((f_s - f_t)^2)`),
AdamW (weight decay 0.01 on every parameter), learning rate 2.5e-5, a two-epoch linear warm-up and
a linear decay to zero, gradients clipped at norm 5. It takes raw PCM and normalises each
window itself, so its ONNX export follows the model contract like the CNN students.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgekd_train.distill.terms import FeaturePenalty, Hinton, LossTerm, Outputs

log = logging.getLogger(__name__)


class ReducedWav2Vec2(nn.Module):
    """Raw PCM `[B, samples]` -> logits, through a wav2vec2 classifier with `layers` transformer layers."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.n_labels = int(model.config.num_labels)
        self.name = f"w2v2-{model.config.num_hidden_layers}l"
        self.temporal_attention = True

    @classmethod
    def from_teacher(cls, teacher: nn.Module, layers: int = 2) -> "ReducedWav2Vec2":
        """A copy of `teacher` (a `Wav2Vec2ForSequenceClassification`) keeping its first `layers` layers."""
        n = int(teacher.config.num_hidden_layers)
        if not 1 <= layers <= n:
            raise ValueError(f"layers={layers}: the teacher has {n} transformer layers; keep between 1 and {n}")
        cfg = copy.deepcopy(teacher.config)
        cfg.num_hidden_layers = layers
        cfg.layerdrop = 0.0
        student = type(teacher)(cfg)
        keep = {k: v for k, v in teacher.state_dict().items()
                if not k.startswith("wav2vec2.encoder.layers.") or int(k.split(".")[3]) < layers}  # fmt: skip
        missing, unexpected = student.load_state_dict(keep, strict=False)
        if missing or unexpected:
            raise ValueError(f"teacher and reduced student disagree: missing {missing[:3]}, unexpected {unexpected[:3]}")
        return cls(student)

    def cnn_features(self, audio: torch.Tensor) -> torch.Tensor:
        """The CNN feature encoder's output `[B, channels, frames]`."""
        from edgekd_train.teacher import normalize_windows

        return self.model.wav2vec2.feature_extractor(normalize_windows(audio))

    def forward_with_features(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from edgekd_train.teacher import normalize_windows

        x = normalize_windows(audio)
        feats = self.model.wav2vec2.feature_extractor(x)
        hidden, _ = self.model.wav2vec2.feature_projection(feats.transpose(1, 2))
        hidden = self.model.wav2vec2.encoder(hidden).last_hidden_state
        pooled = self.model.projector(hidden).mean(dim=1)
        return self.model.classifier(pooled), feats

    def training_outputs(self, audio: torch.Tensor) -> Outputs:
        """The logits and CNN features that the training loop's terms read."""
        logits, feats = self.forward_with_features(audio)
        return Outputs(logits, features=feats)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        from edgekd_train.teacher import normalize_windows

        return self.model(input_values=normalize_windows(audio)).logits


@dataclass
class ReducedConfig:
    epochs: int = 10
    batch_size: int = 16
    lr: float = 2.5e-5
    weight_decay: float = 0.01
    warmup_epochs: float = 2.0
    T: float = 2.0
    alpha: float = 0.5
    beta: float = 1.0  # weight of the L2 penalty on CNN features
    seed: int = 0
    max_steps: int | None = None
    grad_clip: float | None = 5.0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.beta < 0 or self.warmup_epochs < 0:
            raise ValueError(f"ReducedConfig: epochs, batch_size, lr must be positive, beta and warmup >= 0: {self}")

    def loop_config(self, time_limit_s: float | None = None):
        """The training loop's settings: every window once per epoch on the CPU, no weight average, the
        best validation epoch kept, the teacher run on every batch (its CNN features are too large to keep)."""
        from edgekd_train.distill.loop import DistillConfig

        return DistillConfig(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
            weight_decay_all=True, warmup_epochs=self.warmup_epochs, T=self.T, alpha=self.alpha, seed=self.seed,
            max_steps=self.max_steps, grad_clip=self.grad_clip, device="cpu", progress=False, eval_batch_size=32,
            cache_teacher=False, time_limit_s=time_limit_s,
        )  # fmt: skip

    def terms(self) -> list[LossTerm]:
        return [Hinton(self.T, self.alpha)] + ([FeaturePenalty(self.beta)] if self.beta > 0 else [])


def distill_reduced(student: ReducedWav2Vec2, teacher: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    val_x: torch.Tensor | None = None, val_y: torch.Tensor | None = None,
                    cfg: ReducedConfig | None = None, time_limit_s: float | None = None) -> dict[str, Any]:
    """Train `student` in place against `teacher` (a `Wav2Vec2ForSequenceClassification`, eval mode)."""
    from edgekd_train.distill.loop import distill

    cfg = cfg or ReducedConfig()
    teacher_net = ReducedWav2Vec2(teacher).eval()
    for p in teacher_net.parameters():
        p.requires_grad_(False)

    def teacher_fn(xb: torch.Tensor) -> Outputs:
        logits, feats = teacher_net.forward_with_features(xb)
        return Outputs(logits, features=feats)

    return distill(student, x, y, val_x, val_y, teacher_fn=teacher_fn, cfg=cfg.loop_config(time_limit_s),
                   terms=cfg.terms())
