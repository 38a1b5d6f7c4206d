"""Count parameters and multiply-accumulates per window from an ONNX graph.

Shapes come from ONNX shape inference with the input pinned to `[1, window_samples]`; values
whose shape inference cannot settle (shapes computed from data, e.g. `Shape -> Reshape` chains in
exported transformers) are filled in by running the graph once in onnxruntime with those values
exposed as outputs. Counting is then exact for the ops below and per element for the rest:

- MACs: Conv/ConvInteger/QLinearConv, ConvTranspose, MatMul/MatMulInteger/QLinearMatMul, Gemm,
  Einsum (two-operand contractions), LSTM, GRU, RNN. Integer ops, and float ones fed by
  DequantizeLinear on both operands (QDQ files, which onnxruntime runs with integer kernels), are
  also counted apart as `int8_macs`, so that an INT8 model's rate is set against an INT8 peak.
- Other FLOPs: one per output element of element-wise ops, one per input element of reductions,
  five per element for Softmax/LayerNormalization-like ops; bias adds of Conv/Gemm are not MACs.
- Params: elements of floating-point and 8-bit initializers (int32 biases of quantized ops too);
  int64 initializers (shapes, axes, indices) are not parameters.

A `Loop` (an exported recurrence, e.g. an LSTM with a projection, which the ONNX LSTM operator
cannot express) counts as its body, run once in onnxruntime from the loop's initial values for its
shapes, times its trip count (a loop that its condition stops early is counted in full). Nodes
inside other control-flow subgraphs (If, Scan, a Loop without a trip count) are not counted; they
are listed in `notes`.

Needs the `onnx` package (`pip install "edgekd[bench]"`); the rest of edgekd does not.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

ONNX_MISSING = 'MACs and params unavailable: the `onnx` package is not installed (pip install "edgekd[bench]")'

TOP_NODES = 5  # the costliest nodes listed in the report: where a model's MACs go

_CONV = {"Conv", "ConvInteger", "QLinearConv"}
_MATMUL = {"MatMul", "MatMulInteger", "QLinearMatMul"}
_INT8 = {"ConvInteger", "QLinearConv", "MatMulInteger", "QLinearMatMul"}
_RNN_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_CONTROL_FLOW = {"If", "Loop", "Scan"}
_BIAS_INPUT = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2, "QLinearConv": 8}  # where the optional bias goes
_SHAPE_ONLY = {
    "Reshape", "Shape", "Size", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Cast",
    "Concat", "Slice", "Gather", "GatherElements", "Split", "Expand", "Tile", "Pad", "Constant",
    "ConstantOfShape", "Range", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
}  # data movement or conversion: no arithmetic counted
_PER_ELEMENT_5 = {"Softmax", "LogSoftmax", "LayerNormalization", "InstanceNormalization", "GroupNormalization", "Erf", "Gelu"}
_REDUCE_PREFIX = ("Reduce", "GlobalAveragePool", "GlobalMaxPool")
_PARAM_TYPES = {1, 10, 16, 11, 2, 3, 6}  # float, float16, bfloat16, double, uint8, int8, int32


@dataclass
class GraphCount:
    """What a model's graph costs per window (batch 1)."""

    params: int
    macs: int
    int8_macs: int
    other_flops: int
    macs_by_op: dict[str, int] = field(default_factory=dict)
    top_nodes: list[tuple[str, str, int]] = field(default_factory=list)  # (node name, op, MACs), costliest first
    op_counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def flops(self) -> int:
        """2 per MAC plus the per-element rest."""
        return 2 * self.macs + self.other_flops

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "macs": self.macs,
            "int8_macs": self.int8_macs,
            "other_flops": self.other_flops,
            "flops": self.flops,
            "macs_by_op": dict(sorted(self.macs_by_op.items(), key=lambda kv: -kv[1])),
            "top_nodes": [{"node": n, "op": op, "macs": m} for n, op, m in self.top_nodes],
            "op_counts": dict(sorted(self.op_counts.items())),
            "notes": list(self.notes),
        }


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
    except ImportError:
        return False
    return True


