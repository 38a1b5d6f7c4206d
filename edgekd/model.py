"""Load an edgekd ONNX model, check it against the contract, and run it."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.contract import ModelContractError, ModelMetadata, file_sha256, parse_props
from edgekd.inputfile import file_problem

log = logging.getLogger(__name__)

# onnxruntime's own error types live in a private module; match on the message instead.
_ONNX_MAGIC_HINT = "is it an ONNX file? export one with `edgekd train export`"


CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
# What each `provider` setting asks onnxruntime for, in preference order (CPU is the fallback).
PROVIDER_CHOICES: dict[str, tuple[str, ...]] = {
    "cpu": (CPU,),
    "cuda": (CUDA, CPU),
    "tensorrt": (TENSORRT, CUDA, CPU),
}


@dataclass(frozen=True)
class ModelRuntimeOptions:
    threads: int = 1
    providers: tuple[str, ...] = ("CPUExecutionProvider",)


class Model:
    """One ONNX student: raw PCM windows in, scores out.

    `logits(x)` returns the raw outputs `[batch, n_labels]`; `scores(x)` applies
    softmax (single-label) or a sigmoid (multi-label).
    """

    def __init__(self, path: str | Path, options: ModelRuntimeOptions | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        options = options or ModelRuntimeOptions()
        problem = file_problem(self.path, "check the --model path: it must name an .onnx file")
        if problem is not None:
            raise ModelContractError(self.path, problem)
        if self.path.stat().st_size == 0:
            raise ModelContractError(self.path, "the file is empty", _ONNX_MAGIC_HINT)
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, int(options.threads))
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        available = set(ort.get_available_providers())
        providers = [p for p in options.providers if p in available] or [CPU]
        if options.providers[0] not in available:
            log.warning(
                "model %s: onnxruntime here has no %s (install onnxruntime-gpu for your device, see "
                "docs/deploy.md); running on %s",
                self.path.name, options.providers[0], ", ".join(providers),
            )
        try:
            self.session = ort.InferenceSession(_session_source(self.path), so, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelContractError(self.path, f"onnxruntime cannot load it: {first}", _ONNX_MAGIC_HINT) from None
        self.providers = tuple(self.session.get_providers())
        props = dict(self.session.get_modelmeta().custom_metadata_map)
        self.meta: ModelMetadata = parse_props(self.path, props)
        self.sha256 = file_sha256(self.path)
        self._check_io()

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]

    def _check_io(self) -> None:
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        if len(inputs) != 1:
            raise ModelContractError(self.path, f"expected one input [batch, samples], found {len(inputs)}")
        inp = inputs[0]
        if inp.type != "tensor(float)" or len(inp.shape) != 2:
            raise ModelContractError(
                self.path, f"input {inp.name!r} is {inp.type} {inp.shape}; the contract wants float32 [batch, samples]"
            )
        samples = inp.shape[1]
        if isinstance(samples, int) and samples != self.meta.window_samples:
            raise ModelContractError(
                self.path,
                f"input takes {samples} samples but metadata says window_samples={self.meta.window_samples}",
            )
        self.input_name = inp.name
        self.output_name = outputs[0].name
        out_shape = outputs[0].shape
        n = len(self.meta.labels)
        if len(out_shape) != 2 or (isinstance(out_shape[1], int) and out_shape[1] != n):
            raise ModelContractError(
                self.path, f"output {self.output_name!r} has shape {out_shape} but the model has {n} labels"
            )
        # Dynamic shapes hide the real size: run one silent window to be sure.
        probe = self.logits(np.zeros((1, self.meta.window_samples), dtype=np.float32))
        if probe.shape != (1, n):
            raise ModelContractError(
                self.path, f"output size {probe.shape[-1]} disagrees with its {n} labels {list(self.meta.labels)}"
            )

    def logits(self, windows: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(windows, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def scores(self, windows: np.ndarray) -> np.ndarray:
        return logits_to_scores(self.logits(windows), self.meta.multi_label)


def _session_source(path: Path) -> str | bytes:
    """What onnxruntime opens: the path, or, for a name that is not UTF-8 (which it cannot take),
    the file's bytes."""
    name = os.fspath(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return path.read_bytes()
    return name


def logits_to_scores(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    if multi_label:
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
