"""Hostile ONNX models that onnxruntime loads but that fail later, built with the `onnx` helper API.

Each carries valid edgekd metadata, so only running it shows what is wrong:

- `reshape_model`: reshapes the window to [-1, frame]; runs only when the window is a multiple of `frame`.
- `band_model`: fails at run time (a Gather whose index leaves its table) while the window's mean
  absolute value lies in [lo, hi); everywhere else it scores `quiet`/`loud` like `energy_model`.
- `growing_output_model`: one more output than labels while the mean absolute value lies in [lo, hi).
- `length_output_model`: one output per `per` input samples, whatever the labels say.
- `slow_model`: a Loop of `iterations` matrix products per window (tens of ms to seconds).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekd.contract import ModelMetadata

LABELS = ("quiet", "loud")


def _meta(name: str, task: str, window: int, labels: tuple[str, ...] = LABELS, rate: int = 16000) -> dict[str, str]:
    return ModelMetadata(
        task=task, labels=labels, sample_rate=rate, window_samples=window, multi_label=False, name=name,
        version="0.0.1", training={"data": "none: a hostile model for tests"},
    ).to_props()


def _save(path: Path, nodes, inits, out_dims, meta: dict[str, str], name: str, check: bool = True) -> Path:
    x = helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "samples"])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_dims)
    graph = helper.make_graph(nodes, name, [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    helper.set_model_props(model, meta)
    if check:
        onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, path)
    return path


def _mean_abs_logits(prefix: str = "") -> tuple[list, list]:
    """Nodes that compute `mean_abs` [B, 1] and 2-label `logits0` [B, 2] (loud when mean |x| > 0.05)."""
    inits = [
        numpy_helper.from_array(np.array([[-20.0, 20.0]], dtype=np.float32), "w_ma"),
        numpy_helper.from_array(np.array([1.0, -1.0], dtype=np.float32), "b_ma"),
    ]
    nodes = [
        helper.make_node("Abs", ["audio"], ["abs"]),
        helper.make_node("ReduceMean", ["abs"], ["mean_abs"], axes=[1], keepdims=1),
        helper.make_node("MatMul", ["mean_abs", "w_ma"], ["mm_ma"]),
        helper.make_node("Add", ["mm_ma", "b_ma"], ["logits0"]),
    ]
    return nodes, inits


def _in_band(lo: float, hi: float) -> tuple[list, list]:
    """Nodes that compute `band` (bool [1]): lo <= mean |x| of the first window < hi."""
    inits = [
        numpy_helper.from_array(np.array([lo], dtype=np.float32), "band_lo"),
        numpy_helper.from_array(np.array([hi], dtype=np.float32), "band_hi"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "flat"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "zero_i"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "one_i"),
    ]
    nodes = [
        helper.make_node("Reshape", ["mean_abs", "flat"], ["ma_flat"]),
        helper.make_node("Slice", ["ma_flat", "zero_i", "one_i"], ["ma0"]),  # [1]
        helper.make_node("Less", ["ma0", "band_lo"], ["below"]),
        helper.make_node("Not", ["below"], ["not_below"]),
        helper.make_node("Less", ["ma0", "band_hi"], ["under_hi"]),
        helper.make_node("And", ["not_below", "under_hi"], ["band"]),
    ]
    return nodes, inits


def band_model(path: Path, lo: float, hi: float, *, window: int = 16000, name: str = "band-fail",
               task: str = "bandfail") -> Path:
    """Fails at run time (Gather index out of range) while lo <= mean |x| < hi."""
    n1, i1 = _mean_abs_logits()
    n2, i2 = _in_band(lo, hi)
    inits = i1 + i2 + [
        numpy_helper.from_array(np.zeros((1, 2), dtype=np.float32), "table"),
        numpy_helper.from_array(np.array([1000], dtype=np.int64), "far"),
    ]
    nodes = n1 + n2 + [
        helper.make_node("Cast", ["band"], ["band_i"], to=TensorProto.INT64),
        helper.make_node("Mul", ["band_i", "far"], ["index"]),  # 0, or 1000: outside the table
        helper.make_node("Gather", ["table", "index"], ["picked"], axis=0),  # [1, 2]
        helper.make_node("Add", ["logits0", "picked"], ["logits"]),
    ]
    return _save(path, nodes, inits, ["batch", 2], _meta(name, task, window), name)


def growing_output_model(path: Path, lo: float, hi: float, *, window: int = 16000, name: str = "grows",
                         task: str = "grows") -> Path:
    """Two outputs, or three while lo <= mean |x| < hi."""
    n1, i1 = _mean_abs_logits()
    n2, i2 = _in_band(lo, hi)
    inits = i1 + i2 + [
        numpy_helper.from_array(np.array([2], dtype=np.int64), "two_i"),
        numpy_helper.from_array(np.zeros((1, 1), dtype=np.float32), "extra"),
    ]
    nodes = n1 + n2 + [
        helper.make_node("Concat", ["logits0", "extra"], ["padded"], axis=1),  # [1, 3]
        helper.make_node("Cast", ["band"], ["band_i"], to=TensorProto.INT64),
        helper.make_node("Add", ["two_i", "band_i"], ["end"]),
        helper.make_node("Slice", ["padded", "zero_i", "end", "one_i"], ["logits"]),
    ]
    return _save(path, nodes, inits, ["batch", "labels"], _meta(name, task, window), name)


def reshape_model(path: Path, *, frame: int = 7, window: int = 16000, name: str = "reshape-7",
                  task: str = "reshape") -> Path:
    """Reshape [B, samples] -> [-1, frame]: runs only when samples is a multiple of `frame`."""
    inits = [
        numpy_helper.from_array(np.array([-1, frame], dtype=np.int64), "frames_shape"),
        numpy_helper.from_array(np.ones((frame, 2), dtype=np.float32), "w"),
    ]
    nodes = [
        helper.make_node("Reshape", ["audio", "frames_shape"], ["frames"]),
        helper.make_node("MatMul", ["frames", "w"], ["per_frame"]),
        helper.make_node("ReduceMean", ["per_frame"], ["logits"], axes=[0], keepdims=1),  # [1, 2]
    ]
    return _save(path, nodes, inits, ["batch", 2], _meta(name, task, window), name)


def length_output_model(path: Path, *, per: int = 8000, window: int = 24000, name: str = "per-length",
                        task: str = "perlength") -> Path:
    """One logit per `per` samples: its output size follows the input length, not the labels."""
    inits = [numpy_helper.from_array(np.array([1, -1, per], dtype=np.int64), "chunks")]
    nodes = [
        helper.make_node("Reshape", ["audio", "chunks"], ["chunked"]),
        helper.make_node("ReduceMean", ["chunked"], ["logits"], axes=[2], keepdims=0),  # [1, samples/per]
    ]
    return _save(path, nodes, inits, ["batch", "chunks"], _meta(name, task, window), name)


def unrunnable_model(path: Path, *, window: int = 16000, name: str = "unrunnable", task: str = "unrunnable",
                     node_name: str = "") -> Path:
    """Gathers row 7 of a 2-row table (in a node called `node_name`): loads, and fails on every input."""
    n1, i1 = _mean_abs_logits()
    inits = i1 + [
        numpy_helper.from_array(np.zeros((2, 2), dtype=np.float32), "table"),
        numpy_helper.from_array(np.array([7], dtype=np.int64), "seven"),
    ]
    nodes = n1 + [
        helper.make_node("Gather", ["table", "seven"], ["picked"], axis=0, name=node_name),
        helper.make_node("Add", ["logits0", "picked"], ["logits"]),
    ]
    return _save(path, nodes, inits, ["batch", 2], _meta(name, task, window), name)


def slow_model(path: Path, *, iterations: int = 200, size: int = 256, band: tuple[float, float] | None = None,
               fast_iterations: int = 1, window: int = 16000, name: str = "slow", task: str = "slow") -> Path:
    """A Loop of [size, size] matrix products per window, then energy-like scores.

    Every window takes `iterations` products; with `band`, only windows whose mean |x| lies in
    [lo, hi) do, and the others (the load probe's among them) take `fast_iterations`."""
    rng = np.random.default_rng(0)
    m = (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)
    body_in_iter = helper.make_tensor_value_info("i", TensorProto.INT64, [])
    body_in_cond = helper.make_tensor_value_info("c_in", TensorProto.BOOL, [])
    body_in_state = helper.make_tensor_value_info("s_in", TensorProto.FLOAT, [size, size])
    body_out_cond = helper.make_tensor_value_info("c_out", TensorProto.BOOL, [])
    body_out_state = helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [size, size])
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["c_in"], ["c_out"]),
            helper.make_node("MatMul", ["s_in", "m"], ["prod"]),
            helper.make_node("Tanh", ["prod"], ["s_out"]),
        ],
        "body", [body_in_iter, body_in_cond, body_in_state], [body_out_cond, body_out_state],
        initializer=[numpy_helper.from_array(m, "m")],
    )
    nodes, inits = _mean_abs_logits()
    inits += [
        numpy_helper.from_array(np.array(True), "cond"),
        numpy_helper.from_array(np.eye(size, dtype=np.float32), "s0"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero_f"),
    ]
    if band is None:
        inits.append(numpy_helper.from_array(np.array(iterations, dtype=np.int64), "trips"))
    else:
        n2, i2 = _in_band(*band)
        nodes += n2
        inits += i2 + [
            numpy_helper.from_array(np.array([fast_iterations], dtype=np.int64), "fast_trips"),
            numpy_helper.from_array(np.array([iterations - fast_iterations], dtype=np.int64), "extra_trips"),
            numpy_helper.from_array(np.zeros(0, dtype=np.int64), "scalar"),
        ]
        nodes += [
            helper.make_node("Cast", ["band"], ["band_i"], to=TensorProto.INT64),
            helper.make_node("Mul", ["band_i", "extra_trips"], ["more"]),
            helper.make_node("Add", ["fast_trips", "more"], ["trips_1"]),
            helper.make_node("Reshape", ["trips_1", "scalar"], ["trips"]),
        ]
    nodes += [
        helper.make_node("Loop", ["trips", "cond", "s0"], ["s_end"], body=body),
        helper.make_node("ReduceMean", ["s_end"], ["s_mean"], keepdims=0),  # scalar
        helper.make_node("Mul", ["s_mean", "zero_f"], ["nothing"]),
        helper.make_node("Add", ["logits0", "nothing"], ["logits"]),
    ]
    return _save(path, nodes, inits, ["batch", 2], _meta(name, task, window), name)
