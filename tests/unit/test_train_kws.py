"""Keyword students and the training-only query: forward, export without the query, parameters and MACs."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from edgekd.contract import ModelMetadata  # noqa: E402
from edgekd_train.export import export_onnx  # noqa: E402
from edgekd_train.models import build_student, count_params, macs_per_window  # noqa: E402
from edgekd_train.models.kws import KWS_NAMES, build_kws  # noqa: E402
from edgekd_train.temporal.query import TemporalStudent  # noqa: E402

pytestmark = [pytest.mark.train, pytest.mark.usefixtures("torch_one_thread")]


LABELS = ("yes", "no", "_unknown_")
RATE = WINDOW = 16000


def _build(name: str):
    torch.manual_seed(0)
    return build_kws(name, len(LABELS)) if name in KWS_NAMES else build_student(name, len(LABELS))


def _windows(n: int = 4) -> np.ndarray:
    g = np.random.default_rng(0)
    t = np.arange(WINDOW) / RATE
    return np.stack([0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) * (t > 0.3) * (t < 0.7)
                     + 0.01 * g.standard_normal(WINDOW) for i in range(n)]).astype(np.float32)  # fmt: skip


@pytest.mark.parametrize("name", [*KWS_NAMES, "wav2small", "wav2tiny"])
def test_every_student_trains_with_temporal_weights_and_exports_without_its_query(name, tmp_path):
    model = TemporalStudent(_build(name))
    own = name in ("attrnn", "mhattrnn")
    assert (model.query is None) == own
    x = torch.from_numpy(_windows())
    model.train()
    logits, weights = model.forward_train(x)
    assert logits.shape == (4, len(LABELS)) and weights.ndim == 2 and weights.shape[0] == 4
    assert torch.allclose(weights.sum(-1), torch.ones(4), atol=1e-5)
    (logits.sum() + weights[:, 0].sum()).backward()  # gradients reach the feature map through the weights
    first = next(p for p in model.student.parameters() if p.requires_grad and p.ndim > 1)
    assert first.grad is not None

    meta = ModelMetadata(task="keyword", labels=LABELS, sample_rate=RATE, window_samples=WINDOW, multi_label=False,
                         name=f"{name}-test", version="0.0.1", training={"test": True})  # fmt: skip
    path = tmp_path / f"{name}.onnx"
    report = export_onnx(model.exportable(), meta, path, _windows())
    assert report.max_abs_diff <= 1e-4
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    one = _windows(1)  # the daemon runs one window at a time: a batch of one must agree too
    with torch.no_grad():
        ref = model.exportable().eval()(torch.from_numpy(one)).numpy()
    assert np.abs(sess.run(None, {"audio": one})[0] - ref).max() <= 1e-4
    from onnx import numpy_helper

    stored = [numpy_helper.to_array(i).ravel() for i in onnx.load(str(path)).graph.initializer]

    def in_graph(t: torch.Tensor) -> bool:
        v = t.detach().numpy().ravel()
        return any(a.shape == v.shape and np.allclose(a, v) for a in stored)

    assert in_graph(model.student.classifier.weight)  # the check can see a weight that is there
    if model.query is not None:
        assert not any(in_graph(p) for p in model.query.parameters())  # and the query's are not


def test_kws_students_are_on_device_sized_and_their_macs_are_counted():
    sizes = {n: count_params(build_kws(n, 12)) for n in KWS_NAMES}
    assert all(10_000 < p < 100_000 for p in sizes.values()), sizes
    frontend = macs_per_window(build_kws("tcresnet", 12).frontend, WINDOW)
    for n in KWS_NAMES:
        m = build_kws(n, 12)
        assert macs_per_window(m, WINDOW) > frontend  # the recurrent layers count too
    # an LSTM step costs 4 gates x hidden x (input + hidden) per direction
    lstm = torch.nn.LSTM(10, 8, batch_first=True, bidirectional=True)
    from edgekd_train.models.macs import count_macs

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = lstm

        def forward(self, x):
            return self.lstm(x)[0]

    assert count_macs(Wrap(), torch.zeros(1, 5, 10)) == 5 * 2 * 4 * 8 * (10 + 8)
    # with a projection to P the recurrence is P wide, and the projection costs hidden x P per step
    lstm = torch.nn.LSTM(10, 8, batch_first=True, proj_size=3)
    assert count_macs(Wrap(), torch.zeros(1, 5, 10)) == 5 * (4 * 8 * (10 + 3) + 8 * 3)
    lstm = torch.nn.LSTM(10, 8, num_layers=2, batch_first=True, proj_size=3)  # layer 2 reads the P-wide output
    assert count_macs(Wrap(), torch.zeros(1, 5, 10)) == 5 * (4 * 8 * (10 + 3) + 8 * 3 + 4 * 8 * (3 + 3) + 8 * 3)


def test_lstmp_runs_a_projected_lstm_over_every_log_mel_frame():
    model = build_kws("lstmp", 12).eval()
    assert model.lstm.proj_size == model.channels < model.lstm.hidden_size  # the state is projected
    frames = model.frontend(torch.zeros(1, WINDOW)).shape[-1]
    assert frames == 98  # 30 ms windows, 10 ms hop over 1 s
    with torch.no_grad():
        h = model.features(torch.zeros(2, WINDOW))
        logits, weights = model.forward_with_attention(torch.zeros(2, 2 * WINDOW))
    assert h.shape == (2, model.channels, frames)
    assert logits.shape == (2, 12) and weights.shape == (2, 1 + (2 * WINDOW - 480) // 160)  # any length
    assert 10_000 < count_params(model) < 100_000


def test_lstmp_export_path_computes_what_torch_lstm_computes():
    # the exported graph cannot hold nn.LSTM(proj_size) (no ONNX operator has a projection): the export
    # runs the same weights through _lstmp_steps, which must agree with torch's LSTM step by step
    from edgekd_train.models.kws import _lstmp_steps

    torch.manual_seed(1)
    lstm = torch.nn.LSTM(6, 10, proj_size=4, batch_first=True)
    x = torch.randn(3, 7, 6)
    with torch.no_grad():
        gates = torch.nn.functional.linear(x, lstm.weight_ih_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0)
        ours = _lstmp_steps(gates, lstm.weight_hh_l0, lstm.weight_hr_l0)
        theirs = lstm(x)[0]
    assert ours.shape == theirs.shape == (3, 7, 4)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_exported_lstmp_keeps_any_length_of_audio(tmp_path):
    # the recurrence exports as a loop over the frames, so the file takes the dynamic length the
    # contract promises (2.5 s here, exported from 1 s windows) and still equals torch
    import onnxruntime as ort

    model = _build("lstmp").eval()
    meta = ModelMetadata(task="keyword", labels=LABELS, sample_rate=RATE, window_samples=WINDOW, multi_label=False,
                         name="lstmp-test", version="0.0.1", training={"test": True})  # fmt: skip
    path = tmp_path / "lstmp.onnx"
    export_onnx(model, meta, path, _windows())
    longer = (0.1 * np.random.default_rng(2).standard_normal((2, 40000))).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(longer)).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert np.abs(sess.run(None, {"audio": longer})[0] - ref).max() <= 1e-4


def test_unknown_student_names_the_choices():
    with pytest.raises(ValueError, match="tcresnet"):
        build_kws("resnet50", 12)
