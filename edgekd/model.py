"""Load an edgekd ONNX model, check it against the contract, and run it."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
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


class ModelRunError(RuntimeError):
    """One inference failed (onnxruntime raised, or the output has the wrong shape); the message names the model."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"model {self.path}: {problem}")


class RunCancelled(Exception):
    """An inference was cancelled by `Model.cancel()` (a stop that cannot wait for it)."""


def onnxruntime_message(exc: BaseException) -> str:
    """onnxruntime's message on one line, without its error-code prefix and C++ source locations."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    node = re.search(r"while running (\w+) node\. Name:'([^']*)' Status Message: (.*)", text)
    if node is None:
        return _printable(text)
    op, name, message = node.groups()
    message = re.sub(r"^\S+\.(?:h|cc|cpp):\d+ .*? was false\. ", "", message)
    return _printable(f"{op} node{f' {name!r}' if name else ''} failed: {message}")


def _printable(text: str) -> str:
    """Control characters (a node name is the model author's text) escaped, so they cannot drive a terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


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
        so.log_severity_level = 4  # failed runs are reported by edgekd (ModelRunError), not printed raw
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
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 4
        self.providers = tuple(self.session.get_providers())
        self.threads = so.intra_op_num_threads  # for the sessions of the parts a file carries (edgekd.split)
        self._parts_logits: Callable[[np.ndarray], np.ndarray] | None = None
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
        if outputs[0].type != "tensor(float)":
            raise ModelContractError(
                self.path,
                f"output {self.output_name!r} is {outputs[0].type}; the contract wants float32 logits [batch, n_labels]",
                "export the model with a float32 output (cast it to float in the graph)",
            )
        out_shape = outputs[0].shape
        n = len(self.meta.labels)
        if len(out_shape) != 2 or (isinstance(out_shape[1], int) and out_shape[1] != n):
            raise ModelContractError(
                self.path, f"output {self.output_name!r} has shape {out_shape} but the model has {n} labels"
            )
        # Dynamic shapes hide the real size, and a graph may fail only on some inputs: run a few windows.
        from edgekd.probe import probe_model  # it imports this module's errors

        probe_model(self)

    def logits(self, windows: np.ndarray) -> np.ndarray:
        """Raw outputs `[batch, n_labels]`; raises ModelRunError for a failed run, RunCancelled after cancel()."""
        x = np.ascontiguousarray(windows, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        try:
            if self._parts_logits is not None:
                out = self._parts_logits(x)
            else:
                out = self.session.run([self.output_name], {self.input_name: x}, self._run_options)[0]
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument/RuntimeException types
            if self._run_options.terminate:
                raise RunCancelled(str(self.path)) from None
            raise ModelRunError(self.path, f"inference failed: {onnxruntime_message(exc)}") from None
        expected = (x.shape[0], len(self.meta.labels))
        if getattr(out, "shape", None) != expected:
            raise ModelRunError(
                self.path,
                f"output {self.output_name!r} has shape {getattr(out, 'shape', '?')} for this window, "
                f"but {len(self.meta.labels)} labels need {expected}",
            )
        return out

    def run_whole_windows_through(self, logits_of_windows: Callable[[np.ndarray], np.ndarray]) -> None:
        """From now on run whole windows through `logits_of_windows` (a checked split or stateful
        path of this file: front end in numpy, body in onnxruntime) and let the whole graph's
        session go. `serve` does this once a model's parts passed their load check: its windows come
        from shared frames, and the few whole windows left (a stream's last, padded window) need no
        third session. About 3 MiB per model. `cancel()` no longer stops a run in progress (a body
        runs in well under a millisecond)."""
        self._parts_logits = logits_of_windows
        self.session = None

    def cancel(self) -> None:
        """Cancel the inference in progress, and every later one (used when a stop cannot wait)."""
        self._run_options.terminate = True

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
    """Softmax or sigmoid. A row with a NaN or infinite logit gives NaN scores (never a valid-looking
    0 or 1), so that the pipeline can refuse it."""
    z = np.array(logits, dtype=np.float64)  # a copy: worked on in place below
    if z.shape[0] == 1 and not multi_label:  # one window (serve's every hop): the same arithmetic, fewer calls
        total = float(z.sum())
        if total - total == 0.0:  # every logit finite (a NaN or an infinity makes this NaN)
            z -= z.max()
            np.exp(z, out=z)
            z /= z.sum()
            return z.astype(np.float32)
    if np.isfinite(z).all():  # every window of a working model: no masking needed
        return _scores(z, multi_label).astype(np.float32)
    broken = ~np.isfinite(z).all(axis=-1, keepdims=True)
    z[np.broadcast_to(broken, z.shape)] = 0.0
    return np.where(broken, np.nan, _scores(z, multi_label)).astype(np.float32)


def _scores(z: np.ndarray, multi_label: bool) -> np.ndarray:
    """Sigmoid or softmax of finite float64 logits, in place where it can be."""
    if multi_label:
        return 1.0 / (1.0 + np.exp(-z))
    z -= z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z
