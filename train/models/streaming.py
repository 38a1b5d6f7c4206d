"""A keyword student made to stream: causal dilated convolutions over log-mel frames.

`streamtcn` (about 14K parameters): the log-mel front end of Wav2Tiny (20 ms / 15 ms, 40 mels)
without per-window normalisation, a fixed per-band affine (a BatchNorm over the mel bands, frozen
at export), one convolution over time (k=3, the mel bands as channels), five residual blocks of a
depthwise dilated convolution (k=3, dilations 1, 2, 4, 8, 8) and a pointwise one, then the maximum
over time and a linear head. No convolution is padded: each one shortens the sequence by what it
looks back, so every output frame is computed from the `receptive_field` frames that end at it and
from nothing else (no padding, no statistic over the window).

That makes the model's whole-window output a function that a step graph can compute exactly from
a few new frames at a time: `StreamStep` keeps, per convolution, the last `(k - 1) * dilation`
frames of its input, and for the pooling the last `pool_frames - 1` top-level frames; after
`frames_per_window` frames since a reset its logits are the whole graph's on the window that ends
at that frame (`edgekd.stream` with `equals: whole_graph`, docs/model-contract.md).
"""

from __future__ import annotations

import torch
from torch import nn

from edgekd_train.models.frontend import LogMel, LogMelConfig
from edgekd_train.models.students import PooledClassifier

STREAM_NAMES = ("streamtcn", "streamtcn_rel")
KERNEL = 3
DILATIONS = (1, 2, 4, 8, 8)


def stream_frontend(sample_rate: int = 16000) -> LogMelConfig:
    """Wav2Tiny's front end, un-normalised: models with it share one incremental log-mel per stream."""
    ms = sample_rate / 1000.0
    return LogMelConfig(sample_rate, n_fft=round(20 * ms), hop=round(15 * ms), n_mels=40, normalize=False)


class _Block(nn.Module):
    """Depthwise dilated convolution (unpadded), pointwise convolution, BatchNorm, ReLU, residual."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.dilation = dilation
        self.lookback = (KERNEL - 1) * dilation
        self.depthwise = nn.Conv1d(channels, channels, KERNEL, dilation=dilation, groups=channels, bias=False)
        self.pointwise = nn.Conv1d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, C, T]` -> `[B, C, T - lookback]`: output frame t sees input frames t .. t + lookback."""
        y = self.bn(self.pointwise(self.depthwise(x)))
        return torch.relu(y + x[:, :, self.lookback :])


