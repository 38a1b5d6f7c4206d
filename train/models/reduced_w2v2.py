"""The reduced wav2vec2 student: the teacher's CNN feature encoder and its first few transformer
layers, initialised from the teacher's weights (issue 4, section 4).

Distilled with Hinton's loss plus an L2 penalty that keeps the student's CNN features near the
teacher's (`beta * mean((f_s - f_t)^2)`), AdamW (weight decay 0.01), learning rate 2.5e-5, a
two-epoch linear warm-up and a linear decay to zero. It takes raw PCM and normalises each
window itself, so its ONNX export follows the model contract like the CNN students.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from train.distill.losses import hinton_loss

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
        from train.teacher import normalize_windows

        return self.model.wav2vec2.feature_extractor(normalize_windows(audio))

    def forward_with_features(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from train.teacher import normalize_windows

        x = normalize_windows(audio)
        feats = self.model.wav2vec2.feature_extractor(x)
        hidden, _ = self.model.wav2vec2.feature_projection(feats.transpose(1, 2))
        hidden = self.model.wav2vec2.encoder(hidden).last_hidden_state
        pooled = self.model.projector(hidden).mean(dim=1)
        return self.model.classifier(pooled), feats

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        from train.teacher import normalize_windows

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

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.beta < 0 or self.warmup_epochs < 0:
            raise ValueError(f"ReducedConfig: epochs, batch_size, lr must be positive, beta and warmup >= 0: {self}")


def reduced_loss(logits: torch.Tensor, teacher_logits: torch.Tensor | None, labels: torch.Tensor,
                 feats: torch.Tensor, teacher_feats: torch.Tensor | None, T: float, alpha: float,
                 beta: float) -> torch.Tensor:
    """Hinton's loss + beta x mean squared distance between student and teacher CNN features."""
    loss = hinton_loss(logits, teacher_logits, labels, T, alpha)
    if beta > 0:
        if teacher_feats is None:
            raise ValueError(f"beta={beta} > 0 needs the teacher's CNN features")
        loss = loss + beta * F.mse_loss(feats, teacher_feats.detach())
    return loss


def distill_reduced(student: ReducedWav2Vec2, teacher: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    val_x: torch.Tensor | None = None, val_y: torch.Tensor | None = None,
                    cfg: ReducedConfig | None = None, time_limit_s: float | None = None) -> dict[str, Any]:
    """Train `student` in place against `teacher` (a `Wav2Vec2ForSequenceClassification`, eval mode)."""
    cfg = cfg or ReducedConfig()
    torch.manual_seed(cfg.seed)
    teacher_net = ReducedWav2Vec2(teacher).eval()
    for p in teacher_net.parameters():
        p.requires_grad_(False)
    n = len(x)
    steps_per_epoch = max(1, n // cfg.batch_size)
    total = cfg.epochs * steps_per_epoch if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * steps_per_epoch)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    gen = torch.Generator().manual_seed(cfg.seed)
    hist: dict[str, Any] = {"epoch": [], "train_loss": [], "val_acc": [], "config": asdict(cfg), "steps": 0}
    best, best_acc, step, t0 = None, -math.inf, 0, time.monotonic()
    for epoch in range(cfg.epochs):
        if step >= total or (time_limit_s is not None and time.monotonic() - t0 > time_limit_s):
            break
        student.train()
        perm = torch.randperm(n, generator=gen)
        losses = []
        for b in range(steps_per_epoch):
            if step >= total:
                break
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            xb, yb = x[idx], y[idx]
            with torch.no_grad():
                tl, tf = teacher_net.forward_with_features(xb)
            logits, feats = student.forward_with_features(xb)
            loss = reduced_loss(logits, tl, yb, feats, tf, cfg.T, cfg.alpha, cfg.beta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(student.parameters(), 5.0)
            opt.step()
            sched.step()
            step += 1
            losses.append(float(loss.detach()))
        hist["epoch"].append(epoch + 1)
        hist["train_loss"].append(sum(losses) / max(1, len(losses)))
        if val_x is not None and val_y is not None:
            student.eval()
            with torch.no_grad():
                pred = torch.cat([student(val_x[i : i + 32]) for i in range(0, len(val_x), 32)]).argmax(-1)
            acc = float((pred == val_y).float().mean())
            hist["val_acc"].append(acc)
            if acc > best_acc:
                best_acc, best = acc, copy.deepcopy(student.state_dict())
        log.info("reduced w2v2 epoch %d: loss %.4f%s", epoch + 1, hist["train_loss"][-1],
                 f", val acc {hist['val_acc'][-1]:.3f}" if hist["val_acc"] else "")
    if best is not None:
        student.load_state_dict(best)
    student.eval()
    hist["steps"] = step
    return hist
