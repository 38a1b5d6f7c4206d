"""A model file's stream parts: the description of its log-mel front end and its body after the log.

`add_stream_parts` writes both into a model (`edgekd.frontend`, `edgekd.body`, contract version 2):
the body is the exported graph itself, cut with `onnx.utils.Extractor` at the log-mel tensor (the
output of the `Log` node that the front end's `Conv` DFT feeds), so its weights are the same
tensors. For a file without its checkpoint the description is read off the graph (DFT kernel size
and stride, mel matrix, power floor) and confirmed by recomputing the DFT kernels and mel matrix.
Nothing is written unless the runtime's own split path (`edgekd.split`) reproduces the whole graph
on the check windows: logits within `PARITY_ATOL` and the same top labels.
"""

from __future__ import annotations

import base64
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from onnx.utils import Extractor

from edgekd.contract import KEY_BODY, KEY_CONTRACT, KEY_FRONTEND, ModelMetadata, parse_props
from edgekd.frontend import LogMelSpec, hann_periodic, mel_filters
from edgekd.split import SplitModel, compare, probe_windows
from edgekd_train.export import update_props

log = logging.getLogger(__name__)

PARITY_ATOL = 1e-4
BODY_INPUT, BODY_OUTPUT = "logmel", "logits"
# f_min / f_max tried, in order, when reading a description off a graph (the training side's defaults first)
F_MIN_CANDIDATES = (40.0, 0.0, 20.0, 50.0, 60.0, 80.0, 100.0, 125.0)


class StreamPartsError(RuntimeError):
    """The file's front end cannot be described or cut faithfully; nothing was written."""


@dataclass(frozen=True)
class StreamPartsReport:
    path: str
    log_tensor: str
    frontend: dict[str, Any]
    body_bytes: int
    max_abs_diff: float
    check_windows: int


