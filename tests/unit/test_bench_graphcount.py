"""Params and MACs counted from ONNX graphs, against hand counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekd.bench import graphcount
from edgekd.contract import ModelMetadata

TINY_WINDOW = 1600
# Hand count for tiny_conv_model with a 1600-sample window:
#   conv1  1 -> 4 channels, kernel 5, stride 2: 798 frames x 4 out x (1 in x 5)      = 15,960
#   conv2  4 -> 8 channels, 2 groups, kernel 3, pad 1: 798 x 8 out x (2 in/group x 3) = 38,304
#   gemm   [1, 8] x [8, 3]                                                          =     24
#   matmul [1, 3] x [3, 3]                                                          =      9
TINY_MACS = 15_960 + 38_304 + 24 + 9
#   weights + biases: conv1 20 + 4, conv2 48 + 8, gemm 24 + 3, matmul 9 (int64 axes are not params)
TINY_PARAMS = 24 + 56 + 27 + 9


def _save(model: onnx.ModelProto, path: Path, name: str, window: int) -> Path:
    model.ir_version = 8
    meta = ModelMetadata(
        task="tiny", labels=("a", "b", "c"), sample_rate=16000, window_samples=window, multi_label=False,
        name=name, version="0.0.1",
    )
    helper.set_model_props(model, meta.to_props())
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def tiny_conv_model(path: Path, window: int = TINY_WINDOW) -> Path:
    """Raw PCM -> strided conv -> ReLU -> grouped conv -> mean over time -> Gemm -> MatMul, 3 labels."""
    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    inits = [
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        weight("w1", 4, 1, 5), weight("b1", 4),
        weight("w2", 8, 2, 3), weight("b2", 8),
        weight("w3", 3, 8), weight("b3", 3),
        weight("w4", 3, 3),
    ]
    nodes = [
        helper.make_node("Unsqueeze", ["audio", "axis1"], ["x"]),
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[5], strides=[2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], kernel_shape=[3], group=2, pads=[1, 1]),
        helper.make_node("ReduceMean", ["c2"], ["pooled"], axes=[2], keepdims=0),
        helper.make_node("Gemm", ["pooled", "w3", "b3"], ["g"], transB=1),
        helper.make_node("MatMul", ["g", "w4"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny-conv",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "samples"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        initializer=inits,
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path, "tiny-conv", window)


def data_shaped_model(path: Path, window: int = 1600, frame: int = 160) -> Path:
    """Frames whose count is computed from the input's runtime shape, then a [frame x 4] projection.

    The frame count comes from Shape -> Gather -> Div -> Concat -> Reshape, a chain exporters write.
    """
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(np.array(1, dtype=np.int64), "one"),
        numpy_helper.from_array(np.array([frame], dtype=np.int64), "frame"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "batch1"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0"),
        numpy_helper.from_array(rng.standard_normal((frame, 4)).astype(np.float32), "proj"),
        numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "head"),
    ]
    nodes = [
        helper.make_node("Shape", ["audio"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axis0"], ["n1"]),
        helper.make_node("Div", ["n1", "frame"], ["frames"]),
        helper.make_node("Concat", ["batch1", "frames", "frame"], ["target"], axis=0),
        helper.make_node("Reshape", ["audio", "target"], ["framed"]),
        helper.make_node("MatMul", ["framed", "proj"], ["emb"]),  # [1, F, 4]
        helper.make_node("ReduceMean", ["emb"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "head"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "data-shaped",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "samples"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        initializer=inits,
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path, "data-shaped", window)


def test_tiny_conv_macs_and_params_equal_the_hand_count(tmp_path):
    counted = graphcount.count_graph(tiny_conv_model(tmp_path / "tiny.onnx"), TINY_WINDOW)
    assert counted.macs == TINY_MACS
    assert counted.macs_by_op == {"Conv": 15_960 + 38_304, "Gemm": 24, "MatMul": 9}
    assert counted.params == TINY_PARAMS
    assert counted.int8_macs == 0
    assert [(op, macs) for _, op, macs in counted.top_nodes] == [("Conv", 38_304), ("Conv", 15_960), ("Gemm", 24), ("MatMul", 9)]
    assert counted.notes == []


def test_macs_scale_with_the_window(tmp_path):
    path = tiny_conv_model(tmp_path / "tiny.onnx", window=3200)
    counted = graphcount.count_graph(path, 3200)
    frames = (3200 - 5) // 2 + 1
    assert counted.macs == frames * 4 * 5 + frames * 8 * 2 * 3 + 24 + 9


def test_other_flops_count_bias_relu_and_reduction(tmp_path):
    counted = graphcount.count_graph(tiny_conv_model(tmp_path / "tiny.onnx"), TINY_WINDOW)
    # conv1 bias 4x798, relu 4x798, conv2 bias 8x798, mean over 8x798 inputs, gemm bias 3
    assert counted.other_flops == 4 * 798 + 4 * 798 + 8 * 798 + 8 * 798 + 3
    assert counted.flops == 2 * TINY_MACS + counted.other_flops


def test_shapes_computed_from_data_are_filled_in_by_one_run(tmp_path):
    path = data_shaped_model(tmp_path / "shaped.onnx")
    counted = graphcount.count_graph(path, 1600)
    # 10 frames of 160 samples projected to 4, then [1, 4] x [4, 3]
    assert counted.macs == 10 * 160 * 4 + 4 * 3
    assert counted.params == 160 * 4 + 4 * 3
    assert counted.notes == []


def test_run_shapes_agree_with_inferred_shapes(tmp_path):
    model = onnx.load(tiny_conv_model(tmp_path / "tiny.onnx"))
    graphcount._pin_input(model, TINY_WINDOW)
    inferred = graphcount._infer_shapes(model)
    names = {"c1", "r1", "c2", "pooled", "g"}
    ran = graphcount._shapes_by_running(model, names, TINY_WINDOW)
    assert {n: ran[n] for n in names} == {n: inferred[n] for n in names}
    assert ran["c1"] == (1, 4, 798)


def test_energy_model_counts_its_one_matmul(energy_onnx):
    counted = graphcount.count_graph(energy_onnx, 16000)
    assert counted.macs == 2  # [1, 1] x [1, 2]
    assert counted.params == 8  # w 2, b 2, eps, ten, ln10, scale
    assert counted.other_flops > 16000  # squaring every sample at least


def test_missing_onnx_is_reported_not_raised(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    assert graphcount.onnx_available() is False
    assert "edgekd[bench]" in graphcount.ONNX_MISSING


def recurrent_loop_model(path: Path, window: int) -> Path:
    """A recurrence exported as a Loop: one step per 400 samples (the trip count is computed from the
    input's shape), each step `h = tanh(h W^T)` with W read from outside the body, then `[1, 3] x [3, 3]`."""
    rng = np.random.default_rng(1)
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Gemm", ["h_in", "w"], ["pre"], transB=1),
         helper.make_node("Tanh", ["pre"], ["h_out"])],
        "step",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [1, 3])],
    )  # fmt: skip
    inits = [
        numpy_helper.from_array(rng.standard_normal((3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal((3, 3)).astype(np.float32), "w_out"),
        numpy_helper.from_array(np.full((1, 3), 0.5, np.float32), "h0"),
        numpy_helper.from_array(np.array(1, np.int64), "one"),
        numpy_helper.from_array(np.array(400, np.int64), "hop"),
    ]
    nodes = [
        helper.make_node("Shape", ["audio"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["samples"]),
        helper.make_node("Div", ["samples", "hop"], ["trips"]),
        helper.make_node("Loop", ["trips", "", "h0"], ["h"], body=body),
        helper.make_node("MatMul", ["h", "w_out"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "loop", [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "samples"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])], initializer=inits,
    )  # fmt: skip
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path, "loop", window)


@pytest.mark.parametrize("window", [1600, 3200])
def test_a_loop_counts_its_body_once_per_trip(tmp_path, window):
    counted = graphcount.count_graph(recurrent_loop_model(tmp_path / "loop.onnx", window), window)
    trips = window // 400
    assert counted.macs == trips * 9 + 9  # each step [1, 3] x [3, 3], then the output MatMul
    assert counted.macs_by_op == {"Gemm": trips * 9, "MatMul": 9}
    assert counted.other_flops == trips * 3 + 1  # the tanh of each step, and the Div that makes the trip count
    assert counted.params == 9 + 9 + 3  # w, w_out, h0 (int64 constants are not params)
    assert counted.notes == []
    assert ("Loop", trips * 9) in [(op, macs) for _, op, macs in counted.top_nodes]


@pytest.mark.parametrize("op", ["If", "Loop"])
def test_control_flow_is_named_in_notes(op):
    node = helper.make_node(op, ["c"], ["y"])
    graph = helper.make_graph([node], "g", [], [])
    counted = graphcount._count(graph, {})
    assert op in counted.notes[0]


class _Calibration:
    """A few noise windows for onnxruntime's static quantizer."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self._it = iter([{"audio": (0.1 * rng.standard_normal((1, TINY_WINDOW))).astype(np.float32)} for _ in range(4)])

    def get_next(self):
        return next(self._it, None)


def test_int8_files_count_the_same_macs_as_int8(tmp_path):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    fp32 = tiny_conv_model(tmp_path / "tiny.onnx")
    qdq = tmp_path / "tiny-qdq.onnx"
    quantize_static(str(fp32), str(qdq), _Calibration(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # fmt: skip
    dynamic = tmp_path / "tiny-dynamic.onnx"
    quantize_dynamic(str(fp32), str(dynamic), weight_type=QuantType.QInt8)
    for path in (qdq, dynamic):
        counted = graphcount.count_graph(path, TINY_WINDOW)
        assert counted.macs == TINY_MACS, path.name
        assert counted.int8_macs == TINY_MACS, path.name
    assert graphcount.count_graph(dynamic, TINY_WINDOW).macs_by_op["ConvInteger"] == 15_960 + 38_304
