"""INT8 quantisation of an exported student, with its size, speed and output change measured.

Static quantisation (QDQ, weights per channel, activation ranges from calibration
windows of the training set) is tried first; where it fails, dynamic quantisation
(weights only, activation ranges at run time) is used and the report says why.

The log-mel front end stays in float: its DFT input is raw audio, and 8-bit
activations there would be 8-bit audio (a -48 dB noise floor relative to the
calibration peak), which ruins quiet speech. Only the conv stack and the head
(Conv, Gemm) are quantised. The contract metadata of the float model is carried
over, with the quantisation recorded under `edgekd.training`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_dynamic,
    quantize_static,
)

from edgekd_train.onnx_eval import latency_ms, one_thread_session

log = logging.getLogger(__name__)

# Nodes the exporter names after the front-end module (edgekd_train.models.frontend.LogMel).
FRONTEND_MARK = "/frontend/"
QUANTIZED_OPS = ("Conv", "Gemm")


class QuantizeError(RuntimeError):
    """Neither static nor dynamic quantisation produced a usable model."""


class WindowReader(CalibrationDataReader):
    """Feeds calibration windows to onnxruntime's calibrator, `batch` at a time."""

    def __init__(self, input_name: str, windows: np.ndarray, batch: int = 8) -> None:
        self.input_name = input_name
        self.windows = np.ascontiguousarray(windows, dtype=np.float32)
        self.batch = batch
        self._it: Iterator[dict[str, np.ndarray]] = self._batches()

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(0, len(self.windows), self.batch):
            yield {self.input_name: self.windows[i : i + self.batch]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = self._batches()


def _logits(sess: ort.InferenceSession, windows: np.ndarray, batch: int = 32) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: windows[i : i + batch]})[0] for i in range(0, len(windows), batch)])


def _nodes_to_quantize(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS and FRONTEND_MARK not in n.name]


def _carry_metadata(src: onnx.ModelProto, out_path: Path, note: dict[str, Any]) -> None:
    """The float model's metadata on the INT8 file, with the quantisation recorded under `edgekd.training`."""
    from edgekd_train.export import set_training, update_props

    out = onnx.load(os.fspath(out_path))
    update_props(out, {p.key: p.value for p in src.metadata_props})
    set_training(out, {"quantization": note})
    onnx.save(out, os.fspath(out_path))


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    calib_windows: np.ndarray,
    *,
    check_windows: np.ndarray | None = None,
    method: str = "auto",
    bench_runs: int = 30,
) -> dict[str, Any]:
    """Write an INT8 copy of `fp32_path` to `out_path`; return what changed.

    `method`: "static", "dynamic", or "auto" (static, falling back to dynamic).
    The report holds sizes, single-window latencies (1 thread), and on
    `check_windows` (default: the calibration windows) the largest logit change
    and how often the top class stays the same. Accuracy against labels is the
    caller's to compute from the written file.
    """
    if method not in ("auto", "static", "dynamic"):
        raise ValueError(f"method={method!r}: choose auto, static or dynamic")
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    calib = np.ascontiguousarray(calib_windows, dtype=np.float32)
    if calib.ndim != 2 or len(calib) == 0:
        raise ValueError(f"calib_windows must be a non-empty [n, samples] array, got shape {calib.shape}")
    check = calib if check_windows is None else np.ascontiguousarray(check_windows, dtype=np.float32)
    src = onnx.load(os.fspath(fp32_path))
    input_name = src.graph.input[0].name
    nodes = _nodes_to_quantize(src)
    if not nodes:
        raise QuantizeError(f"{fp32_path} has no Conv or Gemm outside the front end to quantise")
    out_path.parent.mkdir(parents=True, exist_ok=True)

    used, fallback_reason = method, None
    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        try:
            quant_pre_process(os.fspath(fp32_path), os.fspath(prepped), skip_symbolic_shape=True)
        except Exception as exc:  # pre-processing only helps; quantise the raw file without it
            log.warning("quant_pre_process failed on %s (%s); quantising it as exported", fp32_path, exc)
            prepped = fp32_path
        if method in ("auto", "static"):
            try:
                quantize_static(
                    os.fspath(prepped), os.fspath(out_path), WindowReader(input_name, calib),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True, nodes_to_quantize=nodes, op_types_to_quantize=list(QUANTIZED_OPS),
                )  # fmt: skip
                used = "static"
            except Exception as exc:
                if method == "static":
                    raise QuantizeError(f"static quantisation of {fp32_path} failed: {exc}") from exc
                fallback_reason = f"static failed: {type(exc).__name__}: {exc}"
                log.warning("static quantisation of %s failed (%s); falling back to dynamic", fp32_path, exc)
        if used != "static":
            quantize_dynamic(
                os.fspath(prepped), os.fspath(out_path), weight_type=QuantType.QInt8,
                nodes_to_quantize=nodes, op_types_to_quantize=list(QUANTIZED_OPS),
            )  # fmt: skip
            used = "dynamic"

    note: dict[str, Any] = {"method": used, "weights": "int8 per channel" if used == "static" else "int8",
                            "front_end": "float32", "calibration_windows": len(calib) if used == "static" else 0}  # fmt: skip
    if fallback_reason:
        note["fallback_reason"] = fallback_reason
    _carry_metadata(src, out_path, note)

    fp_sess, q_sess = one_thread_session(fp32_path), one_thread_session(out_path)
    ref, got = _logits(fp_sess, check), _logits(q_sess, check)
    fp_ms = latency_ms(fp_sess, check[0], bench_runs)
    q_ms = latency_ms(q_sess, check[0], bench_runs)
    fp_bytes, q_bytes = fp32_path.stat().st_size, out_path.stat().st_size
    report = {
        "path": os.fspath(out_path),
        **note,
        "fp32_bytes": fp_bytes,
        "int8_bytes": q_bytes,
        "size_ratio": q_bytes / fp_bytes,
        "fp32_ms": fp_ms,
        "int8_ms": q_ms,
        "speedup": fp_ms / q_ms if q_ms > 0 else float("nan"),
        "max_abs_logit_diff": float(np.abs(got - ref).max()),
        "top1_agreement": float((got.argmax(-1) == ref.argmax(-1)).mean()),
        "check_windows": len(check),
    }
    log.info("int8 (%s) %s: %d -> %d bytes, %.2f -> %.2f ms/window, top-1 agreement %.3f",
             used, out_path, fp_bytes, q_bytes, fp_ms, q_ms, report["top1_agreement"])  # fmt: skip
    return report
