"""The ONNX graph count of exported students agrees with the training side's torch count."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.train]

torch = pytest.importorskip("torch")

from edgekd.bench.graphcount import count_graph  # noqa: E402
from edgekd.contract import ModelMetadata  # noqa: E402

WINDOW = 16000


def _export(name: str, tmp_path):
    from edgekd_train.export import export_onnx
    from edgekd_train.models import build_student, macs_per_window

    torch.manual_seed(0)
    model = build_student(name, 4).eval()
    meta = ModelMetadata(task="t", labels=("a", "b", "c", "d"), sample_rate=16000, window_samples=WINDOW,
                         multi_label=False, name=name, version="0")  # fmt: skip
    check = (0.1 * np.random.default_rng(0).standard_normal((2, WINDOW))).astype(np.float32)
    path = tmp_path / f"{name}.onnx"
    export_onnx(model, meta, path, check)
    return model, path, macs_per_window(model, WINDOW)


def test_plain_cnn_student_macs_match_the_torch_count(tmp_path):
    _, path, torch_macs = _export("cnn", tmp_path)
    assert count_graph(path, WINDOW).macs == torch_macs


@pytest.mark.slow
def test_attention_students_differ_by_exactly_the_attention_weighted_sum(tmp_path):
    # edgekd_train.models.macs counts Conv and Linear layers only; the graph also counts the
    # attention pooling's bmm ([C, frames] x [frames, 1]): C x frames MACs.
    for name in ("wav2tiny", "wav2small"):
        model, path, torch_macs = _export(name, tmp_path)
        with torch.no_grad():
            channels, frames = model.features(torch.zeros(1, WINDOW)).shape[1:]
        assert count_graph(path, WINDOW).macs == torch_macs + channels * frames, name


@pytest.mark.parametrize("name", ["tcresnet", "crnn", "lstmp"])
def test_mean_pooled_keyword_students_macs_match_the_torch_count(tmp_path, name):
    # LSTM-P's recurrence is a Loop in the graph (ONNX's LSTM has no projection): counted once per frame
    from edgekd_train.export import export_onnx
    from edgekd_train.models import macs_per_window
    from edgekd_train.models.kws import build_kws

    torch.manual_seed(0)
    model = build_kws(name, 4).eval()
    meta = ModelMetadata(task="t", labels=("a", "b", "c", "d"), sample_rate=16000, window_samples=WINDOW,
                         multi_label=False, name=name, version="0")  # fmt: skip
    check = (0.1 * np.random.default_rng(0).standard_normal((2, WINDOW))).astype(np.float32)
    export_onnx(model, meta, tmp_path / f"{name}.onnx", check)
    counted = count_graph(tmp_path / f"{name}.onnx", WINDOW)
    assert counted.notes == []
    assert counted.macs == macs_per_window(model, WINDOW)
