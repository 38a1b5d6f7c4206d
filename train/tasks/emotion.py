"""The emotion study, top to bottom: data, teacher, ablation, selection, export.

    edgekd train run emotion --packed .devdata/emotion --noise .devdata/noise.npy --out runs/emotion

1. config   `EmotionOptions`, checked before anything runs;
2. data     the recipe's corpora (or their packed copy), the protocol split (TESS: unseen words;
            RAVDESS: actors 15-18 held out; validation carved by whole words/actors), windows;
3. teacher  a wav2vec2 trained with transformers' Trainer (from scratch: no hub here), evaluated;
4. study    T x alpha x student x seed, in worker processes sharing the GPU;
5. select   per student the cell best on *validation* (never on test), the seed best on
            validation within it; whether the teacher helped comes from the cell means;
6. export   the selected students (and the teacher) as contract ONNX files, plus everything
            needed to recompute the figures elsewhere (split.json, reports, ablation).

Every stage has a time budget so that the run finishes with its results written, and writes
`summary.json` as it goes. `edgekd train ship emotion` recomputes the shipped models'
figures on the original files, on the CPU, with the runtime.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekd_train.tasks import DEFAULT_DATA, TaskOptionsError, start_run

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- 1. config


@dataclass(frozen=True)
class EmotionOptions:
    """What `edgekd train run emotion` takes; the recipe holds the training settings and the grid."""

    out: Path
    recipe: str = "emotion"
    data: Path = DEFAULT_DATA
    packed: Path | None = None  # a packed copy (edgekd_train.data.pack) instead of --data
    noise: Path | None = None  # .npy of background noise for the students' augmentation
    teacher_dir: Path | None = None  # reuse a trained teacher instead of training one
    teacher_minutes: float = 3.0
    teacher_epochs: float | None = None
    teacher_lr: float | None = None
    student_epochs: int | None = None
    study_seconds: float = 240.0  # no new ablation run starts after this
    workers: int = 8
    seeds: tuple[int, ...] | None = None
    students: tuple[str, ...] | None = None
    smoke: bool = False  # a minute-long pass over every stage, to catch errors
    ship_from: str = "all"  # "all" cells, or only "teacher" cells (alpha < 1)
    thin: int = 1  # keep every thin-th clip (a quick check of the whole pipeline on few clips)
    alphas: tuple[float, ...] | None = None  # part of the grid only (e.g. to add seeds to some cells)
    temperatures: tuple[float, ...] | None = None
    stop_after_teacher: bool = False  # then save a float16 copy of it and time two short student runs
    assignments: tuple[str, ...] = ()  # recipe [distill] overrides, KEY=VALUE (edgekd_train.recipe.with_overrides)

    def __post_init__(self) -> None:
        if self.packed is None and not self.data.is_dir():
            raise TaskOptionsError(f"no data folder {self.data}: pass --data or --packed")
        if self.packed is not None and not (self.packed / "manifest.json").is_file():
            raise TaskOptionsError(f"{self.packed} is not a packed folder (no manifest.json): see train/data/pack.py")
        if self.noise is not None and not self.noise.is_file():
            raise TaskOptionsError(f"no noise bank {self.noise}")
        if self.ship_from not in ("all", "teacher"):
            raise TaskOptionsError(f"--ship-from {self.ship_from!r}: use all or teacher")
        if self.workers < 1 or self.teacher_minutes <= 0 or self.study_seconds <= 0:
            raise TaskOptionsError("--workers, --teacher-minutes and --study-seconds must be positive")


class Summary:
    """summary.json, rewritten after every stage so a cut-off run still says how far it got."""

    def __init__(self, path: Path) -> None:
        self.path, self.data = path, {"stages": {}}

    def stage(self, name: str, **values: Any) -> None:
        self.data["stages"][name] = values
        self.path.write_text(json.dumps(self.data, indent=1, sort_keys=True, default=str))


def run(cfg: EmotionOptions) -> None:
    """Every stage in turn; OUT/summary.json says how far it got."""
    started = time.monotonic()
    start_run(cfg.out, cpu_threads=False)
    import torch

    from edgekd_train.ablate import AblationData, grid, run_grid, write_ablation
    from edgekd_train.ensemble import StudentEnsemble, describe_teacher, is_ensemble, load_teacher_model
    from edgekd_train.evaluate import evaluate, write_report
    from edgekd_train.prepare import centre_crop, prepare
    from edgekd_train.recipe import distill_settings, load_recipe, with_overrides
    from edgekd_train.teacher import (
        ScratchTeacherConfig, TeacherTrainConfig, build_teacher, count_parameters, finetune_teacher, teacher_logits,
    )  # fmt: skip

    summary = Summary(cfg.out / "summary.json")
    summary.stage("config", **{k: str(v) for k, v in asdict(cfg).items()},
                  device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                  torch=torch.__version__)

    # ----------------------------------------------------------------------- 2. data
    recipe = with_overrides(load_recipe(cfg.recipe), cfg.assignments)
    if cfg.packed is not None:
        recipe = recipe.reading_packed(cfg.packed)
    t0 = time.monotonic()
    split, tests, w = prepare(recipe, cfg.data, thin=cfg.thin)
    split.write(cfg.out / "split.json")
    labels = recipe.task.labels
    test_names = tuple(tests)
    summary.stage("data", seconds=time.monotonic() - t0, split=split.summary(), skipped=w.skipped,
                  windows={k: list(v.shape) for k, v in w.x.items()})
    log.info("data ready in %.0f s: %s", time.monotonic() - t0, {k: v.shape for k, v in w.x.items()})

    # ----------------------------------------------------------------------- 3. teacher
    # labels-only runs (alpha = 1 throughout) need no teacher: skip it
    labels_only = cfg.alphas is not None and all(a >= 1 for a in cfg.alphas) and cfg.teacher_dir is None
    teacher_dir: Path | None = None
    teacher_info: dict[str, Any] = {"skipped": "labels-only runs (alpha = 1)"}
    if labels_only:
        summary.stage("teacher", **teacher_info)
    else:
        t0 = time.monotonic()
        teacher_out = cfg.out / "teacher"
        if cfg.teacher_dir is not None:
            model = load_teacher_model(cfg.teacher_dir, labels, recipe.task.sample_rate)
            teacher_dir = cfg.teacher_dir
            teacher_info = {"reused": str(cfg.teacher_dir), **describe_teacher(model)}
        else:
            scratch = ScratchTeacherConfig.from_mapping(recipe.teacher_scratch)
            model = build_teacher(scratch if recipe.teacher_source == "scratch" else recipe.teacher_source, labels)
            overrides: dict[str, Any] = {"max_minutes": cfg.teacher_minutes, "num_workers": 6}
            if cfg.teacher_epochs is not None:
                overrides["epochs"] = cfg.teacher_epochs
            if cfg.teacher_lr is not None:
                overrides["learning_rate"] = cfg.teacher_lr
            tcfg = TeacherTrainConfig.from_mapping({**recipe.teacher_train, **overrides})
            result = finetune_teacher(model.cuda() if torch.cuda.is_available() else model,
                                      centre_crop(w.x["train"], recipe.task.window_samples), w.y["train"],
                                      w.x["val"], w.y["val"], tcfg, teacher_out)
            model, teacher_dir = result.model, teacher_out / "best"
            teacher_info = {"source": recipe.teacher_source, "scratch": asdict(scratch), "train": asdict(tcfg),
                            "best_val_accuracy": result.best_val_accuracy, "train_seconds": result.train_seconds,
                            "stopped_by_time_budget": result.stopped_early,
                            "epochs_run": max((h.get("epoch", 0) for h in result.history), default=0)}
            (teacher_out / "history.json").write_text(json.dumps(result.history, indent=1, default=float))
        teacher_info["parameters"] = count_parameters(model)
        model.eval()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        t_evals = {n: evaluate(teacher_logits(model.to(device), w.x[n], 64), w.y[n], labels) for n in w.x if n != "train"}
        write_report(teacher_out / "report", t_evals, "teacher (wav2vec2 from scratch)",
                     {"parameters": teacher_info["parameters"]})
        teacher_info["figures"] = {n: e.summary() for n, e in t_evals.items()}
        summary.stage("teacher", seconds=time.monotonic() - t0, **teacher_info)
        log.info("teacher: %s", {n: round(e.accuracy, 4) for n, e in t_evals.items()})
        model.cpu()
        # a compact copy travels back from the GPU machine; float16 halves it (its logits run in bf16 there anyway)
        if not isinstance(model, StudentEnsemble):
            model.half().save_pretrained(cfg.out / "teacher16")
        del model
        torch.cuda.empty_cache()

    # ----------------------------------------------------------------------- 4. study
    t0 = time.monotonic()
    work = cfg.out / "work"
    AblationData.save_windows(work, w)
    _, fields, aug = distill_settings(recipe, epochs=cfg.student_epochs)
    if cfg.smoke:
        fields.update(max_steps=3, batch_size=16)
    abl = recipe.ablation
    students = cfg.students or abl.students
    seeds = cfg.seeds or abl.seeds
    data = AblationData(str(work), labels, recipe.task.sample_rate, str(teacher_dir) if teacher_dir else None,
                        tuple(test_names), fields, aug,
                        str(cfg.noise) if cfg.noise else None, time_limit_s=cfg.study_seconds)
    # seed by seed: when the time limit stops new runs, whole seeds of the grid are complete
    temperatures, alphas = cfg.temperatures or abl.temperatures, cfg.alphas or abl.alphas
    jobs = sorted(grid(students, temperatures, alphas, seeds), key=lambda j: (j.seed, j.student, j.alpha, j.T))
    if cfg.stop_after_teacher:  # time one short run of each student, then stop
        fields["epochs"] = 2
        data = replace(data, distill=fields)
        jobs = [next(j for j in jobs if j.student == s and j.alpha < 1) for s in students]
    log.info("study: %d runs on %d workers", len(jobs), cfg.workers)
    results = run_grid(data, jobs, cfg.out / "runs", cfg.workers)
    metrics = ["val_acc", *test_names]
    notes = [f"recipe {recipe.path.name}; distillation settings {fields}; augmentation {aug}",
             "cells are chosen on validation accuracy; test figures are reported, never used to choose"]
    ablation = write_ablation(cfg.out / "ablation", results, list(abl.temperatures), metrics, "val_acc", notes)
    summary.stage("study", seconds=time.monotonic() - t0, runs=len(results), planned=len(jobs),
                  teacher_effect=ablation["teacher_effect"],
                  run_seconds={r["key"]: r["seconds"] for r in results})
    if cfg.stop_after_teacher:
        shutil.rmtree(work, ignore_errors=True)
        summary.stage("done", seconds=time.monotonic() - started)
        return

    # ----------------------------------------------------------------------- 5. select + 6. export
    t0 = time.monotonic()
    shipped = select_and_export(cfg.out, cfg.ship_from, recipe, results, ablation, w.x["val"][:16], teacher_info)
    if teacher_dir is not None and not is_ensemble(teacher_dir):
        export_teacher(recipe, teacher_dir, w.x["val"][:8], cfg.out / "teacher.onnx")
    shutil.rmtree(work, ignore_errors=True)
    summary.stage("export", seconds=time.monotonic() - t0, shipped=shipped)
    summary.stage("done", seconds=time.monotonic() - started)
    log.info("done in %.0f s", time.monotonic() - started)


def select_and_export(out: Path, ship_from: str, recipe, results: list[dict[str, Any]], ablation: dict[str, Any],
                      check_windows: np.ndarray, teacher_info: dict[str, Any],
                      teacher_infos: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Per student: the cell best on mean validation accuracy, its seed best on validation, exported.

    Reads `out/runs/<key>.pt`; writes `out/<student>-<task>.onnx` and `.pt`. The ONNX Runtime vs
    torch tolerance is the recipe's `[export] parity_atol` (default 1e-4). With several teachers,
    rows and runs carry `teacher_kind` (a key of `teacher_infos`) and a cell is (teacher, T, alpha).
    """
    from edgekd_train.checkpoints import load_student
    from edgekd_train.export import export_onnx
    from edgekd_train.models.macs import macs_per_second
    from edgekd_train.models.students import count_params
    from edgekd_train.recipe import model_metadata

    shipped = {}
    for student in sorted({r["student"] for r in results}):
        rows = [r for r in ablation["rows"] if r["student"] == student and (ship_from == "all" or r["alpha"] < 1)]
        best = max(rows, key=lambda r: r["val_acc"][0])
        runs = [r for r in results if r["student"] == student and r["alpha"] == best["alpha"]
                and (best["alpha"] >= 1 or (r["T"] == best["T"] and r.get("teacher_kind") == best.get("teacher_kind")))]
        chosen_teacher = (teacher_infos or {}).get(best.get("teacher_kind") or "", teacher_info)
        run = max(runs, key=lambda r: r["val_acc"])
        model, _ = load_student(out / "runs" / f"{run['key']}.pt", student, len(recipe.task.labels),
                                recipe.task.sample_rate)
        name = f"{student}-{recipe.task.name}"
        training = {
            "data": "TESS (CC BY-NC-ND 4.0) + RAVDESS speech, calm dropped (CC BY-NC-SA 4.0); non-commercial use",
            "split": "TESS word-disjoint (unseen words), RAVDESS actors 15-18 held out; validation by whole words/actors",
            "teacher": {k: chosen_teacher.get(k) for k in ("source", "parameters", "best_val_accuracy")}
            if run["alpha"] < 1 else None,
            "student": student, "T": run["T"], "alpha": run["alpha"], "seed": run["seed"],
            "figures_gpu": {"val_acc": run["val_acc"], **run["tests"]},
            "params": count_params(model), "macs_per_second": macs_per_second(model, recipe.task.sample_rate),
        }
        meta = model_metadata(recipe, name, None, training)
        atol = recipe.export.parity_atol
        report = export_onnx(model, meta, out / f"{name}.onnx", check_windows, atol=atol)
        shutil.copy(out / "runs" / f"{run['key']}.pt", out / f"{name}.pt")
        shipped[student] = {"cell": {"T": best["T"], "alpha": best["alpha"], "teacher": best.get("teacher_kind")},
                            "run": run["key"],
                            "export": report.to_dict(), "training": training}
        log.info("shipping %s: %s (val %.4f, %s)", name, run["key"], run["val_acc"], run["tests"])
    return shipped


def export_teacher(recipe, teacher_dir: Path, check_windows: np.ndarray, path: Path) -> None:
    from edgekd_train.export import export_onnx
    from edgekd_train.recipe import model_metadata
    from edgekd_train.teacher import AudioTeacher, build_teacher

    model = build_teacher(teacher_dir, recipe.task.labels)
    meta = model_metadata(recipe, f"teacher-{recipe.task.name}", None, {"role": "teacher", "architecture": "wav2vec2"})
    try:
        export_onnx(AudioTeacher(model).eval(), meta, path, check_windows)
    except Exception as exc:  # the students matter more than the teacher's ONNX copy: say so and go on
        log.error("teacher ONNX export failed: %s", exc)