def count_graph(path: str | Path, window_samples: int) -> GraphCount:
    """Params and per-window MACs of the model at `path` for one window of `window_samples`."""
    import onnx

    model = onnx.load(str(path))
    _pin_input(model, window_samples)
    shapes = _infer_shapes(model)
    missing = _needed_unknown(model.graph, shapes)
    if missing:
        log.debug("shape inference left %d values open; running the graph once for them", len(missing))
        shapes.update(_shapes_by_running(model, missing, window_samples))
    return _count(model.graph, shapes, _loop_counts(model, window_samples))


def _pin_input(model: Any, window_samples: int) -> None:
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        if len(dims) == 2:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = 1
            dims[1].ClearField("dim_param")
            dims[1].dim_value = window_samples


def _infer_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError and friends; fall back to running
        log.debug("onnx shape inference failed (%s); relying on one run", exc)
        inferred = model
    shapes: dict[str, tuple[int, ...]] = {}
    graph = inferred.graph
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        shape = _static_shape(vi)
        if shape is not None:
            shapes[vi.name] = shape
    for init in graph.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    shapes[node.output[0]] = tuple(int(d) for d in attr.t.dims)
    return shapes


def _static_shape(value_info: Any) -> tuple[int, ...] | None:
    tt = value_info.type.tensor_type
    if not tt.HasField("shape"):
        return None
    dims = []
    for d in tt.shape.dim:
        if not d.HasField("dim_value"):
            return None
        dims.append(int(d.dim_value))
    return tuple(dims)


def _needed(node: Any) -> list[str]:
    """The values whose shapes counting this node needs."""
    op = node.op_type
    if op in _SHAPE_ONLY or op in _CONTROL_FLOW:
        return []
    if op in _CONV or op == "ConvTranspose":
        w = node.input[3] if op == "QLinearConv" else node.input[1]
        x = node.input[0]
        return [x, w, node.output[0]]
    if op in _MATMUL or op == "Gemm":
        a = node.input[0]
        return [a, node.output[0]]
    if op in _RNN_GATES:
        return [node.input[0], node.input[1]]
    if op.startswith(_REDUCE_PREFIX) or op == "Einsum":
        return [i for i in node.input if i] + [node.output[0]]
    return [node.output[0]] if node.output and node.output[0] else []


def _needed_unknown(graph: Any, shapes: dict[str, tuple[int, ...]]) -> set[str]:
    return {name for node in graph.node for name in _needed(node) if name and name not in shapes}


def _shapes_by_running(model: Any, names: set[str], window_samples: int) -> dict[str, tuple[int, ...]]:
    values = _values_by_running(model, names, {"": np.zeros((1, window_samples), dtype=np.float32)})
    return {name: tuple(int(d) for d in np.shape(value)) for name, value in values.items()}


def _values_by_running(model: Any, names: set[str], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run `model` once with every value in `names` exposed as an output; a feed named "" goes to the first input."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    graph_inputs = {i.name for i in probe.graph.input}
    present = {o.name for o in probe.graph.output}
    for name in sorted(names - graph_inputs - present):
        probe.graph.output.append(onnx.ValueInfoProto(name=name))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every value
    session = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0].name
    outputs = session.run(None, {(k or first): v for k, v in feeds.items()})
    return {meta.name: value for meta, value in zip(session.get_outputs(), outputs)}


def _subgraphs(node: Any) -> list[Any]:
    import onnx

    return [g for a in node.attribute for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs))]


def _outer_names(graph: Any) -> list[str]:
    """Names a subgraph (nested ones included) reads from the graphs around it."""
    own = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
    used: list[str] = []
    for node in graph.node:
        used += node.input
        for sub in _subgraphs(node):
            used += _outer_names(sub)
    return list(dict.fromkeys(n for n in used if n and n not in own))


def _loop_counts(model: Any, window_samples: int) -> dict[str, "GraphCount"]:
    """Each `Loop` with a trip count, keyed by its first output: its body's count times the trips."""
    loops = [n for n in model.graph.node if n.op_type == "Loop" and n.input and n.input[0]]
    if not loops:
        return {}
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    needed = {name for node in loops for name in (node.input[0], *node.input[2:], *_outer_names(_subgraphs(node)[0]))
              if name and name not in inits}  # fmt: skip
    try:
        values = {**inits, **_values_by_running(model, needed, {"": np.zeros((1, window_samples), np.float32)})}
    except Exception as exc:  # onnxruntime refuses to expose a value: the loops stay uncounted, in `notes`
        log.debug("could not run the graph for its loops' values (%s)", exc)
        return {}
    counts = {}
    for node in loops:
        try:
            counts[node.output[0]] = _loop_count(model, node, values)
        except Exception as exc:
            log.debug("loop %s not counted (%s)", node.name, exc)
    return counts


