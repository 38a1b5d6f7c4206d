"""Keyword-spotting students, as small as on-device keyword models are.

All take raw PCM `[B, samples]` (the log-mel front end of `edgekd_train.models.frontend` inside,
40 mels, 30 ms windows, 10 ms hop at 16 kHz) and expose the three stages the temporal
distillation hooks into: `features(wave) -> [B, C, frames]`, `pool(h) -> (pooled [B, C],
weights [B, frames])`, `head(pooled) -> logits`.

- `tcresnet`: TC-ResNet8 (Choi et al. 2019): the mel bins as channels of a 1-D temporal
  convolution, three residual blocks of k=9 convolutions (stride 2), average pooling.
- `crnn`: two 2-D convolutions that fold frequency, a GRU over time, average pooling.
- `attrnn`: Att-RNN (de Andrade et al. 2018): (5x1) convolutions, two bidirectional LSTM
  layers, dot-product attention with a query from the middle frame.
- `mhattrnn`: MHAtt-RNN (Rybakov et al. 2020): Att-RNN with four attention heads.

The two attention models set `temporal_attention = True`: their pooling weights are what
the temporal loss compares with the teacher's. The others get a training-only query.
"""

from __future__ import annotations

import torch
from torch import nn

from edgekd_train.models.frontend import LogMel, LogMelConfig
from edgekd_train.models.students import PooledClassifier

KWS_NAMES = ("tcresnet", "crnn", "attrnn", "mhattrnn")


def kws_frontend(sample_rate: int = 16000) -> LogMelConfig:
    ms = sample_rate / 1000.0
    return LogMelConfig(sample_rate, n_fft=round(30 * ms), hop=round(10 * ms), n_mels=40)


