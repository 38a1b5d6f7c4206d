"""The pieces the keyword and cough/COVID runs share: build any student, train it on windows
(with or without a teacher, with the temporal loss), get its logits, export it.

Kept apart from `edgekd_train.tasks.emotion` (a GPU study with worker processes): these runs are
small enough for a workstation CPU.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


def student_names() -> tuple[str, ...]:
    """Every student `build_any_student` builds: the Wav2Small family's, the keyword students', the streaming ones."""
    from edgekd_train.models.kws import KWS_NAMES
    from edgekd_train.models.streaming import STREAM_NAMES
    from edgekd_train.models.students import STUDENT_NAMES

    return (*STUDENT_NAMES, *KWS_NAMES, *STREAM_NAMES)


def build_any_student(name: str, n_labels: int, sample_rate: int = 16000, seed: int = 0) -> nn.Module:
    """A keyword student (`edgekd_train.models.kws`: tcresnet, crnn, attrnn, mhattrnn, lstmp), a streaming one
    (`edgekd_train.models.streaming`: streamtcn) or a Wav2Small-family
    one (wav2small, wav2tiny, cnn)."""
    from edgekd_train.models.kws import KWS_NAMES, build_kws
    from edgekd_train.models.streaming import STREAM_NAMES, build_streaming
    from edgekd_train.models.students import STUDENT_NAMES, build_student

    torch.manual_seed(seed)
    if name in KWS_NAMES:
        return build_kws(name, n_labels, sample_rate)
    if name in STREAM_NAMES:
        return build_streaming(name, n_labels, sample_rate)
    if name in STUDENT_NAMES:
        return build_student(name, n_labels, sample_rate)
    raise ValueError(f"unknown student {name!r}; choose one of {', '.join(student_names())}")


def run_config(distill_fields: dict[str, Any]):
    """The `DistillConfig` of a CPU run of `fit`."""
    from edgekd_train.distill.loop import DistillConfig

    return DistillConfig(**{**distill_fields, "device": "cpu", "progress": False})


def make_augment(augment_fields: dict[str, Any] | None, noise: np.ndarray | None, sample_rate: int, seed: int):
    """The batch augmenter of a run (None without augmentation): the same settings and seed give the same batches."""
    from edgekd_train.distill.tensor_augment import TensorAugment, TensorAugmentConfig

    if augment_fields is None:
        return None
    cfg = TensorAugmentConfig(**{**augment_fields, "sample_rate": sample_rate, "seed": seed})
    return TensorAugment(cfg, torch.from_numpy(noise) if noise is not None else None)


def shared_teacher_steps(path: Path, teacher: nn.Module, teacher_fn: Any, train_x: np.ndarray,
                         distill_fields: dict[str, Any], augment_fields: dict[str, Any] | None,
                         noise: np.ndarray | None, sample_rate: int):
    """The teacher's outputs on every augmented batch a `fit` with these settings draws, loaded from `path`
    or computed once and saved there: every student, alpha and lambda of a seed shares them
    (`edgekd_train.distill.teacher_steps`). A file made for another teacher is refused."""
    from edgekd_train.distill.teacher_steps import TeacherSteps, model_id

    ident = model_id(teacher)
    if path.is_file():
        log.info("teacher steps: %s", path)
        return TeacherSteps.load(path, fallback=teacher_fn, teacher_id=ident)
    cfg = run_config(distill_fields)
    t0 = time.monotonic()
    steps = TeacherSteps.compute(teacher_fn, torch.from_numpy(train_x), cfg,
                                 make_augment(augment_fields, noise, sample_rate, cfg.seed), teacher_id=ident)
    steps.save(path)
    log.info("teacher steps: %d batches in %.0f s, saved to %s", len(steps), time.monotonic() - t0, path)
    return steps


@dataclass
class FitResult:
    model: nn.Module  # the student alone (the training-only query stripped)
    history: dict[str, Any]
    seconds: float
    params: int
    macs_per_window: int
    extra: dict[str, Any] = field(default_factory=dict)


def fit(
    student: str,
    labels: Sequence[str],
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    distill_fields: dict[str, Any],
    augment_fields: dict[str, Any] | None = None,
    noise: np.ndarray | None = None,
    *,
    sample_rate: int = 16000,
    lam: float = 0.0,
    teacher: tuple[np.ndarray, np.ndarray] | None = None,
    teacher_fn: Any = None,
    time_limit_s: float | None = None,
    ckpt_dir: str | Path | None = None,
    init: dict[str, torch.Tensor] | None = None,
    soft_weights: np.ndarray | None = None,
) -> FitResult:
    """Train one student on `[N, samples]` windows; `teacher` = cached (logits, frame weights) of the
    un-augmented windows, or `teacher_fn(x) -> (logits, frame weights)` run on each augmented batch.
    With `ckpt_dir`, a rerun (e.g. after the time limit) resumes from the checkpoint there. `init`: a
    state dict of the student to start from (fine-tuning, e.g. `edgekd_train.onnx_init.student_from_onnx`).
    `soft_weights`: one per training window in [0, 1], how much its soft targets count in Hinton's
    term (0: its label alone; `edgekd_train.distill.loop.distill`). None: every window fully."""
    from edgekd_train.distill.loop import distill
    from edgekd_train.distill.terms import Hinton, Outputs
    from edgekd_train.models.macs import macs_per_window
    from edgekd_train.models.students import count_params
    from edgekd_train.temporal.loss import TemporalAttention
    from edgekd_train.temporal.query import TemporalStudent

    cfg = run_config(distill_fields)
    if time_limit_s is not None:
        cfg = replace(cfg, time_limit_s=time_limit_s)
    if ckpt_dir is not None:
        cfg = replace(cfg, ckpt_dir=str(ckpt_dir))
    net = build_any_student(student, len(labels), sample_rate, cfg.seed)
    if init is not None:
        net.load_state_dict(init)
    model = TemporalStudent(net)
    augment = make_augment(augment_fields, noise, sample_rate, cfg.seed)
    terms = [Hinton(cfg.T, cfg.alpha)] + ([TemporalAttention(lam)] if lam > 0 else [])
    cached = None
    if teacher is not None:
        cached = Outputs(torch.as_tensor(teacher[0]), frame_weights=torch.as_tensor(teacher[1]))
    t0 = time.monotonic()
    history = distill(
        model, train[0], train[1], val[0], val[1], teacher_fn=teacher_fn, cfg=cfg,
        augment=augment if teacher is None else None, terms=terms, teacher_outputs=cached, soft_weights=soft_weights,
    )  # fmt: skip
    history["lambda"] = lam
    seconds = time.monotonic() - t0
    trained = model.exportable().eval()
    return FitResult(trained, history, seconds, count_params(trained), macs_per_window(trained, train[0].shape[1]))


@torch.no_grad()
def logits_of(model: nn.Module, x: np.ndarray, batch_size: int = 128) -> np.ndarray:
    model.eval()
    return np.concatenate([model(torch.from_numpy(x[i : i + batch_size])).numpy() for i in range(0, len(x), batch_size)])


def export(model: nn.Module, recipe, name: str, training: dict[str, Any], check: np.ndarray, path: Path) -> dict[str, Any]:
    """Contract ONNX file with the recipe's labels and `training` in its metadata; the parity-check report."""
    from edgekd_train.export import export_onnx
    from edgekd_train.recipe import model_metadata

    meta = model_metadata(recipe, name, None, training)
    return export_onnx(model, meta, path, check).to_dict()
