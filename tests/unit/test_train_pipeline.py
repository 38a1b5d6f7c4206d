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
from edgekd_train.distill.loop import DistillConfig, distill  # noqa: E402
from edgekd_train.export import export_onnx  # noqa: E402
from edgekd_train.models.students import build_student  # noqa: E402
from edgekd_train.teacher import (  # noqa: E402
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


@pytest.mark.slow
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


def test_protocol_split_holds_out_and_never_leaks():
    from pathlib import Path

    from edgekd_train.data.clips import Clip
    from edgekd_train.prepare import protocol_split
    from edgekd_train.recipe import SplitSpec

    tess = [Clip(Path(f"t/{w}_{e}.wav"), e, w, "tess", {"word": w}) for w in map(str, range(30)) for e in ("a", "b")]
    rav = [Clip(Path(f"r/{a}_{i}.wav"), "ab"[i % 2], f"actor{a:02d}", "ravdess", {"actor": a})
           for a in range(1, 19) for i in range(4)]
    split, tests = protocol_split({"tess": tess, "ravdess": rav},
                                  SplitSpec(seed=0, val=0.12, test=0.2, holdout={"ravdess": {"actor": (15, 16, 17, 18)}}))
    assert not split.leaks()
    assert {c.meta["actor"] for c in tests["ravdess"]} == {15, 16, 17, 18}
    assert not {c.meta["actor"] for c in split.train + split.val if c.corpus == "ravdess"} & {15, 16, 17, 18}
    assert {c.meta["actor"] for c in split.val if c.corpus == "ravdess"}  # validation has whole actors too
    test_words = {c.group for c in tests["tess"]}
    assert test_words and not test_words & {c.group for c in split.train + split.val}
    assert len(split.test) == len(tests["tess"]) + len(tests["ravdess"])


def test_selection_uses_validation_never_test(tmp_path):
    from edgekd_train.ablate import write_ablation
    from edgekd_train.checkpoints import save_student
    from edgekd_train.recipe import load_recipe
    from edgekd_train.tasks.emotion import select_and_export

    recipe = load_recipe("emotion")
    results = []
    for seed, (val, test) in enumerate(((0.70, 0.99), (0.80, 0.10))):  # seed 1: best on val, worst on test
        for alpha in (0.5, 1.0):
            key = f"wav2tiny-T1-a{alpha:g}-s{seed}"
            torch.manual_seed(seed)
            save_student(tmp_path / "runs" / f"{key}.pt", build_student("wav2tiny", 7), "wav2tiny")
            results.append({"student": "wav2tiny", "T": 1.0, "alpha": alpha, "seed": seed, "key": key,
                            "val_acc": val + (0.05 if alpha < 1 else 0.0),
                            "tests": {"tess": {"accuracy": test, "macro_f1": test}}})
    ablation = write_ablation(tmp_path / "ablation", results, [1.0], ["val_acc", "tess"])
    check = (np.random.default_rng(0).standard_normal((4, 48000)) * 0.1).astype(np.float32)
    shipped = select_and_export(tmp_path, "all", recipe, results, ablation, check, {"source": "scratch"})
    assert shipped["wav2tiny"]["run"] == "wav2tiny-T1-a0.5-s1"
    meta = Model(tmp_path / "wav2tiny-emotion.onnx").meta
    assert meta.labels == recipe.task.labels and meta.window_samples == 48000
    assert meta.training["alpha"] == 0.5 and meta.training["seed"] == 1


@pytest.mark.slow
def test_selection_across_two_teachers_picks_the_cell_and_its_own_runs(tmp_path):
    """Same (T, alpha) under two teachers: the best cell's teacher decides which runs count."""
    from edgekd_train.ablate import write_ablation
    from edgekd_train.checkpoints import save_student
    from edgekd_train.recipe import load_recipe
    from edgekd_train.tasks.emotion import select_and_export

    recipe = load_recipe("emotion")
    by_kind: dict[str, list[dict]] = {"wav2vec2": [], "ensemble": []}
    for kind, vals in (("wav2vec2", (0.70, 0.71)), ("ensemble", (0.80, 0.79))):
        for seed, val in enumerate(vals):
            key = f"{'' if kind == 'wav2vec2' else 'ensemble-'}wav2tiny-T2-a0.5-s{seed}"
            save_student(tmp_path / "runs" / f"{key}.pt", build_student("wav2tiny", 7), "wav2tiny")
            by_kind[kind].append({"student": "wav2tiny", "T": 2.0, "alpha": 0.5, "seed": seed, "key": key,
                                  "teacher_kind": kind, "val_acc": val, "tests": {"tess": {"accuracy": 0.9, "macro_f1": 0.9}}})
    rows = []
    for kind, results in by_kind.items():
        abl = write_ablation(tmp_path / kind, results, [2.0], ["val_acc", "tess"])
        rows += [{**r, "teacher_kind": kind} for r in abl["rows"]]
    check = (np.random.default_rng(0).standard_normal((4, 48000)) * 0.1).astype(np.float32)
    infos = {"wav2vec2": {"source": "scratch"}, "ensemble": {"source": "ensemble of 4 students"}}
    shipped = select_and_export(tmp_path, "all", recipe, by_kind["wav2vec2"] + by_kind["ensemble"], {"rows": rows},
                                check, infos["wav2vec2"], infos)
    assert shipped["wav2tiny"]["run"] == "ensemble-wav2tiny-T2-a0.5-s0"
    assert shipped["wav2tiny"]["cell"]["teacher"] == "ensemble"
    assert Model(tmp_path / "wav2tiny-emotion.onnx").meta.training["teacher"]["source"] == "ensemble of 4 students"
