"""Export a trained student to one self-contained ONNX file that follows the model contract.

The file has one input `audio` `[batch, samples]` (batch and length dynamic), one
output `logits` `[batch, n_labels]`, the weights inside (no external data file), and
the contract's metadata (`edgekd.contract.ModelMetadata.to_props`). Before anything
is written, ONNX Runtime runs the graph on the caller's real check windows and the
result is compared with torch: a difference above `atol` (1e-4) refuses the export.

A student with a log-mel front end (`edgekd_train.models.frontend.LogMel`) also gets its stream
parts (`edgekd_train.stream_parts`): the description of the front end and the body after the log,
cut from the same graph, checked the way the runtime checks them. A student made to stream (one with
`state_shapes`, `edgekd_train.models.streaming`) also gets its step graph (`edgekd_train.stream_step`).

The TorchScript-based exporter (`dynamo=False`) is used: with torch 2.11 and 2.13
it needs nothing beyond `onnx`, while the dynamo exporter also wants `onnxscript`.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from edgekd.contract import KEY_TRAINING, ModelMetadata, file_sha256

log = logging.getLogger(__name__)

MIN_OPSET = 17
PARITY_ATOL = 1e-4
INPUT_NAME, OUTPUT_NAME = "audio", "logits"


class ExportError(RuntimeError):
    """The model, its metadata or its check windows do not allow a faithful export; nothing was written."""


@dataclass(frozen=True)
class ExportReport:
    path: str
    bytes: int
    sha256: str
    opset: int
    max_abs_diff: float
    argmax_agreement: float
    check_windows: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Exportable(nn.Module):
    """Only the student's `forward`: training-only parts (e.g. a temporal-attention query) are left out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.model(audio)


