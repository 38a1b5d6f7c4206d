"""Small real ONNX models built with the `onnx` helper API (no torch), for runtime tests.

`energy_model` frames the window, measures log energy per frame, and scores two labels,
`quiet` and `loud`, by the mean log energy: loud audio gives `loud`, silence `quiet`.
It is a real ONNX graph run by onnxruntime, just not a trained one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekd.contract import ModelMetadata

FRAME = 160


def energy_model(
    path: Path,
    *,
    sample_rate: int = 16000,
    window_samples: int = 16000,
    task: str = "loudness",
    labels: tuple[str, ...] = ("quiet", "loud"),
    threshold_db: float = -30.0,
    name: str = "energy-test",
    fixed_length: bool = False,
    props_override: dict[str, str | None] | None = None,
    n_outputs: int | None = None,
    opset: int = 17,
) -> Path:
    assert window_samples % FRAME == 0
    n_out = n_outputs if n_outputs is not None else len(labels)
    samples_dim = window_samples if fixed_length else "samples"
    x = helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", samples_dim])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n_out])
    # loud logit grows with energy above the threshold, quiet logit with energy below it
    w = np.zeros((1, n_out), dtype=np.float32)
    b = np.zeros((n_out,), dtype=np.float32)
    w[0, 0] = -1.0
    b[0] = threshold_db
    if n_out > 1:
        w[0, 1] = 1.0
        b[1] = -threshold_db
    inits = [
        numpy_helper.from_array(np.array([0, -1, FRAME], dtype=np.int64), "frame_shape"),
        numpy_helper.from_array(np.array([1e-10], dtype=np.float32), "eps"),
        numpy_helper.from_array(np.array([10.0], dtype=np.float32), "ten"),
        numpy_helper.from_array(np.array([np.log(10.0)], dtype=np.float32), "ln10"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_last"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array(np.array([0.1], dtype=np.float32), "scale"),
    ]
    nodes = [
        helper.make_node("Reshape", ["audio", "frame_shape"], ["frames"]),
        helper.make_node("Mul", ["frames", "frames"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["pow"], axes=[2], keepdims=0),  # [B, F]
        helper.make_node("Add", ["pow", "eps"], ["pow_eps"]),
        helper.make_node("Log", ["pow_eps"], ["ln"]),
        helper.make_node("Div", ["ln", "ln10"], ["log10"]),
        helper.make_node("Mul", ["log10", "ten"], ["db"]),
        helper.make_node("ReduceMean", ["db"], ["mean_db"], axes=[1], keepdims=1),  # [B, 1]
        helper.make_node("MatMul", ["mean_db", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["raw"]),
        helper.make_node("Mul", ["raw", "scale"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, name, [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13 if opset < 18 else opset)])
    model.ir_version = 8
    meta = ModelMetadata(
        task=task,
        labels=labels,
        sample_rate=sample_rate,
        window_samples=window_samples,
        multi_label=False,
        name=name,
        version="0.0.1",
        training={"data": "none: a hand-built energy model for tests"},
    )
    props = meta.to_props()
    for key, value in (props_override or {}).items():
        if value is None:
            props.pop(key, None)
        else:
            props[key] = value
    onnx.helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, path)
    return path


VERSION_2_KEYS = ("edgekd.background_labels", "edgekd.operating_point", "edgekd.frontend", "edgekd.body", "edgekd.stream")


def rewrite_props(src: Path, dst: Path, change) -> Path:
    """A copy of `src` at `dst` whose metadata props are those of `src` after `change(props)` (a dict, edited in place)."""
    proto = onnx.load(str(src))
    props = {p.key: p.value for p in proto.metadata_props}
    change(props)
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(dst))
    return dst


def version1_copy(src: Path, dst: Path) -> Path:
    """A copy of an edgekd model as a contract-version-1 file: the same graph, without the version-2 keys
    (no operating point, no stream parts), as every file was before version 2."""

    def to_version1(props: dict[str, str]) -> None:
        for key in VERSION_2_KEYS:
            props.pop(key, None)
        props["edgekd.contract_version"] = "1"

    return rewrite_props(src, dst, to_version1)
