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
- `lstmp`: an LSTM with a projection layer (LSTMP, Sak et al. 2014; the on-device keyword LSTMs
  of Sainath/Chen) over the log-mel frames, average pooling.

The two attention models set `temporal_attention = True`: their pooling weights are what
the temporal loss compares with the teacher's. The others get a training-only query.

A student is one class registered under its name with `@keyword_student("name", **settings)`:
`build_kws`, `KWS_NAMES`, `edgekd_train.student_run.build_any_student`, the parameter/MAC table
(`edgekd train students`) and the export tests all read the registry.
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable, TypeVar

import torch
from torch import nn

from edgekd_train.models.frontend import LogMel, LogMelConfig
from edgekd_train.models.students import PooledClassifier

_BUILDERS: dict[str, Callable[[int, int], "_KWSBase"]] = {}
_K = TypeVar("_K", bound=type)


def keyword_student(name: str, **settings: object) -> Callable[[_K], _K]:
    """Class decorator: register `cls(n_labels, sample_rate, **settings)` as the keyword student `name`."""

    def register(cls: _K) -> _K:
        if name in _BUILDERS:
            raise ValueError(f"keyword student {name!r} is registered twice; give {cls.__name__} another name")
        _BUILDERS[name] = functools.partial(cls, **settings)
        return cls

    return register


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


@keyword_student("tcresnet")
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


@keyword_student("crnn")
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


@keyword_student("mhattrnn", heads=4)
@keyword_student("attrnn", heads=1)
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


def _lstmp_steps(gates_x: torch.Tensor, w_hh: torch.Tensor, w_hr: torch.Tensor) -> torch.Tensor:
    """The recurrence of a one-layer LSTMP from zero state, written as a loop that exports (ONNX `Loop`)
    once scripted (`_scripted_steps`).

    `gates_x` `[B, T, 4H]` is `W_ih x_t + b_ih + b_hh` (gate order i, f, g, o as in `nn.LSTM`);
    returns the projected outputs `r_t = W_hr (o_t * tanh(c_t))`, `[B, T, P]`.
    """
    batch = gates_x.shape[0]
    r = torch.zeros(batch, w_hr.shape[0], dtype=gates_x.dtype, device=gates_x.device)
    c = torch.zeros(batch, w_hr.shape[1], dtype=gates_x.dtype, device=gates_x.device)
    outs: list[torch.Tensor] = []
    for t in range(gates_x.shape[1]):
        i, f, g, o = (gates_x[:, t] + torch.mm(r, w_hh.t())).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        r = torch.mm(torch.sigmoid(o) * torch.tanh(c), w_hr.t())
        outs.append(r)
    return torch.stack(outs, 1)


@functools.cache
def _scripted_steps() -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """`_lstmp_steps` as TorchScript, which the (TorchScript-based) ONNX exporter turns into a `Loop` over
    the frames instead of unrolling the frames of the example input; compiled on the first export."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=DeprecationWarning)
        return torch.jit.script(_lstmp_steps)


@keyword_student("lstmp")
class LSTMP(_KWSBase):
    """LSTMP: per-mel BatchNorm of the log-mel, one LSTM layer whose state is projected (hidden 128,
    projection 64: the recurrence and the output are 64 wide), average pooling, a linear head.

    Training and torch inference run `nn.LSTM(proj_size=...)`. The ONNX LSTM operator has no
    projection and torch's exporter refuses `proj_size`, so under export the same weights run as
    one matrix product for the input gates of every frame and an exportable loop for the
    recurrence (`_lstmp_steps`); the parity check of the export holds the two equal.
    """

    def __init__(self, n_labels: int, sample_rate: int = 16000, hidden: int = 128, proj: int = 64) -> None:
        super().__init__("lstmp", n_labels, sample_rate, dropout=0.1)
        mels = self.frontend.cfg.n_mels
        self.norm = nn.BatchNorm1d(mels)
        self.lstm = nn.LSTM(mels, hidden, proj_size=proj, batch_first=True)
        self.channels = proj
        self.classifier = nn.Linear(proj, n_labels)

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.frontend(wave).squeeze(1)).transpose(1, 2)  # [B, T, M]
        if torch.onnx.is_in_onnx_export():
            lstm = self.lstm
            gates = nn.functional.linear(x, lstm.weight_ih_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0)
            out = _scripted_steps()(gates, lstm.weight_hh_l0, lstm.weight_hr_l0)
        else:
            out, _ = self.lstm(x)
        return out.transpose(1, 2)  # [B, proj, T]


KWS_NAMES = tuple(_BUILDERS)


def build_kws(name: str, n_labels: int, sample_rate: int = 16000) -> _KWSBase:
    """A freshly initialised keyword student (seed torch first for a reproducible init)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown keyword student {name!r}; choose one of {', '.join(KWS_NAMES)}")
    return _BUILDERS[name](n_labels, sample_rate)
