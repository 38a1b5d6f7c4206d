"""End to end on the CPU in seconds: tiny wav2vec2 teacher -> distil a student -> ONNX -> runtime.

The exported file is loaded by the device runtime (`edgekd.model.Model`) and by `edgekd classify`
in a subprocess; both must agree with torch.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
sf = pytest.importorskip("soundfile")

from edgekd.contract import ModelMetadata  # noqa: E402
from edgekd.model import Model, logits_to_scores  # noqa: E402
from train.distill.loop import DistillConfig, distill  # noqa: E402
from train.export import export_onnx  # noqa: E402
from train.models.students import build_student  # noqa: E402
from train.teacher import (  # noqa: E402
    AudioTeacher,
    ScratchTeacherConfig,
    TeacherTrainConfig,
    build_teacher,
    finetune_teacher,
    teacher_logits,
)

pytestmark = pytest.mark.train

RATE = 16000
N = 4000  # 0.25 s windows
LABELS = ("low", "mid", "high")
FREQS = (200.0, 800.0, 3000.0)
TINY = ScratchTeacherConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=16, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4,
                            classifier_proj_size=16, mask_time_prob=0.0)


def tones(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(N) / RATE
    xs, ys = [], []
    for label, f in enumerate(FREQS):
        for _ in range(n_per_class):
            f_i = f * rng.uniform(0.9, 1.1)
            xs.append(rng.uniform(0.05, 0.5) * np.sin(2 * np.pi * f_i * t + rng.uniform(0, 6.28))
                      + 0.005 * rng.standard_normal(N))
            ys.append(label)
    return np.asarray(xs, np.float32), np.asarray(ys, np.int64)


def test_teacher_to_student_to_onnx_to_runtime(tmp_path):
    x, y = tones(12, seed=0)
    vx, vy = tones(4, seed=1)

    # teacher: saved to a folder, loaded back by path, fine-tuned with Trainer
    torch.manual_seed(0)
    build_teacher(TINY, LABELS).save_pretrained(tmp_path / "init")
    teacher = build_teacher(tmp_path / "init", LABELS)
    cfg = TeacherTrainConfig(epochs=20, batch_size=12, learning_rate=5e-3, warmup_ratio=0.0, shift_s=0.01)
    result = finetune_teacher(teacher, x, y, vx, vy, cfg, tmp_path / "teacher")
    assert result.best_val_accuracy >= 0.9, result.history
    cached = teacher_logits(result.model, x)

    # student: distilled from the cached teacher logits for a few steps
    torch.manual_seed(0)
    student = build_student("wav2tiny", len(LABELS), RATE)
    history = distill(student, x, y, vx, vy, teacher_logits=cached,
                      cfg=DistillConfig(epochs=3, batch_size=12, lr=3e-3, T=2.0, alpha=0.5, device="cpu", progress=False))
    assert history["teacher"].startswith("cached") and len(history["train_loss"]) == 3

    # export, then the runtime and torch agree
    meta = ModelMetadata("tones", LABELS, RATE, N, False, "wav2tiny-tones", "0.0.1", {"T": 2.0, "alpha": 0.5})
    path = tmp_path / "student.onnx"
    export_onnx(student, meta, path, vx[:4])
    model = Model(path)
    assert model.meta.labels == LABELS and model.meta.training["alpha"] == 0.5
    with torch.no_grad():
        ref = student.eval()(torch.from_numpy(vx)).numpy()
    np.testing.assert_allclose(model.logits(vx), ref, atol=1e-4)

    # the teacher exports under the same contract, for `edgekd bench` to compare
    tpath = tmp_path / "teacher.onnx"
    export_onnx(AudioTeacher(result.model).eval(), ModelMetadata("tones", LABELS, RATE, N, False, "teacher", "0.0.1"),
                tpath, vx[:2])
    np.testing.assert_allclose(Model(tpath).logits(vx[:2]), teacher_logits(result.model, vx[:2]), atol=1e-4)

    # `edgekd classify` in a subprocess, on a file holding exactly one window
    wav = tmp_path / "clip.wav"
    sf.write(wav, vx[0], RATE, subtype="FLOAT")
    proc = subprocess.run([sys.executable, "-m", "edgekd", "classify", "-m", str(path), "--json", "--gate-db", "off",
                           str(wav)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = logits_to_scores(ref[:1], multi_label=False)[0]
    assert out["windows"] == 1 and out["label"] == LABELS[int(expected.argmax())]
    np.testing.assert_allclose([out["scores"][l] for l in LABELS], expected, atol=1e-4)
