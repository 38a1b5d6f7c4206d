"""A streaming student's step graph: `edgekd.stream` (docs/model-contract.md, "Stream step").

`with_stream_step` exports `StreamStep` (the trained model's own weights) as a second ONNX graph,
its frame axis dynamic, and writes it with its state into the file's metadata. Nothing is written
unless the runtime's own stateful path (`edgekd.stateful`) reproduces the whole graph: on every
check window, fed in steps of several sizes from a zero state, logits within `PARITY_ATOL` and the
same top labels.
"""

from __future__ import annotations

import base64
import io
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch

from edgekd.contract import KEY_CONTRACT, KEY_STREAM, parse_props
from edgekd.frontend import LogMelSpec
from edgekd.split import compare_all, part_session, probe_windows
from edgekd.stateful import StepModel
from edgekd_train.export import update_props
from edgekd_train.models.streaming import StreamStep, StreamTCN

PARITY_ATOL = 1e-4
CHECK_STEPS = (1, 5, 7, 66)  # frames per call that the check feeds


class StreamStepError(RuntimeError):
    """The step graph does not reproduce the whole graph; nothing was written."""


@dataclass(frozen=True)
class StreamStepReport:
    graph_bytes: int
    max_abs_diff: float
    check_windows: int
    state_floats: int


def step_bytes(model: StreamTCN, frames_per_window: int, opset: int) -> tuple[bytes, list[dict[str, Any]]]:
    """The step graph of `model` and its state's description."""
    step = StreamStep(model, frames_per_window).eval()
    shapes = model.state_shapes(frames_per_window)
    mels = model.frontend.cfg.n_mels
    example = (torch.zeros(1, mels, 5), *(torch.zeros(s) for _, s in shapes))
    inputs = ["frames", *(f"state_in.{n}" for n, _ in shapes)]
    outputs = ["logits", *(f"state_out.{n}" for n, _ in shapes)]
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(step, example, buf, input_names=inputs, output_names=outputs, opset_version=opset,
                          dynamic_axes={"frames": {2: "frames"}}, do_constant_folding=True, dynamo=False)  # fmt: skip
    proto = onnx.load_from_string(buf.getvalue())
    proto.producer_name = "edgekd.train.stream_step"
    proto.doc_string = "edgekd stream step: new log-mel frames and state in, logits and state out"
    onnx.checker.check_model(proto)
    return proto.SerializeToString(), [{"name": n, "shape": list(s)} for n, s in shapes]


def with_stream_step(proto: onnx.ModelProto, model: StreamTCN, check_windows: np.ndarray, opset: int,
                     frames_per_step: int = 5) -> tuple[onnx.ModelProto, StreamStepReport]:  # fmt: skip
    """A copy of `proto` (which has its `edgekd.frontend`) with `edgekd.stream`, checked against the whole graph."""
    props = {p.key: p.value for p in proto.metadata_props}
    meta = parse_props("<model>", props)
    if meta.frontend is None:
        raise StreamStepError("the file has no edgekd.frontend: add its stream parts first")
    spec = LogMelSpec.from_dict(meta.frontend)
    frames_per_window = spec.n_frames(meta.window_samples)
    graph, state = step_bytes(model, frames_per_window, opset)
    stream = {"graph": base64.b64encode(graph).decode("ascii"), "frames_per_step": frames_per_step,
              "receptive_field_frames": frames_per_window, "state": state, "normalization": "fixed",
              "equals": "whole_graph"}  # fmt: skip
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    update_props(out, {KEY_CONTRACT: str(max(2, meta.contract_version)), KEY_STREAM: _json(stream)})
    windows = np.concatenate([np.asarray(check_windows, np.float32), probe_windows(meta.sample_rate, meta.window_samples)])
    diff = check_step(out, windows)
    return out, StreamStepReport(len(graph), diff, len(windows), sum(int(np.prod(s["shape"])) for s in state))


def _json(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True)


def check_step(proto: onnx.ModelProto, windows: np.ndarray) -> float:
    """The largest |step - whole| over `windows` fed in each of `CHECK_STEPS`; raises StreamStepError."""
    from edgekd_train.export import run_onnx

    meta = parse_props("<model>", {p.key: p.value for p in proto.metadata_props})
    spec = LogMelSpec.from_dict(meta.frontend or {})
    whole = run_onnx(proto.SerializeToString(), windows)
    step = StepModel(meta.name, spec, part_session(base64.b64decode(meta.stream["graph"])), meta.stream,
                     meta.window_samples, meta.multi_label, len(meta.labels))  # fmt: skip
    worst, same = compare_all((whole, step.logits_of_windows(windows, chunk)) for chunk in CHECK_STEPS)
    if not (worst <= PARITY_ATOL and same):
        raise StreamStepError(f"the step graph differs from the whole graph by {worst:.3g} (allowed {PARITY_ATOL:g})"
                              + ("" if same else ", with other top labels") + f" on {len(windows)} windows")
    return worst
