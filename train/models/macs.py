"""Multiply-accumulates of a forward pass, counted with hooks on Conv, Linear, LSTM and GRU layers.

A convolution costs `(C_in / groups) * prod(kernel)` MACs per output element; a
linear layer `in_features` per output element; an LSTM (GRU) 4 (3) x hidden x (input +
hidden) per step, layer and direction; an LSTM with a projection (`proj_size` P) 4 x hidden x
(input + P) + hidden x P, its recurrence and output being P wide. Element-wise work (BatchNorm, ReLU,
the log, pooling, softmax) is not counted, as is usual for these figures; the
frozen DFT convolution and mel projection of the front end are, since the device
runs them too.
"""

from __future__ import annotations

import math

import torch
from torch import nn

_COUNTED = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.LSTM, nn.GRU)
_GATES = {nn.LSTM: 4, nn.GRU: 3}


def layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """MACs of one call of `module` that produced `output` (all batch items)."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        per_output = (module.in_channels // module.groups) * math.prod(module.kernel_size)
        return output.numel() * per_output
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if isinstance(module, (nn.LSTM, nn.GRU)):  # per step, layer and direction: gates x hidden x (input + hidden)
        seq = output[0] if isinstance(output, tuple) else output
        steps = seq.shape[0] * seq.shape[1]  # batch x time, either layout
        dirs = 2 if module.bidirectional else 1
        total = 0
        proj = getattr(module, "proj_size", 0)
        out = proj or module.hidden_size  # the width of the recurrent state fed back and passed on
        for layer in range(module.num_layers):
            cin = module.input_size if layer == 0 else out * dirs
            per_step = _GATES[type(module)] * module.hidden_size * (cin + out) + module.hidden_size * proj
            total += steps * dirs * per_step
        return total
    raise TypeError(f"no MAC rule for {type(module).__name__}")


@torch.no_grad()
def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """MACs of `model(example)` for batch size 1 (example must have batch size 1)."""
    if example.shape[0] != 1:
        raise ValueError(f"count_macs wants a batch of one, got shape {tuple(example.shape)}")
    total = 0

    def hook(module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        total += layer_macs(module, output)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _COUNTED)]
    was_training = model.training
    model.eval()
    try:
        model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total


def macs_per_window(model: nn.Module, samples: int) -> int:
    """MACs to classify one window of `samples` samples."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return count_macs(model, torch.zeros(1, samples, device=device))


def macs_per_second(model: nn.Module, rate: int, seconds: float = 3.0) -> float:
    """MACs per second of audio at `rate` Hz, measured on a `seconds`-long window.

    Framing makes the cost slightly sub-linear in length, so measure on the
    window the model will really see (3 s for emotion, 1 s for keywords).
    """
    samples = round(rate * seconds)
    return macs_per_window(model, samples) / seconds
