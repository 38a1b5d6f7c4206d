"""`edgekd train stream-parts`: an exported model gains its front end's description and its body,
read off its own graph (no checkpoint, no torch), or nothing is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgekd.contract import KEY_BODY, KEY_CONTRACT, KEY_FRONTEND
from edgekd.model import Model
from edgekd.split import load_split
from edgekd_train.stream_parts import StreamPartsError, add_stream_parts, find_log_mel

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"


def props(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


@pytest.mark.parametrize(
    ("name", "rate", "n_fft", "hop", "n_mels"),
    [("wav2tiny-emotion", 16000, 320, 240, 40), ("wav2small-covid", 8000, 200, 80, 64)],
)
def test_description_is_read_off_the_graph_and_the_copy_keeps_everything_else(tmp_path, name, rate, n_fft, hop, n_mels):
    src, dst = MODELS / f"{name}.onnx", tmp_path / f"{name}.onnx"
    before = src.read_bytes()
    report = add_stream_parts(src, dst)
    assert src.read_bytes() == before  # the input is never changed
    old, new = props(src), props(dst)
    assert new[KEY_CONTRACT] == "2"
    assert {k: v for k, v in new.items() if k not in (KEY_CONTRACT, KEY_FRONTEND, KEY_BODY)} == {
        k: v for k, v in old.items() if k != KEY_CONTRACT
    }
    frontend = json.loads(new[KEY_FRONTEND])
    assert (frontend["sample_rate"], frontend["n_fft"], frontend["hop"], frontend["n_mels"]) == (rate, n_fft, hop, n_mels)
    assert frontend["f_min"] == 40.0 and frontend["f_max"] == rate / 2 and frontend["power_floor"] == 1e-12
    assert report.max_abs_diff <= 1e-4
    model = Model(dst)
    assert load_split(model) is not None
    x = np.random.default_rng(0).standard_normal((2, model.meta.window_samples)).astype(np.float32) * 0.1
    assert np.array_equal(model.logits(x), Model(src).logits(x))  # the whole graph is the same graph


def test_the_log_mel_tensor_is_the_log_after_the_dft_and_mel_projection():
    assert find_log_mel(onnx.load(str(MODELS / "wav2tiny-keyword.onnx"))) == "/model/frontend/Log_output_0"


def test_a_model_without_a_log_mel_front_end_is_refused(energy_onnx, tmp_path):
    with pytest.raises(StreamPartsError, match="not a log-mel front end"):
        add_stream_parts(energy_onnx, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_a_wrong_mel_band_edge_is_refused_naming_the_option(tmp_path):
    with pytest.raises(StreamPartsError, match="--f-min"):
        add_stream_parts(MODELS / "wav2tiny-keyword.onnx", tmp_path / "out.onnx", f_min=300.0)
    assert not (tmp_path / "out.onnx").exists()


def test_the_input_is_never_overwritten(tmp_path):
    copy = tmp_path / "m.onnx"
    copy.write_bytes((MODELS / "wav2tiny-keyword.onnx").read_bytes())
    with pytest.raises(StreamPartsError, match="is the input file"):
        add_stream_parts(copy, copy)


def test_command_line_writes_the_copy_checked_on_real_clips(tmp_path):
    out = tmp_path / "kw.onnx"
    clip = ROOT / "edgekd" / "assets" / "YAF_search_happy.flac"
    cmd = [sys.executable, "-m", "edgekd", "train", "stream-parts", str(MODELS / "wav2tiny-keyword.onnx"),
           "--out", str(out), "--clip", str(clip)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["path"] == str(out) and report["check_windows"] == 7 + 3  # probes + the clip's windows
    assert load_split(Model(out)) is not None


def test_a_cut_keeps_what_a_loop_body_reads_from_outside_it():
    # a recurrent body exports as a Loop whose body reads the weights from the graph around it;
    # onnx's Extractor follows node inputs only and would leave those weights out of the cut
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgekd_train.stream_parts import _extract

    w = numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "w")
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["v_in", "w"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [2])],
    )  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["cut"]), helper.make_node("Loop", ["trips", "", "cut"], ["y"], body=body)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        initializer=[w, numpy_helper.from_array(np.array(3, np.int64), "trips")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    part = _extract(onnx.shape_inference.infer_shapes(model), ["cut"], ["y"])
    onnx.checker.check_model(part)
    assert [n.input[:] for n in part.graph.node if n.op_type == "Loop"] == [["trips", "", "cut"]]  # inputs as they were
    sess = ort.InferenceSession(part.SerializeToString(), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"cut": np.array([10.0, 20.0], np.float32)})[0].tolist() == [13.0, 26.0]


def test_a_cut_body_reads_the_log_mel_under_its_new_name_inside_a_loop_too():
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from edgekd_train.stream_parts import BODY_INPUT, cut_body

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["v_in", "logmel_x"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1, 2, 3])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1, 2, 3])],
    )  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["logmel_x"]),
         helper.make_node("Loop", ["trips", "", "logmel_x"], ["summed"], body=body),
         helper.make_node("ReduceSum", ["summed"], ["logits"], keepdims=0)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [])],
        initializer=[onnx.numpy_helper.from_array(np.array(2, np.int64), "trips")],
    )  # fmt: skip
    part = cut_body(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), "logmel_x")
    sess = ort.InferenceSession(part.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.ones((1, 2, 3), np.float32)
    assert sess.run(None, {BODY_INPUT: x})[0] == pytest.approx(3 * 6)  # x + x + x, summed
