"""Smoke runs of every training path, written to JSON: per-epoch losses, validation figures and a
hash of the final weights. Run before and after a change to the training loop and compare.

    OMP_NUM_THREADS=1 EDGEKD_DATA=../shared/data nice -n 10 python benchmarks/loop_smoke.py out.json

Small real recordings (TESS for emotion, Speech Commands for keywords, covid19-cough for the
reduced wav2vec2), tiny students, a tiny random wav2vec2 as the teacher, fixed seeds, one thread.
Only the public entry points are called (`distill`, `fit`, `distill_reduced`, `distill_teacher`),
so the same script measures any implementation behind them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

DATA = Path(os.environ.get("EDGEKD_DATA", "../shared/data"))
RATE = 16000
WINDOW = 8000


def weights_sha(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def figures(history: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    keys = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "best_epoch", "best_val_acc", "steps")
    out = {k: history[k] for k in keys if k in history}
    out["weights_sha"] = weights_sha(model)
    return out


def centre(audio: np.ndarray, n: int) -> np.ndarray:
    if len(audio) < n:
        return np.pad(audio, (0, n - len(audio)))
    start = (len(audio) - n) // 2
    return audio[start : start + n]


def emotion_windows() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from edgekd_train.data.audio import load_audio

    xs, ys, groups = [], [], []
    for label, emotion in enumerate(("angry", "happy", "neutral", "sad")):
        for speaker in ("OAF", "YAF"):
            for f in sorted((DATA / "tess" / f"{speaker}_{emotion}").glob("*.flac"))[:5]:
                xs.append(centre(load_audio(f, RATE), WINDOW))
                ys.append(label)
                groups.append(speaker)
    return np.stack(xs).astype(np.float32), np.array(ys, np.int64), np.array(groups)


def keyword_windows() -> tuple[np.ndarray, np.ndarray]:
    from edgekd_train.data.audio import load_audio

    xs, ys = [], []
    for label, word in enumerate(("yes", "no", "up")):
        for f in sorted((DATA / "speech_commands" / word).glob("*.ogg"))[:10]:
            xs.append(centre(load_audio(f, RATE), WINDOW))
            ys.append(label)
    return np.stack(xs).astype(np.float32), np.array(ys, np.int64)


def cough_windows() -> tuple[np.ndarray, np.ndarray]:
    from edgekd_train.data.audio import load_audio
    from edgekd_train.data.loudest import loudest_window

    meta = json.loads((DATA / "covid19-cough" / "metadata.json").read_text())
    xs, ys, count = [], [], {True: 0, False: 0}
    for m in meta:
        if count[m["covid19"]] >= 8:
            continue
        try:
            audio = load_audio(DATA / "covid19-cough" / "raw" / m["filename"], RATE)
        except Exception:  # the two broken stubs
            continue
        xs.append(loudest_window(audio, WINDOW))
        ys.append(int(m["covid19"]))
        count[m["covid19"]] += 1
    return np.stack(xs).astype(np.float32), np.array(ys, np.int64)


def tiny_wav2vec2(n_labels: int, layers: int = 2):
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(16,) * 7, num_labels=n_labels, num_conv_pos_embeddings=16, layerdrop=0.0,
                         hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                         final_dropout=0.0, mask_time_prob=0.0)  # fmt: skip
    return Wav2Vec2ForSequenceClassification(cfg).eval()


def split(x: np.ndarray, y: np.ndarray, every: int = 4):
    val = np.arange(len(x)) % every == 0
    return (x[~val], y[~val]), (x[val], y[val]), ~val


def run_emotion(results: dict[str, Any]) -> None:
    from edgekd_train.distill.loop import DistillConfig, distill
    from edgekd_train.distill.tensor_augment import TensorAugment, TensorAugmentConfig
    from edgekd_train.models import build_student
    from edgekd_train.teacher import AudioTeacher

    x, y, groups = emotion_windows()
    (tx, ty), (vx, vy), keep = split(x, y)
    teacher = AudioTeacher(tiny_wav2vec2(4)).eval()
    base = dict(epochs=4, batch_size=6, lr=5e-3, progress=False, device="cpu", warmup_frac=0.2, seed=1)
    aug = TensorAugmentConfig(sample_rate=RATE, seed=3, shift_s=0.05)

    # Hinton with a live teacher on augmented batches, corpus-balanced draws
    torch.manual_seed(0)
    s = build_student("wav2tiny", 4)
    h = distill(s, tx, ty, vx, vy, teacher_fn=teacher, cfg=DistillConfig(**base, alpha=0.5, T=2.0, balance="group"),
                augment=TensorAugment(aug), groups=groups[keep])
    results["emotion_hinton_augmented"] = figures(h, s)

    # Hinton with the teacher's logits cached once (no augmentation)
    torch.manual_seed(0)
    s = build_student("wav2small", 4)
    h = distill(s, tx, ty, vx, vy, teacher_fn=teacher, cfg=DistillConfig(**base, alpha=0.3, T=3.0))
    results["emotion_hinton_cached"] = figures(h, s)

    # weight averaging
    torch.manual_seed(0)
    s = build_student("wav2tiny", 4)
    h = distill(s, tx, ty, vx, vy, cfg=DistillConfig(**base, alpha=1.0, ema=0.9), augment=TensorAugment(aug))
    results["emotion_labels_ema"] = figures(h, s)

    # resume: a run killed in the middle of epoch 3 and rerun to the end
    class Crash(RuntimeError):
        pass

    class CrashingAugment(TensorAugment):
        def __init__(self, crash_at: int | None) -> None:
            super().__init__(aug)
            self.crash_at, self.calls = crash_at, 0

        def __call__(self, xb: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            if self.crash_at is not None and self.calls == self.crash_at:
                raise Crash("power cut")
            return super().__call__(xb)

    with tempfile.TemporaryDirectory() as d:
        cfg = DistillConfig(**base, alpha=1.0, ckpt_dir=d, ema=0.9)
        torch.manual_seed(0)
        try:
            distill(build_student("wav2tiny", 4), tx, ty, vx, vy, cfg=cfg,
                    augment=CrashingAugment(2 * (len(tx) // 6) + 2))
        except Crash:
            pass
        torch.manual_seed(0)
        s = build_student("wav2tiny", 4)
        h = distill(s, tx, ty, vx, vy, cfg=cfg, augment=CrashingAugment(None))
        results["emotion_ema_resumed"] = figures(h, s)
    torch.manual_seed(0)
    s = build_student("wav2tiny", 4)
    h = distill(s, tx, ty, vx, vy, cfg=DistillConfig(**base, alpha=1.0, ema=0.9), augment=CrashingAugment(None))
    results["emotion_ema_uninterrupted"] = figures(h, s)


def run_keyword(results: dict[str, Any]) -> None:
    from edgekd_train.distill.teacher_steps import TeacherSteps
    from edgekd_train.student_run import fit
    from edgekd_train.temporal.rollout import cache_teacher, teacher_outputs

    x, y = keyword_windows()
    (tx, ty), (vx, vy), _ = split(x, y)
    labels = ("yes", "no", "up")
    teacher = tiny_wav2vec2(3)
    fields = dict(epochs=3, batch_size=6, lr=5e-3, warmup_frac=0.2, seed=2, alpha=0.5, T=2.0)
    aug = dict(shift_s=0.05, p_noise=0.0)

    def teacher_fn(xb):
        return teacher_outputs(teacher, xb)

    # Hinton + temporal, teacher live on augmented batches
    r = fit("tcresnet", labels, (tx, ty), (vx, vy), fields, aug, lam=0.5, teacher_fn=teacher_fn)
    results["keyword_hinton_temporal_live"] = figures(r.history, r.model)
    # the same from shared teacher steps
    from edgekd_train.student_run import make_augment, run_config

    steps = TeacherSteps.compute(teacher_fn, torch.from_numpy(tx), run_config(fields), make_augment(aug, None, RATE, 2))
    r = fit("tcresnet", labels, (tx, ty), (vx, vy), fields, aug, lam=0.5, teacher_fn=steps)
    results["keyword_hinton_temporal_steps"] = {**figures(r.history, r.model), "hits": steps.hits,
                                                "misses": steps.misses}
    # cached teacher outputs (no augmentation), attention student, weight average
    tl, tw = cache_teacher(teacher, torch.from_numpy(tx))
    r = fit("attrnn", labels, (tx, ty), (vx, vy), {**fields, "ema": 0.8}, None, lam=1.0,
            teacher=(tl.numpy(), tw.numpy()))
    results["keyword_temporal_cached_ema"] = figures(r.history, r.model)
    # labels only with a time limit that stops it after the first epoch
    r = fit("crnn", labels, (tx, ty), (vx, vy), {**fields, "alpha": 1.0}, aug, time_limit_s=0.0)
    results["keyword_labels_time_limit"] = {**figures(r.history, r.model),
                                            "stopped_by_time_limit": r.history.get("stopped_by_time_limit")}


def run_reduced(results: dict[str, Any]) -> None:
    from edgekd_train.models.reduced_w2v2 import ReducedConfig, ReducedWav2Vec2, distill_reduced

    x, y = cough_windows()
    (tx, ty), (vx, vy), _ = split(x, y)
    teacher = tiny_wav2vec2(2, layers=3)
    student = ReducedWav2Vec2.from_teacher(teacher, 1)
    cfg = ReducedConfig(epochs=3, batch_size=4, lr=1e-3, warmup_epochs=1.0, beta=1.0)
    h = distill_reduced(student, teacher, torch.from_numpy(tx), torch.from_numpy(ty), torch.from_numpy(vx),
                        torch.from_numpy(vy), cfg)
    results["cough_reduced_w2v2"] = figures(h, student)


def run_teacher(results: dict[str, Any]) -> None:
    from edgekd_train.distill.loop import DistillConfig
    from edgekd_train.teacher import distill_teacher

    x, y = keyword_windows()
    (tx, ty), (vx, vy), _ = split(x, y)
    model = tiny_wav2vec2(3)
    model.train()
    cfg = DistillConfig(epochs=2, batch_size=6, lr=1e-3, alpha=1.0, device="cpu", progress=False, seed=0)
    with tempfile.TemporaryDirectory() as d:
        r = distill_teacher(model, None, tx, ty, vx, vy, cfg, d)
    results["keyword_scratch_teacher"] = figures(r.history[0], r.model)


def main() -> None:
    torch.set_num_threads(1)
    results: dict[str, Any] = {}
    for part in (run_emotion, run_keyword, run_reduced, run_teacher):
        t0 = time.monotonic()
        part(results)
        print(f"{part.__name__}: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    text = json.dumps(results, indent=1)
    Path(sys.argv[1]).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