class _KWSBase(PooledClassifier):
    temporal_attention = False

    def __init__(self, name: str, n_labels: int, sample_rate: int, dropout: float) -> None:
        super().__init__()
        if n_labels < 1:
            raise ValueError(f"n_labels must be >= 1, got {n_labels}")
        self.name, self.n_labels, self.sample_rate = name, n_labels, sample_rate
        self.frontend = LogMel(kws_frontend(sample_rate))
        self.dropout = nn.Dropout(dropout)

    def pool(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = h.shape[-1]
        weights = torch.full((h.shape[0], frames), 1.0 / frames, dtype=h.dtype, device=h.device)
        return h.mean(dim=-1), weights

    def describe(self) -> dict[str, object]:
        return {"student": self.name, "n_labels": self.n_labels, "family": "kws"}


class _ResBlock1d(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, k: int = 9) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(cin, cout, k, stride=stride, padding=k // 2, bias=False)
        self.bn1 = nn.BatchNorm1d(cout)
        self.conv2 = nn.Conv1d(cout, cout, k, padding=k // 2, bias=False)
        self.bn2 = nn.BatchNorm1d(cout)
        self.skip = (nn.Sequential(nn.Conv1d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm1d(cout))
                     if stride != 1 or cin != cout else nn.Identity())  # fmt: skip
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + self.skip(x))


class TCResNet(_KWSBase):
    """TC-ResNet8, width 1: channels 16 -> 24 -> 32 -> 48 (about 66K parameters)."""

    def __init__(self, n_labels: int, sample_rate: int = 16000, widths: tuple[int, ...] = (16, 24, 32, 48)) -> None:
        super().__init__("tcresnet", n_labels, sample_rate, dropout=0.1)
        mels = self.frontend.cfg.n_mels
        self.stem = nn.Sequential(nn.Conv1d(mels, widths[0], 3, padding=1, bias=False), nn.BatchNorm1d(widths[0]),
                                  nn.ReLU())  # fmt: skip
        self.blocks = nn.Sequential(*[_ResBlock1d(a, b, 2) for a, b in zip(widths[:-1], widths[1:])])
        self.channels = widths[-1]
        self.classifier = nn.Linear(self.channels, n_labels)

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(self.frontend(wave).squeeze(1)))


class CRNN(_KWSBase):
    """Two strided 2-D convolutions (frequency folded by 4), a GRU over time, average pooling."""

    def __init__(self, n_labels: int, sample_rate: int = 16000, conv: int = 16, hidden: int = 64) -> None:
        super().__init__("crnn", n_labels, sample_rate, dropout=0.1)
        mels = self.frontend.cfg.n_mels
        self.convs = nn.Sequential(
            nn.Conv2d(1, conv, (5, 3), stride=(2, 1), padding=(2, 1), bias=False), nn.BatchNorm2d(conv), nn.ReLU(),
            nn.Conv2d(conv, conv, 3, stride=(2, 1), padding=1, bias=False), nn.BatchNorm2d(conv), nn.ReLU(),
        )  # fmt: skip
        folded = conv * (((mels + 1) // 2 + 1) // 2)
        self.gru = nn.GRU(folded, hidden, batch_first=True)
        self.channels = hidden
        self.classifier = nn.Linear(hidden, n_labels)

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        h = self.convs(self.frontend(wave))  # [B, C, M', T]
        b, c, m, t = h.shape
        out, _ = self.gru(h.reshape(b, c * m, t).transpose(1, 2))
        return out.transpose(1, 2)


class AttRNN(_KWSBase):
    """Att-RNN: (5x1) convs, 2 bidirectional LSTM layers, attention with a middle-frame query.

    `heads` > 1 is MHAtt-RNN: one query per head, the heads' contexts concatenated; the
    temporal weights are the heads' mean.
    """

    temporal_attention = True

    def __init__(self, n_labels: int, sample_rate: int = 16000, hidden: int = 32, heads: int = 1) -> None:
        super().__init__("attrnn" if heads == 1 else "mhattrnn", n_labels, sample_rate, dropout=0.1)
        mels = self.frontend.cfg.n_mels
        self.convs = nn.Sequential(
            nn.Conv2d(1, 10, (5, 1), padding=(2, 0)), nn.BatchNorm2d(10), nn.ReLU(),
            nn.Conv2d(10, 1, (5, 1), padding=(2, 0)), nn.BatchNorm2d(1), nn.ReLU(),
        )  # fmt: skip
        self.lstm = nn.LSTM(mels, hidden, num_layers=2, batch_first=True, bidirectional=True)
        d = 2 * hidden
        self.heads, self.channels = heads, d
        self.query = nn.Linear(d, d * heads)
        self.mlp = nn.Sequential(nn.Linear(d * heads, 64), nn.ReLU(), nn.Linear(64, 32))
        self.classifier = nn.Linear(32, n_labels)

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        h = self.convs(self.frontend(wave)).squeeze(1)  # [B, M, T]
        out, _ = self.lstm(h.transpose(1, 2))
        return out.transpose(1, 2)  # [B, 2*hidden, T]

    def pool(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, d, t = h.shape
        mid = h[:, :, t // 2]
        q = self.query(mid).reshape(b, self.heads, d)  # [B, H, d]
        weights = torch.softmax(torch.bmm(q, h), dim=-1)  # [B, H, T]
        context = torch.bmm(weights, h.transpose(1, 2)).reshape(b, self.heads * d)
        return context, weights.mean(dim=1)

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.relu(self.mlp(pooled))))


def build_kws(name: str, n_labels: int, sample_rate: int = 16000) -> _KWSBase:
    """A freshly initialised keyword student (seed torch first for a reproducible init)."""
    if name == "tcresnet":
        return TCResNet(n_labels, sample_rate)
    if name == "crnn":
        return CRNN(n_labels, sample_rate)
    if name == "attrnn":
        return AttRNN(n_labels, sample_rate, heads=1)
    if name == "mhattrnn":
        return AttRNN(n_labels, sample_rate, heads=4)
    raise ValueError(f"unknown keyword student {name!r}; choose one of {', '.join(KWS_NAMES)}")