def onnx_bytes(model: nn.Module, window_samples: int, opset: int = MIN_OPSET) -> bytes:
    """The ONNX graph of `model` (on CPU, eval mode) with dynamic batch and length."""
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is below {MIN_OPSET}, the oldest the model contract allows")
    wrapper = _Exportable(model).eval()
    dummy = torch.zeros(2, window_samples)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx.*")
        torch.onnx.export(
            wrapper,
            (dummy,),
            buf,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamic_axes={INPUT_NAME: {0: "batch", 1: "samples"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
            dynamo=False,
        )
    return buf.getvalue()


def _with_metadata(raw: bytes, meta: ModelMetadata) -> onnx.ModelProto:
    proto = onnx.load_from_string(raw)
    onnx.helper.set_model_props(proto, meta.to_props())  # replaces any the exporter wrote
    proto.producer_name = "edgekd.train.export"
    proto.doc_string = f"{meta.name} {meta.version}: {meta.task} over {len(meta.labels)} labels"
    onnx.checker.check_model(proto)
    return proto


def update_props(proto: onnx.ModelProto, values: Mapping[str, str]) -> dict[str, str]:
    """Lay `values` over the `metadata_props` of `proto` in place (the graph is untouched); returns them all."""
    props = {**{p.key: p.value for p in proto.metadata_props}, **values}
    onnx.helper.set_model_props(proto, props)
    return props


def set_training(proto: onnx.ModelProto, values: Mapping[str, Any]) -> dict[str, Any]:
    """Set keys of the `edgekd.training` metadata record of `proto` in place (the graph is untouched);
    returns the whole record."""
    for prop in proto.metadata_props:
        if prop.key == KEY_TRAINING:
            training = {**json.loads(prop.value or "{}"), **values}
            prop.value = json.dumps(training, sort_keys=True)
            return training
    training = dict(values)
    update_props(proto, {KEY_TRAINING: json.dumps(training, sort_keys=True)})
    return training


def run_onnx(data: bytes, windows: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Logits of an in-memory ONNX model on `windows`, with CPU onnxruntime."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: windows[i : i + batch_size]})[0] for i in range(0, len(windows), batch_size)]
    return np.concatenate(outs)


@torch.no_grad()
def torch_logits(model: nn.Module, windows: np.ndarray, batch_size: int = 64) -> np.ndarray:
    model.eval()
    outs = [model(torch.from_numpy(windows[i : i + batch_size])).numpy() for i in range(0, len(windows), batch_size)]
    return np.concatenate(outs)


def _check_inputs(model: nn.Module, meta: ModelMetadata, windows: np.ndarray) -> None:
    if windows.ndim != 2 or windows.shape[0] < 1:
        raise ExportError(f"check_windows must be a non-empty [n, samples] array, got shape {windows.shape}")
    if windows.shape[1] != meta.window_samples:
        raise ExportError(
            f"check_windows hold {windows.shape[1]} samples but the metadata says window_samples={meta.window_samples}"
        )
    if not np.isfinite(windows).all() or float(np.abs(windows).max()) == 0.0:
        raise ExportError("check_windows must be real, finite, non-silent audio (a few clips from the data)")
    rate = getattr(model, "sample_rate", None)
    if rate is not None and int(rate) != meta.sample_rate:
        raise ExportError(f"the model was built for {rate} Hz but the metadata says sample_rate={meta.sample_rate}")
    with torch.no_grad():
        n_out = int(model.eval()(torch.from_numpy(windows[:1])).shape[-1])
    if n_out != len(meta.labels):
        raise ExportError(
            f"the model has {n_out} outputs but the metadata names {len(meta.labels)} labels {list(meta.labels)}; "
            "export with the label list the model was trained on, in its order"
        )


def _logmel_description(model: nn.Module) -> dict[str, Any] | None:
    from edgekd_train.models.frontend import LogMel

    frontend = getattr(model, "frontend", None)
    return frontend.describe() if isinstance(frontend, LogMel) else None


def export_onnx(
    model: nn.Module,
    meta: ModelMetadata,
    path: str | Path,
    check_windows: np.ndarray,
    *,
    opset: int = MIN_OPSET,
    atol: float = PARITY_ATOL,
) -> ExportReport:
    """Write `model` to `path` as a contract-following ONNX file, or raise `ExportError` and write nothing."""
    path = Path(path)
    windows = np.ascontiguousarray(check_windows, dtype=np.float32)
    cpu_model = copy.deepcopy(model).to("cpu").eval()
    _check_inputs(cpu_model, meta, windows)

    proto = _with_metadata(onnx_bytes(cpu_model, meta.window_samples, opset), meta)
    frontend = _logmel_description(cpu_model)
    if frontend is not None:
        from edgekd_train.stream_parts import StreamPartsError, with_stream_parts

        try:
            proto, parts = with_stream_parts(proto, frontend, windows)
        except StreamPartsError as exc:
            raise ExportError(f"stream parts: {exc}; not writing {path}") from None
        log.info("stream parts: body %d bytes, split vs whole %.2e on %d windows",
                 parts.body_bytes, parts.max_abs_diff, parts.check_windows)  # fmt: skip
    if callable(getattr(cpu_model, "state_shapes", None)):  # a student made to stream: its step graph too
        from edgekd_train.stream_step import StreamStepError, with_stream_step

        try:
            proto, step = with_stream_step(proto, cpu_model, windows, opset)
        except StreamStepError as exc:
            raise ExportError(f"stream step: {exc}; not writing {path}") from None
        log.info("stream step: graph %d bytes, %d state floats, step vs whole %.2e on %d windows",
                 step.graph_bytes, step.state_floats, step.max_abs_diff, step.check_windows)  # fmt: skip
    data = proto.SerializeToString()
    if len(data) >= 2**31 - 1:
        raise ExportError(f"the model is {len(data)} bytes, too large for one ONNX file without external data")
    ort_out = run_onnx(data, windows)
    ref = torch_logits(cpu_model, windows)
    if ort_out.shape != ref.shape:
        raise ExportError(f"onnxruntime gives logits of shape {ort_out.shape}, torch {ref.shape}")
    diff = float(np.abs(ort_out - ref).max())
    agree = float((ort_out.argmax(-1) == ref.argmax(-1)).mean())
    if not diff <= atol:
        raise ExportError(
            f"onnxruntime and torch disagree by {diff:.3g} (> {atol:g}) on {len(windows)} check windows; "
            f"not writing {path}. Look for ops whose ONNX export differs (custom front-end code, in-place tricks)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    report = ExportReport(
        path=str(path),
        bytes=path.stat().st_size,
        sha256=file_sha256(path),
        opset=opset,
        max_abs_diff=diff,
        argmax_agreement=agree,
        check_windows=len(windows),
    )
    log.info("exported %s (%d bytes, opset %d): max |onnx - torch| = %.2e on %d windows",
             path, report.bytes, opset, diff, len(windows))  # fmt: skip
    return report
