"""The reduced wav2vec2 student, on a workstation CPU: a wav2vec2 teacher's CNN and first `--layers`
transformer layers, distilled (KL + L2 on CNN features, AdamW 2.5e-5 with a two-epoch warm-up),
measured with the task's own figures, exported, and put beside the CNN students' size, MACs and
latency.

    nice -n 10 edgekd train reduced emotion --teacher runs/gpu1/teacher16 --packed .devdata/emotion --out runs/reduced
    nice -n 10 edgekd train reduced cough --out runs/reduced-cough --compare models/wav2tiny-cough.onnx
    nice -n 10 edgekd train reduced covid --out runs/reduced-covid --compare models/wav2small-covid.onnx

emotion: the emotion protocol (TESS unseen words, RAVDESS held-out actors); `--teacher` is needed.
cough, covid: the windows, split and figures of `edgekd_train.tasks.cough` and `edgekd_train.tasks.covid` (covid:
the threshold chosen on validation, figures overall and per recording source). Without `--teacher`, the recipe's scratch
wav2vec2 is trained first on the labels, with the students' loop, schedule and augmentation
([teacher.train] epochs, batch size and learning rate), and saved to OUT/teacher/best. The
teacher, the reduced student and every `--compare` ONNX file are measured on the same windows;
size and MACs are counted from each exported graph (`edgekd.bench.graphcount`: attention's
matrix products included), latency is onnxruntime on one thread.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd_train.tasks import DEFAULT_DATA, TaskOptionsError, require_dir, start_run

log = logging.getLogger(__name__)

REDUCED_TASKS = ("emotion", "cough", "covid")


@dataclass(frozen=True)
class ReducedOptions:
    """What `edgekd train reduced TASK` takes."""

    task: str
    out: Path
    teacher: Path | None = None  # the task's wav2vec2 (save_pretrained); cough and covid train the recipe's without it
    compare: tuple[Path, ...] = ()  # cough, covid: shipped ONNX students measured on the same test windows
    data: Path = DEFAULT_DATA
    packed: Path | None = None  # a packed copy of the emotion corpora (edgekd_train.data.pack)
    layers: int = 2
    epochs: int = 6
    minutes: float = 12.0
    thin: int = 1  # emotion: keep every n-th clip of every corpus (smoke runs)
    max_train: int | None = None  # emotion: distil on this many training windows (seeded sample): a CPU budget
    teacher_epochs: int | None = None  # cough, covid: epochs of the scratch teacher ([teacher.train])

    def __post_init__(self) -> None:
        if self.task not in REDUCED_TASKS:
            raise TaskOptionsError(f"task {self.task!r}: the reduced wav2vec2 runs on {', '.join(REDUCED_TASKS)}")
        if self.task == "emotion" and self.teacher is None:
            raise TaskOptionsError("emotion needs --teacher (the emotion teacher's save_pretrained folder)")
        if self.packed is None:
            require_dir(self.data, "the recipe's corpora")


def run(a: ReducedOptions) -> dict[str, Any]:
    """The reduced student of `a.task`, measured beside the teacher; writes OUT/summary.json."""
    start_run(a.out)
    summary = run_emotion(a) if a.task == "emotion" else run_cough_task(a)
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    return summary


def run_emotion(a: ReducedOptions) -> dict[str, Any]:
    import torch

    from edgekd_train.evaluate import evaluate
    from edgekd_train.export import export_onnx
    from edgekd_train.models.macs import macs_per_window
    from edgekd_train.models.reduced_w2v2 import ReducedConfig, ReducedWav2Vec2, distill_reduced
    from edgekd_train.onnx_eval import latency_ms, one_thread_session
    from edgekd_train.prepare import centre_crop, prepare
    from edgekd_train.recipe import load_recipe, model_metadata
    from edgekd_train.student_run import logits_of
    from edgekd_train.teacher import build_teacher

    recipe = load_recipe("emotion")
    if a.packed is not None:
        recipe = recipe.reading_packed(a.packed)
    split, tests, w = prepare(recipe, a.data, thin=a.thin)
    split.write(a.out / "split.json")
    labels = recipe.task.labels
    teacher = build_teacher(a.teacher, labels).eval()
    student = ReducedWav2Vec2.from_teacher(teacher, a.layers)
    parts = [k for k in w.x if k != "train"]

    def figures(model) -> dict[str, Any]:
        return {k: evaluate(logits_of(model, w.x[k], 16), w.y[k], labels).summary() for k in parts}

    before = figures(student)
    log.info("reduced (%d layers) before distillation: %s", a.layers, before)
    cfg = ReducedConfig(epochs=a.epochs, batch_size=16)
    tx, ty = centre_crop(w.x["train"], recipe.task.window_samples), w.y["train"]
    if a.max_train is not None and a.max_train < len(tx):
        keep = np.sort(np.random.default_rng(0).choice(len(tx), a.max_train, replace=False))
        tx, ty = tx[keep], ty[keep]
    hist = distill_reduced(student, teacher, torch.from_numpy(tx), torch.from_numpy(ty).long(),
                           torch.from_numpy(w.x["val"]), torch.from_numpy(w.y["val"]).long(), cfg,
                           time_limit_s=a.minutes * 60)  # fmt: skip
    after = figures(student)
    meta = model_metadata(recipe, f"w2v2-{a.layers}l-emotion", None,
                          {"student": f"reduced wav2vec2, {a.layers} layers", "teacher": str(a.teacher),
                           "distill": asdict(cfg), "figures": after})  # fmt: skip
    path = a.out / f"w2v2-{a.layers}l-emotion.onnx"
    report = export_onnx(student, meta, path, w.x["val"][:8])
    window = w.x["val"][0]
    summary = {
        "layers": a.layers, "params": sum(p.numel() for p in student.parameters()),
        "teacher_params": sum(p.numel() for p in teacher.parameters()),
        "macs_per_window": macs_per_window(student, len(window)), "teacher_macs_per_window":
        macs_per_window(ReducedWav2Vec2(teacher), len(window)), "before": before, "after": after,
        "history": hist, "export": report.to_dict(),
        "latency_ms_1thread": latency_ms(one_thread_session(path), window),
        "bytes": path.stat().st_size, "split": split.summary(), "train_windows_used": int(len(tx)),
        "teacher_figures": figures(ReducedWav2Vec2(teacher)),
    }  # fmt: skip
    log.info("reduced: %s", {k: summary[k] for k in ("params", "macs_per_window", "after", "latency_ms_1thread")})
    return summary


def run_cough_task(a: ReducedOptions) -> dict[str, Any]:
    """cough or covid: the teacher (given or trained here), the reduced student before and after
    distillation, and the `--compare` files, all measured on the same windows and exported graphs."""
    import torch

    from edgekd_train.export import export_onnx
    from edgekd_train.models.reduced_w2v2 import ReducedConfig, ReducedWav2Vec2, distill_reduced
    from edgekd_train.prepare import noise_bank
    from edgekd_train.onnx_eval import measure_onnx
    from edgekd_train.recipe import distill_settings, load_recipe, model_metadata, teacher_distill_fields
    from edgekd_train.tasks.cough import cough_data
    from edgekd_train.tasks.covid import covid_data
    from edgekd_train.tasks.scoring import onnx_row, table_md, task_figures
    from edgekd_train.student_run import logits_of, make_augment, run_config
    from edgekd_train.teacher import build_teacher, count_parameters, distill_teacher

    recipe = load_recipe(a.task)
    labels, rate = recipe.task.labels, recipe.task.sample_rate
    d = cough_data(a.data, recipe) if a.task == "cough" else covid_data(a.data, recipe)

    def figures(logits_fn) -> dict[str, Any]:
        return task_figures(logits_fn, d, recipe)

    teacher_info: dict[str, Any]
    if a.teacher is not None:
        teacher = build_teacher(a.teacher, labels)
        teacher_info = {"dir": str(a.teacher)}
    else:
        _, fields, aug = distill_settings(recipe)
        fields = {**teacher_distill_fields(recipe, fields), "alpha": 1.0}
        if a.teacher_epochs:
            fields["epochs"] = a.teacher_epochs
        cfg = run_config(fields)
        teacher = build_teacher(recipe.teacher_scratch, labels)
        noise = noise_bank(a.data / recipe.data.noise, rate, seconds_per_file=40.0)
        result = distill_teacher(teacher, None, d.x["train"], d.y["train"], d.x["val"], d.y["val"], cfg,
                                 a.out / "teacher", make_augment(aug, noise, rate, cfg.seed))
        hist = result.history[0]
        teacher_info = {"dir": str(a.out / "teacher" / "best"), "scratch": recipe.teacher_scratch,
                        "train": {k: v for k, v in hist["config"].items() if k not in ("ckpt_dir", "progress", "device")},
                        "train_seconds": round(result.train_seconds, 1), "best_epoch": hist["best_epoch"],
                        "labels_only": True}  # fmt: skip
    teacher.eval()
    teacher_net = ReducedWav2Vec2(teacher).eval()
    student = ReducedWav2Vec2.from_teacher(teacher, a.layers)
    window = d.x["val"][0]
    check = d.x["test"][:: max(1, len(d.x["test"]) // 8)][:8]
    rows: dict[str, Any] = {}

    def exported(model, name: str, training: dict[str, Any]) -> dict[str, Any]:
        path = a.out / f"{name}.onnx"
        report = export_onnx(model, model_metadata(recipe, name, None, training), path, check)
        return {**measure_onnx(path, window), "parity_max_abs_diff": report.max_abs_diff}

    n_teacher, n_student = count_parameters(teacher), count_parameters(student)
    rows["teacher"] = {"figures": figures(lambda x: logits_of(teacher_net, x, 16)), **teacher_info, "params": n_teacher,
                       **exported(teacher_net, f"w2v2-teacher-{a.task}", {"teacher": teacher_info, "params": n_teacher})}
    rows["reduced_before"] = {"figures": figures(lambda x: logits_of(student, x, 16))}
    cfg = ReducedConfig(epochs=a.epochs, batch_size=16)
    hist = distill_reduced(student, teacher, torch.from_numpy(d.x["train"]), torch.from_numpy(d.y["train"]).long(),
                           torch.from_numpy(d.x["val"]), torch.from_numpy(d.y["val"]).long(), cfg,
                           time_limit_s=a.minutes * 60)  # fmt: skip
    after = figures(lambda x: logits_of(student, x, 16))
    training = {"student": f"reduced wav2vec2, {a.layers} layers", "teacher": teacher_info, "distill": asdict(cfg),
                "params": n_student, "figures": after.get("figures")}  # fmt: skip
    rows["reduced"] = {"figures": after, "history": hist, "params": n_student,
                       **exported(student, f"w2v2-{a.layers}l-{a.task}", training)}
    for path in a.compare:
        rows[path.stem] = onnx_row(path, d, recipe)
    log.info("reduced %s: %s", a.task, {k: (v.get("params"), v.get("macs_per_window"), v.get("latency_ms_1thread"))
                                        for k, v in rows.items()})  # fmt: skip
    summary = {"task": a.task, "layers": a.layers, "rows": rows, "train_windows": int(len(d.x["train"]))}
    text = table_md(a.task, rows, a.layers)
    (a.out / "table.md").write_text(text)
    print(text)
    return summary