class StreamTCN(PooledClassifier):
    """Raw PCM `[B, samples]` -> logits; `features` -> `[B, C, frames - receptive_field + 1]`."""

    temporal_attention = False

    def __init__(self, n_labels: int, sample_rate: int = 16000, channels: int = 40, dropout: float = 0.1,
                 relative: bool = False) -> None:  # fmt: skip
        super().__init__()
        if n_labels < 1:
            raise ValueError(f"n_labels must be >= 1, got {n_labels}")
        self.name = "streamtcn_rel" if relative else "streamtcn"
        self.n_labels, self.sample_rate, self.channels = n_labels, sample_rate, channels
        # relative: each frame's log-mel less its mean over the bands (a gain is an added constant in
        # the log domain, so this is the same whatever the loudness), frame by frame: no state, no field
        self.relative = relative
        self.frontend = LogMel(stream_frontend(sample_rate))
        mels = self.frontend.cfg.n_mels
        self.norm = nn.BatchNorm1d(mels)  # a fixed affine per mel band once trained: no statistic of the window
        self.stem = nn.Conv1d(mels, channels, KERNEL, bias=False)
        self.stem_bn = nn.BatchNorm1d(channels)
        self.blocks = nn.ModuleList(_Block(channels, d) for d in DILATIONS)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels, n_labels)

    @property
    def receptive_field(self) -> int:
        """Log-mel frames that one top-level frame depends on."""
        return 1 + (KERNEL - 1) + sum(b.lookback for b in self.blocks)

    def body(self, logmel: torch.Tensor) -> torch.Tensor:
        """`[B, n_mels, frames]` un-normalised log-mel -> `[B, C, frames - receptive_field + 1]`."""
        if self.relative:
            logmel = logmel - logmel.mean(dim=1, keepdim=True)
        h = torch.relu(self.stem_bn(self.stem(self.norm(logmel))))
        for block in self.blocks:
            h = block(h)
        return h

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        return self.body(self.frontend(wave).squeeze(1))

    def pool(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = h.shape[-1]
        weights = torch.full((h.shape[0], frames), 1.0 / frames, dtype=h.dtype, device=h.device)
        return h.amax(dim=-1), weights

    def describe(self) -> dict[str, object]:
        return {"student": self.name, "n_labels": self.n_labels, "family": "stream", "channels": self.channels,
                "relative": self.relative,
                "kernel": KERNEL, "dilations": list(DILATIONS), "receptive_field_frames": self.receptive_field}

    def state_shapes(self, frames_per_window: int) -> list[tuple[str, tuple[int, ...]]]:
        """The step graph's state tensors, in order: one per convolution, then the pooling's."""
        mels = self.frontend.cfg.n_mels
        shapes = [("stem", (1, mels, KERNEL - 1))]
        shapes += [(f"block{i}", (1, self.channels, b.lookback)) for i, b in enumerate(self.blocks)]
        shapes.append(("pool", (1, self.channels, self.pool_frames(frames_per_window) - 1)))
        return shapes

    def pool_frames(self, frames_per_window: int) -> int:
        """Top-level frames in one window: the maximum runs over these."""
        pool = frames_per_window - self.receptive_field + 1
        if pool < 1:
            raise ValueError(f"a window of {frames_per_window} frames is shorter than the receptive field "
                             f"({self.receptive_field} frames)")
        return pool


def _affine(bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """An eval-mode BatchNorm as `scale * x + shift`."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


class StreamStep(nn.Module):
    """One step of a trained `StreamTCN`: `(frames [1, n_mels, n], *state) -> (logits [1, n_labels], *state)`.

    `n` is any number of new frames (at least one); the logits are those of the window of
    `frames_per_window` frames that ends at the last new frame. The weights are the model's own,
    folded for a graph of few nodes (on onnxruntime a node's fixed cost outweighs a step's
    arithmetic): the per-band affine and the BatchNorms go into the convolutions, and each block's
    depthwise and pointwise convolutions become one dense convolution. The stem's state therefore
    holds raw log-mel frames (relative ones for `streamtcn_rel`).
    """

    def __init__(self, model: StreamTCN, frames_per_window: int) -> None:
        super().__init__()
        model = model.eval()
        # look-backs as Python ints: the exported graph slices by constants (no Shape/Gather per call)
        self.keeps = [shape[-1] for _, shape in model.state_shapes(frames_per_window)]
        with torch.no_grad():
            a, c = _affine(model.norm)
            g, shift = _affine(model.stem_bn)
            w = model.stem.weight
            self.stem = nn.Conv1d(w.shape[1], w.shape[0], KERNEL)
            self.stem.weight.copy_(g[:, None, None] * w * a[None, :, None])
            self.stem.bias.copy_(g * (w * c[None, :, None]).sum((1, 2)) + shift)
            self.blocks = nn.ModuleList()
            for block in model.blocks:
                g, shift = _affine(block.bn)
                dense = g[:, None, None] * block.pointwise.weight * block.depthwise.weight[:, 0, :][None, :, :]
                conv = nn.Conv1d(dense.shape[1], dense.shape[0], KERNEL, dilation=block.dilation)
                conv.weight.copy_(dense)
                conv.bias.copy_(shift)
                self.blocks.append(conv)
        self.classifier = model.classifier
        self.relative = model.relative

    def forward(self, frames: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out: list[torch.Tensor] = []
        if self.relative:  # frame by frame, so the stem's state holds relative frames
            frames = frames - frames.mean(dim=1, keepdim=True)
        x = torch.cat([state[0], frames], dim=-1)  # each input with its look-back prepended
        out.append(x[:, :, -self.keeps[0] :])
        h = torch.relu(self.stem(x))
        for i, conv in enumerate(self.blocks):
            x = torch.cat([state[1 + i], h], dim=-1)
            out.append(x[:, :, -self.keeps[1 + i] :])
            h = torch.relu(conv(x) + h)
        x = torch.cat([state[-1], h], dim=-1)
        out.append(x[:, :, -self.keeps[-1] :])
        logits = self.classifier(x[:, :, -(self.keeps[-1] + 1) :].amax(dim=-1))
        return (logits, *out)


def build_streaming(name: str, n_labels: int, sample_rate: int = 16000) -> StreamTCN:
    if name in STREAM_NAMES:
        return StreamTCN(n_labels, sample_rate, relative=name == "streamtcn_rel")
    raise ValueError(f"unknown streaming student {name!r}; choose one of {', '.join(STREAM_NAMES)}")
