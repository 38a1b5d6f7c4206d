"""The background offset: chosen on validation clips, written into the graph, stream parts cut again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgekd.contract import KEY_OPERATING_POINT
from edgekd.model import Model
from edgekd.split import load_split
from edgekd_train.background_offset import (
    BackgroundOffsetError,
    choose_offset,
    offset_logits,
    with_offset,
    write_offset,
)
from edgekd_train.export import update_props

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "models" / "wav2tiny-keyword.onnx"
ASSETS = sorted((ROOT / "edgekd" / "assets").glob("*.flac"))


def test_the_offset_with_the_best_accuracy_wins_and_the_smallest_among_equals():
    # label 2 is background; clip 0 is a keyword the model calls background by 0.6
    logits = np.array([[1.0, 0.0, 1.6], [0.0, 2.0, 0.5], [0.0, 0.0, 3.0]])
    y = np.array([0, 1, 2])
    c = choose_offset(logits, y, [2], grid=(0.0, 0.5, 1.0, 1.5, 2.0, 3.5))
    assert c.accuracy_before == pytest.approx(2 / 3) and c.accuracy_after == 1.0
    assert c.offset == 1.0  # 1.0, 1.5 and 2.0 all give 3 of 3; 3.5 loses clip 2
    assert c.accuracies == {"0": 0.6667, "0.5": 0.6667, "1": 1.0, "1.5": 1.0, "2": 1.0, "3.5": 0.6667}
    assert offset_logits(logits, [2], 1.0)[0, 2] == pytest.approx(0.6)
    with pytest.raises(BackgroundOffsetError, match="no background labels"):
        choose_offset(logits, y, [])


def test_the_graph_subtracts_the_offset_from_the_background_logits_only():
    model = Model(SHIPPED)
    labels = list(model.meta.labels)
    background = [labels.index(b) for b in model.meta.background]
    proto = with_offset(onnx.load(str(SHIPPED)), background, len(labels), 1.25)
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString())
    x = np.stack([np.sin(np.arange(16000) * f / 16000).astype(np.float32) * 0.1 for f in (300, 2000)])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    want = model.logits(x).copy()
    want[:, background] -= 1.25
    assert np.abs(got - want).max() < 1e-5
    with pytest.raises(BackgroundOffsetError, match="already has a background offset"):
        with_offset(proto, background, len(labels), 1.0)


def write_split(path: Path, clips: list[tuple[Path, str]]) -> Path:
    rows = [{"path": str(p), "label": label, "group": p.stem.split("_")[0], "corpus": "test"} for p, label in clips]
    path.write_text(json.dumps({"seed": 0, "by": "group", "parts": {"train": [], "val": rows, "test": []}}))
    return path


def test_write_offset_chooses_on_validation_clips_and_keeps_the_file_a_checked_contract(data_dir, tmp_path):
    words = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
    clips = [(p, w) for w in words for p in sorted((data_dir / "speech_commands" / w).glob("*.ogg"))[:3]]
    clips += [(p, "_unknown_") for p in ASSETS]
    split = write_split(tmp_path / "split.json", clips)
    # the shipped file with an operating point: it must be dropped, since it was chosen without the offset
    src = tmp_path / "src.onnx"
    proto = onnx.load(str(SHIPPED))
    update_props(proto, {KEY_OPERATING_POINT: json.dumps({"threshold": 0.9, "smoothing": 2, "refractory_s": 1.0, "hop_s": 0.25})})
    src.write_bytes(proto.SerializeToString())
    choice = write_offset(src, tmp_path / "out.onnx", split)
    out = Model(tmp_path / "out.onnx")
    assert out.meta.operating_point is None
    record = json.loads(next(p.value for p in onnx.load(str(tmp_path / "out.onnx")).metadata_props
                             if p.key == "edgekd.training"))["background_offset"]  # fmt: skip
    assert record["offset"] == choice.offset and record["chosen_on"] == "val clips of split.json"
    assert record["labels"] == list(out.meta.background)
    assert load_split(out) is not None  # the body was cut again from the offset graph and checked
    x = np.stack([np.zeros(16000, np.float32), 0.1 * np.ones(16000, np.float32)])
    want = Model(SHIPPED).logits(x).copy()
    want[:, [list(out.meta.labels).index(b) for b in out.meta.background]] -= choice.offset
    assert np.abs(out.logits(x) - want).max() < 1e-5
    assert choice.accuracy_after >= choice.accuracy_before and choice.clips == len(clips)
    with pytest.raises(BackgroundOffsetError, match="input file"):
        write_offset(src, src, split)