def _loop_count(model: Any, node: Any, values: dict[str, np.ndarray]) -> "GraphCount":
    """One loop: its body run once in onnxruntime (iteration 0, the loop's initial values) for its shapes."""
    import onnx
    from onnx import helper, numpy_helper

    body = _subgraphs(node)[0]
    trips = int(np.asarray(values[node.input[0]]).reshape(()))
    feeds = {body.input[0].name: np.array(0, np.int64), body.input[1].name: np.array(True)}
    feeds.update({b.name: values[v] for b, v in zip(body.input[2:], node.input[2:])})
    probe_graph = onnx.GraphProto()
    probe_graph.CopyFrom(body)  # the body's own inputs keep their types (a carried sequence stays one)
    inits = {i.name for i in model.graph.initializer}
    for name in _outer_names(body):
        value = np.asarray(values[name])
        if name in inits:
            probe_graph.initializer.append(numpy_helper.from_array(value, name))
        else:
            feeds[name] = value
            dtype = helper.np_dtype_to_tensor_dtype(value.dtype)
            probe_graph.input.append(helper.make_tensor_value_info(name, dtype, value.shape))
    probe = helper.make_model(probe_graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    names = {o for n in probe_graph.node for o in n.output if o}
    ran = _values_by_running(probe, names, feeds)
    shapes = {k: tuple(int(d) for d in np.shape(v)) for k, v in {**feeds, **ran}.items() if not isinstance(v, list)}
    shapes.update({i.name: tuple(int(d) for d in i.dims) for i in probe_graph.initializer})
    one = _count(probe_graph, shapes)
    return GraphCount(params=0, macs=one.macs * trips, int8_macs=one.int8_macs * trips,
                      other_flops=one.other_flops * trips, macs_by_op={k: v * trips for k, v in one.macs_by_op.items()},
                      notes=one.notes)  # fmt: skip


def _attr(node: Any, name: str, default: Any) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _prod(dims: tuple[int, ...] | list[int]) -> int:
    return int(math.prod(dims)) if dims else 1


def _node_macs(node: Any, shapes: dict[str, tuple[int, ...]]) -> int:
    """MACs of one node; raises KeyError when a shape it needs is unknown."""
    op = node.op_type
    if op in _CONV:
        w = shapes[node.input[3] if op == "QLinearConv" else node.input[1]]
        out = shapes[node.output[0]]
        # each output element sums (C_in / group) x kernel products; w is [M, C_in/group, *k]
        return _prod(out) * _prod(w[1:])
    if op == "ConvTranspose":
        x, w = shapes[node.input[0]], shapes[node.input[1]]
        # each input element scatters into (M / group) x kernel outputs; w is [C_in, M/group, *k]
        return _prod(x) * _prod(w[1:])
    if op in _MATMUL:
        a, out = shapes[node.input[0]], shapes[node.output[0]]
        return _prod(out) * a[-1]
    if op == "Gemm":
        a, out = shapes[node.input[0]], shapes[node.output[0]]
        k = a[0] if int(_attr(node, "transA", 0)) else a[1]
        return _prod(out) * k
    if op in _RNN_GATES:
        x, w = shapes[node.input[0]], shapes[node.input[1]]
        seq, batch, inp = x if int(_attr(node, "layout", 0)) == 0 else (x[1], x[0], x[2])
        dirs, gates_hidden = w[0], w[1]
        hidden = gates_hidden // _RNN_GATES[op]
        return dirs * seq * batch * gates_hidden * (inp + hidden)
    if op == "Einsum":
        return _einsum_macs(node, shapes)
    return 0


def _einsum_macs(node: Any, shapes: dict[str, tuple[int, ...]]) -> int:
    """MACs of a two-operand einsum: the product of every distinct index's size."""
    raw = _attr(node, "equation", b"")
    eq = raw.decode() if isinstance(raw, bytes) else str(raw)
    lhs = eq.replace(" ", "").split("->")[0].split(",")
    if len(lhs) != 2 or "..." in eq:
        return 0
    sizes: dict[str, int] = {}
    for term, name in zip(lhs, node.input):
        for letter, dim in zip(term, shapes[name]):
            sizes[letter] = max(sizes.get(letter, 1), dim)
    return _prod(list(sizes.values()))


def _node_other_flops(node: Any, shapes: dict[str, tuple[int, ...]]) -> int:
    op = node.op_type
    if op in _SHAPE_ONLY or op in _CONTROL_FLOW or not node.output or not node.output[0]:
        return 0
    out = shapes.get(node.output[0])
    if op in _BIAS_INPUT:
        i = _BIAS_INPUT[op]
        has_bias = len(node.input) > i and bool(node.input[i])
        return _prod(out) if (has_bias and out is not None) else 0
    if op in _CONV or op in _MATMUL or op in _RNN_GATES or op == "Einsum":
        return 0
    if op.startswith(_REDUCE_PREFIX):
        x = shapes.get(node.input[0])
        return _prod(x) if x is not None else 0
    if out is None:
        return 0
    return _prod(out) * (5 if op in _PER_ELEMENT_5 else 1)


def _params(graph: Any) -> int:
    total = 0
    for init in graph.initializer:
        if init.data_type in _PARAM_TYPES:
            total += _prod(tuple(int(d) for d in init.dims))
    return total


def _is_qdq_int8(node: Any, producers: dict[str, str]) -> bool:
    """A float Conv/MatMul/Gemm fed by DequantizeLinear on both operands (the QDQ format):
    onnxruntime fuses it into an integer kernel (QLinearConv, QLinearMatMul), so its MACs are int8."""
    if node.op_type not in ("Conv", "ConvTranspose", "MatMul", "Gemm") or len(node.input) < 2:
        return False
    return all(producers.get(name) == "DequantizeLinear" for name in node.input[:2])


def _count(graph: Any, shapes: dict[str, tuple[int, ...]], loops: dict[str, GraphCount] | None = None) -> GraphCount:
    """Count `graph`'s nodes; `loops` holds the counts of its Loop nodes (by first output) found by `_loop_counts`."""
    loops = loops or {}
    producers = {out: node.op_type for node in graph.node for out in node.output}
    macs_by_op: Counter[str] = Counter()
    int8 = 0
    other = 0
    ops: Counter[str] = Counter()
    uncounted: Counter[str] = Counter()
    per_node: list[tuple[str, str, int]] = []
    notes = []
    for node in graph.node:
        ops[node.op_type] += 1
        loop = loops.get(node.output[0]) if node.op_type == "Loop" and node.output else None
        if loop is not None:
            macs_by_op.update(loop.macs_by_op)
            int8 += loop.int8_macs
            other += loop.other_flops
            per_node.append((node.name or node.output[0], node.op_type, loop.macs))
            notes += loop.notes
            continue
        if node.op_type in _CONTROL_FLOW:
            uncounted[node.op_type] += 1
            continue
        try:
            macs = _node_macs(node, shapes)
            other += _node_other_flops(node, shapes)
        except KeyError as exc:
            uncounted[node.op_type] += 1
            log.debug("no shape for %s in %s %s", exc, node.op_type, node.name)
            continue
        if macs:
            macs_by_op[node.op_type] += macs
            per_node.append((node.name or node.output[0], node.op_type, macs))
            if node.op_type in _INT8 or _is_qdq_int8(node, producers):
                int8 += macs
    if uncounted:
        listed = ", ".join(f"{n} x{c}" for n, c in sorted(uncounted.items()))
        notes.append(f"not counted (control flow or unknown shape): {listed}")
    return GraphCount(
        params=_params(graph),
        macs=int(sum(macs_by_op.values())),
        int8_macs=int8,
        other_flops=other,
        macs_by_op=dict(macs_by_op),
        top_nodes=sorted(per_node, key=lambda t: -t[2])[:TOP_NODES],
        op_counts=dict(ops),
        notes=notes,
    )
