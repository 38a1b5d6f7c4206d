"""A student's torch weights from its exported ONNX file, to fine-tune a shipped model.

The exporter folds each BatchNorm into the convolution before it, so the ONNX file holds one
weight and one bias per conv-BN pair. `student_from_onnx` puts the folded weight into the conv
and rebuilds a BatchNorm that computes the folded bias in eval mode, with the running statistics
of the conv's own outputs on `calibration` windows: then training (batch statistics) starts near
the shipped function instead of from a BatchNorm that would re-normalise every channel.
The frozen front end (DFT and mel matrices) and the pooling and head are copied by name.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


def _onnx_weights(path: Path) -> tuple[dict[str, np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """(named initialisers with the "model." prefix dropped, [(conv weight, conv bias)] in graph order)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    convs = []
    for node in graph.node:
        if node.op_type == "Conv" and len(node.input) == 3 and node.input[1] in inits:
            if inits[node.input[1]].ndim == 4:  # the 2-D convolutions of the body, not the 1-D DFT
                convs.append((inits[node.input[1]], inits[node.input[2]]))
    named = {k.removeprefix("model."): v for k, v in inits.items() if k.startswith("model.")}
    return named, convs


@torch.no_grad()
def student_from_onnx(model: nn.Module, path: str | Path, calibration: np.ndarray, batch_size: int = 128) -> nn.Module:
    """Load the weights of the exported `path` into `model` (a freshly built student of the same
    architecture), in place; returns it in eval mode. Raises ValueError when the shapes disagree."""
    path = Path(path)
    named, convs = _onnx_weights(path)
    pairs = [(m, bn) for m, bn in zip(model.convs, list(model.convs)[1:])
             if isinstance(m, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)]
    if len(pairs) != len(convs):
        raise ValueError(f"{path}: {len(convs)} folded convolutions, the student has {len(pairs)} conv-BN pairs; "
                         "build the student the file was exported from")
    for (conv, bn), (w, b) in zip(pairs, convs):
        if tuple(conv.weight.shape) != w.shape:
            raise ValueError(f"{path}: a conv weight of shape {w.shape} where the student has {tuple(conv.weight.shape)}")
        conv.weight.copy_(torch.from_numpy(np.array(w)))
        bn.reset_running_stats()
        bn.weight.fill_(1.0)
        bn.bias.copy_(torch.from_numpy(np.array(b)))
        bn.running_var.fill_(1.0 - bn.eps)  # eval: y + b exactly
    state = model.state_dict()
    for name, value in named.items():
        if name in state:
            if tuple(state[name].shape) != value.shape:
                raise ValueError(f"{path}: {name} has shape {value.shape}, the student's {tuple(state[name].shape)}")
            state[name].copy_(torch.from_numpy(np.array(value)))
    model.eval()
    # the statistics of each conv's outputs, with every BatchNorm computing the folded bias
    sums = [torch.zeros(bn.num_features, dtype=torch.float64) for _, bn in pairs]
    squares = [torch.zeros_like(s) for s in sums]
    counts = [0] * len(pairs)

    def hook(i: int):
        def record(_module, _inp, out):
            y = out.double()
            sums[i] += y.sum(dim=(0, 2, 3))
            squares[i] += (y * y).sum(dim=(0, 2, 3))
            counts[i] += y.shape[0] * y.shape[2] * y.shape[3]
        return record

    handles = [conv.register_forward_hook(hook(i)) for i, (conv, _) in enumerate(pairs)]
    try:
        for i in range(0, len(calibration), batch_size):
            model(torch.from_numpy(calibration[i : i + batch_size]))
    finally:
        for h in handles:
            h.remove()
    for i, (_, bn) in enumerate(pairs):
        mean = sums[i] / counts[i]
        var = (squares[i] / counts[i] - mean * mean).clamp_min(1e-6)
        folded = bn.bias.double().clone()
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_(torch.sqrt(var + bn.eps))
        bn.bias.copy_(mean + folded)  # eval: sqrt(var + eps) (y - mean) / sqrt(var + eps) + mean + b = y + b
    log.info("student weights from %s (%d folded convolutions, calibrated on %d windows)", path, len(pairs),
             len(calibration))
    return model
