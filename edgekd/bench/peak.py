"""The core's achievable peak, measured with the same engine the models run on.

A large GEMM is built with `onnx.helper` and run by onnxruntime at the benchmark's thread count:
FP32 `MatMul` (MLAS's best FP32 kernel on this CPU) and `MatMulInteger` u8 x s8 (its INT8 kernel:
VNNI on x86 cores that have it, dot-product instructions on Arm). The fastest of a few repetitions
is the peak. This is a measured, not a datasheet, figure: it is what onnxruntime can reach here,
which is the fair ceiling for the models' achieved rates.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

GEMM_SIZE = 1024  # M = N = K: large enough to be compute bound on a server core and on a Pi


@dataclass(frozen=True)
class Peak:
    fp32_gflops: float  # 2 x MACs / s
    int8_gops: float  # 2 x int8 MACs / s
    threads: int
    method: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "fp32_gflops": self.fp32_gflops,
            "int8_gops": self.int8_gops,
            "threads": self.threads,
            "method": self.method,
        }


def _gemm_model(integer: bool, n: int) -> bytes:
    from onnx import TensorProto, helper

    if integer:
        a = helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])
        b = helper.make_tensor_value_info("b", TensorProto.INT8, [n, n])
        y = helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])
        node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
    else:
        a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])
        b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
    graph = helper.make_graph([node], "peak", [a, b], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _best_rate(model: bytes, feeds: dict[str, np.ndarray], macs: int, threads: int, budget_s: float) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    session.run(None, feeds)  # warm-up: first run pays packing and allocation
    best = float("inf")
    deadline = time.perf_counter() + budget_s
    runs = 0
    while runs < 3 or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        session.run(None, feeds)
        best = min(best, time.perf_counter() - t0)
        runs += 1
    return 2.0 * macs / best / 1e9


def measure_peak(threads: int = 1, budget_s: float = 1.0, n: int = GEMM_SIZE) -> Peak:
    """Measure FP32 and INT8 GEMM peaks (needs the `onnx` package to build the GEMMs)."""
    rng = np.random.default_rng(0)
    macs = n * n * n
    fp32 = _best_rate(
        _gemm_model(False, n),
        {"a": rng.standard_normal((n, n), dtype=np.float32), "b": rng.standard_normal((n, n), dtype=np.float32)},
        macs,
        threads,
        budget_s,
    )
    int8 = _best_rate(
        _gemm_model(True, n),
        {
            "a": rng.integers(0, 255, (n, n), dtype=np.uint8),
            "b": rng.integers(-127, 127, (n, n), dtype=np.int8),
        },
        macs,
        threads,
        budget_s,
    )
    method = (
        f"best of repeated {n}x{n}x{n} onnxruntime GEMMs on the CPU provider at {threads} thread(s): "
        "MatMul for FP32, MatMulInteger u8 x s8 for INT8"
    )
    log.debug("peak: %.1f GFLOP/s fp32, %.1f GOP/s int8", fp32, int8)
    return Peak(fp32_gflops=fp32, int8_gops=int8, threads=threads, method=method)


def best_peak(peaks: list[Peak]) -> Peak:
    """The best FP32 and the best INT8 rate of several measurements (at the same thread count)."""
    return Peak(
        fp32_gflops=max(p.fp32_gflops for p in peaks),
        int8_gops=max(p.int8_gops for p in peaks),
        threads=peaks[0].threads,
        method=f"{peaks[0].method}; best of {len(peaks)} measurements (before and after the timing)",
    )