def _nodes_by_output(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def _ancestors(graph: onnx.GraphProto, tensor: str) -> list[onnx.NodeProto]:
    producers = _nodes_by_output(graph)
    seen: list[onnx.NodeProto] = []
    stack = [tensor]
    names: set[str] = set()
    while stack:
        node = producers.get(stack.pop())
        if node is None or node.name in names:
            continue
        names.add(node.name)
        seen.append(node)
        stack.extend(node.input)
    return seen


def find_log_mel(proto: onnx.ModelProto) -> str:
    """The log-mel tensor: the output of the first `Log` node computed from the input through a `Conv`
    (the DFT) and a `MatMul` (the mel filters)."""
    graph = proto.graph
    for node in graph.node:
        if node.op_type != "Log":
            continue
        kinds = {n.op_type for n in _ancestors(graph, node.output[0])}
        if {"Conv", "MatMul"} <= kinds:
            return node.output[0]
    raise StreamPartsError("no Log node after a Conv DFT and a MatMul mel projection: not a log-mel front end")


def _constant(proto: onnx.ModelProto, name: str) -> np.ndarray | None:
    for init in proto.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    node = _nodes_by_output(proto.graph).get(name)
    if node is not None and node.op_type == "Constant":
        return numpy_helper.to_array(node.attribute[0].t)
    return None


def dft_kernels(n_fft: int) -> np.ndarray:
    """`[2 * n_freq, n_fft]`: window-sum-scaled periodic-Hann cosines then minus sines (the DFT as a Conv)."""
    window = hann_periodic(n_fft)
    k = np.arange(n_fft // 2 + 1, dtype=np.float64)[:, None]
    phase = 2.0 * math.pi * k * np.arange(n_fft)[None, :] / n_fft
    scale = window / window.sum()
    return np.concatenate([np.cos(phase) * scale, -np.sin(phase) * scale])


def describe_from_graph(proto: onnx.ModelProto, sample_rate: int, log_tensor: str,
                        f_min: float | None = None, f_max: float | None = None) -> dict[str, Any]:  # fmt: skip
    """The `edgekd.frontend` description of the log-mel front end inside `proto`, confirmed against its constants."""
    nodes = _ancestors(proto.graph, log_tensor)
    conv = next((n for n in nodes if n.op_type == "Conv"), None)
    matmul = next((n for n in nodes if n.op_type == "MatMul"), None)
    add = next((n for n in nodes if n.op_type == "Add" and n.output[0] in _nodes_by_output(proto.graph)
                and _nodes_by_output(proto.graph)[log_tensor].input[0] == n.output[0]), None)  # fmt: skip
    if conv is None or matmul is None or add is None:
        raise StreamPartsError("the front end is not Conv (DFT) -> MatMul (mel) -> Add (floor) -> Log")
    kernels = _constant(proto, conv.input[1])
    mel = next((c for c in (_constant(proto, i) for i in matmul.input) if c is not None), None)
    floor = next((c for c in (_constant(proto, i) for i in add.input) if c is not None), None)
    if kernels is None or mel is None or floor is None or floor.size != 1:
        raise StreamPartsError("the DFT kernels, mel matrix or power floor are not constants in the graph")
    n_fft = int(kernels.shape[-1])
    strides = [a.ints for a in conv.attribute if a.name == "strides"]
    hop = int(strides[0][0]) if strides else 1
    if not np.allclose(kernels.reshape(kernels.shape[0], -1), dft_kernels(n_fft), atol=1e-6):
        raise StreamPartsError(f"the DFT kernels are not the window-sum-scaled periodic Hann DFT of {n_fft} samples")
    n_mels = int(mel.shape[1])
    base = {"kind": "logmel", "sample_rate": int(sample_rate), "n_fft": n_fft, "hop": hop, "n_mels": n_mels,
            "window": "hann_periodic", "dft_scale": "window_sum", "mel_scale": "htk", "mel_norm": "area",
            "power_floor": float(floor.reshape(())), "log": "ln"}  # fmt: skip
    f_mins = (f_min,) if f_min is not None else F_MIN_CANDIDATES
    top = f_max if f_max is not None else sample_rate / 2
    for lo in f_mins:
        desc = {**base, "f_min": float(lo), "f_max": float(top)}
        fb = mel_filters(LogMelSpec.from_dict(desc))
        if fb.T.shape == mel.shape and np.allclose(fb.T, mel, rtol=1e-4, atol=1e-5 * float(np.abs(mel).max())):
            # the float32 constant as its shortest decimal (1e-12, as the exporter writes it)
            desc["power_floor"] = float(str(np.float32(desc["power_floor"])))
            return desc
    raise StreamPartsError(
        f"the mel matrix [{mel.shape[0]}, {n_mels}] matches no HTK area-normalised filter bank with f_min in "
        f"{list(f_mins)} and f_max {top}; give --f-min and --f-max"
    )


def _outer_names(graph: onnx.GraphProto) -> list[str]:
    """Names a subgraph (a Loop or If body, nested ones included) reads from the graphs around it."""
    own = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    own |= {o for node in graph.node for o in node.output}
    used: list[str] = []
    for node in graph.node:
        used += node.input
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                used += _outer_names(sub)
    return list(dict.fromkeys(n for n in used if n and n not in own))


def _extract(proto: onnx.ModelProto, inputs: list[str], outputs: list[str]) -> onnx.ModelProto:
    """`Extractor.extract_model`, keeping what control-flow bodies read from outside them (a Loop's weights and
    constants): `Extractor` follows node inputs only, so those names are listed as inputs while it runs."""
    work = onnx.ModelProto()
    work.CopyFrom(proto)
    added: dict[tuple[str, ...], int] = {}
    for node in work.graph.node:
        outer = [n for attr in node.attribute
                 for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs))
                 for n in _outer_names(sub)]  # fmt: skip
        if outer:
            added[tuple(node.output)] = len(node.input)
            node.input.extend(dict.fromkeys(outer))
    body = Extractor(work).extract_model(inputs, outputs)
    for node in body.graph.node:
        keep = added.get(tuple(node.output))
        if keep is not None:
            del node.input[keep:]
    return body


