"""The reduced wav2vec2 student: teacher weights kept, KL + CNN-feature penalty, the schedule, export."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from edgekd.contract import ModelMetadata  # noqa: E402
from edgekd_train.export import export_onnx  # noqa: E402
from edgekd_train.distill.terms import Outputs, total_loss  # noqa: E402
from edgekd_train.models.reduced_w2v2 import ReducedConfig, ReducedWav2Vec2, distill_reduced  # noqa: E402

pytestmark = [pytest.mark.train, pytest.mark.usefixtures("torch_one_thread")]


@pytest.fixture(scope="module")
def teacher():
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(16,) * 7, num_labels=3, num_conv_pos_embeddings=16, layerdrop=0.0,
                         hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                         final_dropout=0.0, mask_time_prob=0.0)  # fmt: skip
    return Wav2Vec2ForSequenceClassification(cfg).eval()


def test_student_keeps_the_teachers_cnn_and_first_layers(teacher):
    s = ReducedWav2Vec2.from_teacher(teacher, layers=2)
    assert s.model.config.num_hidden_layers == 2 and len(s.model.wav2vec2.encoder.layers) == 2
    t_state, s_state = teacher.state_dict(), s.model.state_dict()
    assert all(torch.equal(v, t_state[k]) for k, v in s_state.items())
    assert any(k.startswith("wav2vec2.encoder.layers.3.") for k in t_state)
    assert sum(p.numel() for p in s.parameters()) < sum(p.numel() for p in teacher.parameters())
    x = torch.randn(2, 16000) * 0.1
    logits, feats = s.forward_with_features(x)
    assert torch.allclose(logits, s(x), atol=1e-5) and feats.shape[:2] == (2, 16)
    with pytest.raises(ValueError, match="between 1 and 4"):
        ReducedWav2Vec2.from_teacher(teacher, layers=5)


def test_loss_adds_the_feature_penalty():
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    f = torch.randn(4, 16, 49)
    terms = ReducedConfig(T=2.0, alpha=0.5, beta=1.0).terms()
    student = Outputs(logits, features=f)
    base = total_loss(terms, student, Outputs(logits, features=f), labels)
    assert float(total_loss(terms, student, Outputs(logits, features=f + 1.0), labels)) == pytest.approx(
        float(base) + 1.0, rel=1e-5)


def test_distil_with_warmup_and_decay_then_export(teacher, tmp_path):
    s = ReducedWav2Vec2.from_teacher(teacher, layers=1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 16000, generator=g) * 0.1, torch.arange(8) % 3
    before = [p.detach().clone() for p in s.parameters()]
    hist = distill_reduced(s, teacher, x, y, x, y, ReducedConfig(epochs=2, batch_size=4, warmup_epochs=1, lr=1e-3))
    assert hist["steps"] == 4 and len(hist["val_acc"]) == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, s.parameters()))
    meta = ModelMetadata(task="t", labels=("a", "b", "c"), sample_rate=16000, window_samples=16000, multi_label=False,
                         name="w2v2-1l-test", version="0.0.1", training={"test": True})  # fmt: skip
    report = export_onnx(s, meta, tmp_path / "reduced.onnx", x[:2].numpy().astype(np.float32))
    assert report.max_abs_diff <= 1e-4


def test_covid_table_shows_each_source_and_the_validation_threshold_figures():
    from edgekd_train.tasks.scoring import table_md

    def fig(auc_cc: float) -> dict:
        part = {"overall": {"roc_auc": 0.7, "roc_auc_95ci": [0.61, 0.78], "sensitivity": 0.8, "specificity": 0.5},
                "call-center": {"roc_auc": auc_cc}, "telegram": {"roc_auc": 0.5}}  # fmt: skip
        return {"figures": {"val": part, "test": part}, "threshold_from_val": 0.4}

    rows = {"teacher": {"params": 798_003, "macs_per_window": 78_300_000, "bytes": 3_314_134,
                        "latency_ms_1thread": 3.04, "figures": fig(0.6)},
            "reduced_before": {"figures": fig(0.55)},
            "wav2small-covid": {"params": 72_000, "macs_per_window": 17_000_000, "bytes": 990_000,
                                "latency_ms_1thread": 0.5, "figures": fig(0.66)}}  # fmt: skip
    text = table_md("covid", rows, layers=2)
    lines = text.splitlines()
    assert lines[0].count("|") == 11 and "test ROC-AUC, call-center" in lines[0] and "test ROC-AUC, telegram" in lines[0]
    assert lines[2] == ("| wav2vec2 teacher | 798,003 | 78.3 | 3,314,134 | 3.04 ms | 0.70 (0.61-0.78) | 0.70 (0.61-0.78) "
                        "| 0.60 | 0.50 | 80% / 50% |")  # a figure without an interval shows none
    assert lines[3].startswith("| reduced, 2 layers, before distillation |  |  |  |  | 0.70 (0.61-0.78) |")
    assert lines[4].startswith("| wav2small-covid | 72,000 | 17.0 |")
