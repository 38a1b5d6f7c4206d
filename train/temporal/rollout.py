"""Attention rollout of a wav2vec2 teacher, reduced to one weight per frame.

Abnar & Zuidema (2020): each layer's attention, heads averaged, is mixed with the identity
for the residual connection, `A_l = 0.5 * mean_heads(attn_l) + 0.5 * I`, rows renormalised,
and the layers are chained, `R = A_L @ ... @ A_1`. Row `i` of `R` says how much the output
at frame `i` draws on each input frame after all layers.

One weight per frame: the teacher's classification head mean-pools the last hidden states
over frames, so the pooled representation draws on input frame `j` with weight
`mean_i R[i, j]`: the mean over the query rows (the column mean). That vector is
non-negative and sums to one (every row of `R` does).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def attention_rollout(attentions: Sequence[torch.Tensor], residual: float = 0.5) -> torch.Tensor:
    """`[B, T, T]` rollout of per-layer attentions `[B, heads, T, T]` (first layer first)."""
    if not attentions:
        raise ValueError("attention_rollout needs the attention of at least one layer (output_attentions=True)")
    if not 0.0 <= residual <= 1.0:
        raise ValueError(f"residual={residual} must be in [0, 1] (0.5: attention and skip path weigh the same)")
    rollout: torch.Tensor | None = None
    for i, att in enumerate(attentions):
        if att.ndim != 4 or att.shape[-1] != att.shape[-2]:
            raise ValueError(f"layer {i} attention has shape {tuple(att.shape)}; expected [batch, heads, T, T]")
        a = att.float().mean(dim=1)
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = (1.0 - residual) * a + residual * eye
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    assert rollout is not None
    return rollout


def frame_weights(rollout: torch.Tensor) -> torch.Tensor:
    """`[B, T]` weight of each input frame in the mean-pooled output: the column means of `rollout`."""
    w = rollout.mean(dim=-2)
    return w / w.sum(dim=-1, keepdim=True)


def use_eager_attention(model: nn.Module) -> nn.Module:
    """Switch a transformers model to eager attention, the implementation that returns its weights."""
    impl = getattr(getattr(model, "config", None), "_attn_implementation", "eager")
    if impl != "eager":
        if not hasattr(model, "set_attn_implementation"):
            raise ValueError(
                f"teacher uses {impl!r} attention, which returns no weights; build it with attn_implementation='eager'"
            )
        model.set_attn_implementation("eager")
    return model


@torch.no_grad()
def teacher_outputs(model: nn.Module, audio: torch.Tensor, residual: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits `[B, labels]` and per-frame weights `[B, frames]` of a wav2vec2 classifier on raw PCM.

    The audio is normalised per window as `edgekd_train.teacher.AudioTeacher` does. A teacher that pools
    over time itself (`forward_with_attention`, e.g. `edgekd_train.ensemble.StudentEnsemble`) gives its own
    pooling weights instead of an attention rollout.
    """
    from edgekd_train.teacher import normalize_windows

    if hasattr(model, "forward_with_attention"):
        model.eval()
        logits, weights = model.forward_with_attention(audio)
        return logits.float(), weights.float()
    use_eager_attention(model)
    model.eval()
    out = model(input_values=normalize_windows(audio), output_attentions=True)
    if not out.attentions:
        raise ValueError("the teacher returned no attentions; is it a transformer (wav2vec2, HuBERT) classifier?")
    return out.logits.float(), frame_weights(attention_rollout(out.attentions, residual))


class PairedTeacher(nn.Module):
    """Two teachers as one: the logits of `logits_from`, the per-frame weights of `maps_from`.

    When the transformer whose attention says *when* is not the model that best says *what*
    (a wav2vec2 trained from random weights on a small corpus, beside a stronger student
    ensemble), the soft targets can come from one and the temporal maps from the other.
    """

    def __init__(self, logits_from: nn.Module, maps_from: nn.Module) -> None:
        super().__init__()
        self.logits_from, self.maps_from = logits_from, maps_from

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return teacher_outputs(self.logits_from, audio)[0]

    def forward_with_attention(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return teacher_outputs(self.logits_from, audio)[0], teacher_outputs(self.maps_from, audio)[1]


@torch.no_grad()
def cache_teacher(
    model: nn.Module, windows: torch.Tensor, batch_size: int = 32, residual: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """`teacher_outputs` for every window of `windows`, batch by batch (on the model's device)."""
    device = next(model.parameters()).device
    logits, weights = [], []
    for i in range(0, len(windows), batch_size):
        lo, w = teacher_outputs(model, windows[i : i + batch_size].to(device), residual)
        logits.append(lo.cpu())
        weights.append(w.cpu())
    return torch.cat(logits), torch.cat(weights)