def _rename_input(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Every read of `old` becomes a read of `new`, inside control-flow bodies too."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                _rename_input(sub, old, new)


def cut_body(proto: onnx.ModelProto, log_tensor: str) -> onnx.ModelProto:
    """The graph from the log-mel tensor to the logits, its input renamed `logmel` `[batch, frames, n_mels]`."""
    inferred = onnx.shape_inference.infer_shapes(proto)
    output = proto.graph.output[0].name
    body = _extract(inferred, [log_tensor], [output])
    _rename_input(body.graph, log_tensor, BODY_INPUT)
    inp = body.graph.input[0]
    inp.name = BODY_INPUT
    dims = inp.type.tensor_type.shape.dim
    if len(dims) != 3:
        raise StreamPartsError(f"the log-mel tensor has rank {len(dims)}; the body wants [batch, frames, n_mels]")
    n_mels = dims[2].dim_value
    del dims[:]
    for d in ("batch", "frames"):
        dims.add().dim_param = d
    dims.add().dim_value = n_mels
    del body.metadata_props[:]
    body.producer_name = "edgekd.train.stream_parts"
    body.doc_string = "edgekd body: un-normalised log-mel frames in, logits out"
    del body.graph.value_info[:]
    onnx.checker.check_model(body)
    return body


def _session(data: bytes) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def check_split(whole: bytes, meta: ModelMetadata, windows: np.ndarray) -> float:
    """Run the runtime's split path against the whole graph; raise StreamPartsError if they disagree."""
    sess = _session(whole)
    name = sess.get_inputs()[0].name
    ref = np.concatenate([sess.run(None, {name: windows[i : i + 16]})[0] for i in range(0, len(windows), 16)])
    body = _session(base64.b64decode(meta.body or ""))
    split = SplitModel(meta.name, LogMelSpec.from_dict(meta.frontend or {}), body, meta.window_samples,
                       meta.multi_label)  # fmt: skip
    got = np.concatenate([split.logits_of_windows(windows[i : i + 16]) for i in range(0, len(windows), 16)])
    diff, same = compare(ref, got)
    if not (diff <= PARITY_ATOL and same):
        raise StreamPartsError(
            f"front end + body differ from the whole graph by {diff:.3g} (allowed {PARITY_ATOL:g})"
            + ("" if same else ", with other top labels") + f" on {len(windows)} check windows"
        )
    return diff


def with_stream_parts(proto: onnx.ModelProto, frontend: dict[str, Any] | None, check_windows: np.ndarray | None = None,
                      *, f_min: float | None = None, f_max: float | None = None,
                      ) -> tuple[onnx.ModelProto, StreamPartsReport]:  # fmt: skip
    """A copy of `proto` with `edgekd.frontend`, `edgekd.body` and contract version 2, checked.

    `frontend` is the description when the caller knows it (the exporter); None reads it off the graph.
    The check runs on `check_windows` (real audio, `[n, window_samples]`) plus the runtime's probe windows.
    """
    props = {p.key: p.value for p in proto.metadata_props}
    meta = parse_props("<model>", props)
    log_tensor = find_log_mel(proto)
    if frontend is None:
        frontend = describe_from_graph(proto, meta.sample_rate, log_tensor, f_min, f_max)
    spec = LogMelSpec.from_dict(frontend)
    if spec.sample_rate != meta.sample_rate:
        raise StreamPartsError(f"the front end runs at {spec.sample_rate} Hz, the model at {meta.sample_rate} Hz")
    body = cut_body(proto, log_tensor)
    meta2 = replace(meta, frontend=spec.to_dict(), body=base64.b64encode(body.SerializeToString()).decode("ascii"),
                    contract_version=max(2, meta.contract_version))  # fmt: skip
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    update_props(out, {KEY_CONTRACT: str(meta2.contract_version), KEY_FRONTEND: meta2.to_props()[KEY_FRONTEND],
                       KEY_BODY: meta2.body or ""})  # fmt: skip
    windows = probe_windows(meta.sample_rate, meta.window_samples)
    if check_windows is not None and len(check_windows):
        windows = np.concatenate([np.asarray(check_windows, dtype=np.float32), windows])
    diff = check_split(proto.SerializeToString(), meta2, windows)
    report = StreamPartsReport(path="", log_tensor=log_tensor, frontend=spec.to_dict(),
                               body_bytes=len(body.SerializeToString()), max_abs_diff=diff,
                               check_windows=len(windows))  # fmt: skip
    return out, report


def add_stream_parts(src: str | Path, dst: str | Path, check_windows: Sequence[np.ndarray] | np.ndarray | None = None,
                     *, f_min: float | None = None, f_max: float | None = None) -> StreamPartsReport:  # fmt: skip
    """Read an exported model, add its stream parts, write the result to `dst` (never in place)."""
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise StreamPartsError(f"{dst} is the input file: write the copy elsewhere")
    proto = onnx.load(str(src))
    windows = None if check_windows is None else np.asarray(check_windows, dtype=np.float32)
    out, report = with_stream_parts(proto, None, windows, f_min=f_min, f_max=f_max)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.write_bytes(out.SerializeToString())
    os.replace(tmp, dst)
    log.info("%s -> %s: front end %s, body %d bytes, split vs whole %.2g on %d windows",
             src, dst, report.frontend, report.body_bytes, report.max_abs_diff, report.check_windows)  # fmt: skip
    return replace(report, path=str(dst))
