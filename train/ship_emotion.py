"""Ship the emotion models: re-measure them here, on the CPU, and write their cards.

    edgekd train ship emotion --results runs/emotion-gpu --teacher-summary runs/emotion-gpu/summary.json

For each student ONNX file that `edgekd train run emotion` exported, this

1. rebuilds the split from the original FLAC files with the same recipe and checks that it is
   the very split the GPU run used (via the packed copy's manifest);
2. scores the file with the device runtime (`edgekd.model.Model`, CPU onnxruntime) on the
   original test files: unseen TESS words and held-out RAVDESS actors;
3. writes those figures into the file's `edgekd.training` metadata (the graph is unchanged), the
   run record `models/<name>.record.json` (recipe settings, teachers, ablation tables, the INT8
   attempt, the split's groups) and the card `models/<name>.md` rendered from both by
   `edgekd_train.cards` (prose in train/cards/emotion.md.tmpl, targets in train/cards/emotion.toml).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgekd.contract import file_sha256
from edgekd_train.cards import RECORD_SUFFIX, write_card
from edgekd_train.evaluate import write_report
from edgekd_train.export import set_training
from edgekd_train.onnx_eval import evaluate_onnx_on_split
from edgekd_train.prepare import load_clips, protocol_split
from edgekd_train.recipe import load_recipe

log = logging.getLogger(__name__)


def original_split(recipe_name: str, data: Path, gpu_split: Path, manifest: Path | None, out: Path) -> Path:
    """The split over the original files, checked against the GPU run's split when possible."""
    recipe = load_recipe(recipe_name)
    split, _ = protocol_split(load_clips(recipe.corpora, data.resolve()), recipe.split)
    if manifest is not None and manifest.is_file():
        to_original = {e["path"]: e["original"] for e in json.loads(manifest.read_text())["clips"]}
        used = json.loads(gpu_split.read_text())["parts"]
        for part, clips in split.parts().items():
            mine = sorted(str(Path(c.path).resolve()) for c in clips)
            def original(r: dict[str, Any]) -> str:
                rel = Path(r["path"]).relative_to(manifest.parent.resolve()) if Path(r["path"]).is_absolute() else r["path"]
                return str(Path(to_original[str(rel)]).resolve())

            theirs = sorted(original(r) for r in used[part])
            if mine != theirs:
                raise SystemExit(f"the {part} part rebuilt from {data} differs from the GPU run's {gpu_split}")
        log.info("the split over the original files is the GPU run's split (checked clip by clip)")
    split.write(out)
    return out


INT8_MAX_DROP = 0.005  # an INT8 copy ships only if no test subset loses more than half a point


def try_int8(fp32: Path, split_path: Path, recipe, fp32_evals: dict[str, Any], work: Path, models: Path) -> dict[str, Any]:
    """Quantise with calibration windows from the training part; ship it if it holds accuracy and is faster."""
    from edgekd_train.onnx_eval import split_windows
    from edgekd_train.quantize import quantize_int8

    calib, _ = split_windows(split_path, "train", recipe.task.labels, recipe.task.sample_rate,
                             recipe.task.window_samples, limit=64)
    out = work / f"{fp32.stem}-int8.onnx"
    report = quantize_int8(fp32, out, calib)
    evals, _ = evaluate_onnx_on_split(out, split_path, "test")
    report["figures"] = {k: round(e.accuracy, 4) for k, e in evals.items()}
    drops = {k: fp32_evals[k].accuracy - e.accuracy for k, e in evals.items()}
    holds = max(drops.values()) <= INT8_MAX_DROP
    faster = report.get("speedup", 0) > 1.0
    report["shipped"] = bool(holds and faster)
    report["why"] = ("holds accuracy and runs faster" if report["shipped"] else
                     f"not shipped: {'accuracy drops by up to ' + _pct(max(drops.values())) if not holds else ''}"
                     f"{'' if faster else ('; ' if not holds else '') + 'no faster than float32 here'}")
    if report["shipped"]:  # its own measured figures in its metadata, not the float32 ones it inherited
        proto = onnx.load(str(out))
        set_training(proto, {"figures": {k: {"accuracy": round(e.accuracy, 4), "macro_f1": round(e.macro_f1, 4),
                                             "n": e.n} for k, e in evals.items()}})
        onnx.save(proto, str(models / out.name))
    return {k: v for k, v in report.items() if not isinstance(v, (list, np.ndarray))}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def split_groups(split_path: Path) -> dict[str, dict[str, list[str]]]:
    """Groups (TESS words, RAVDESS actors) of each part of a split, per corpus."""
    parts = json.loads(Path(split_path).read_text())["parts"]
    return {part: {corpus: sorted({r["group"] for r in rows if r["corpus"] == corpus}) for corpus in ("tess", "ravdess")}
            for part, rows in parts.items()}


def merge_runs(result_dirs: list[Path], work: Path, kind: str | None = None,
               seeds: set[int] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Gather the ablation runs of several GPU calls (same split) into `work/runs`.

    `kind` names the teacher of their alpha < 1 runs (`teacher_kind`); runs of a teacher other than
    wav2vec2 get it as a key prefix, so that the same cell of two teachers can sit side by side.
    `seeds` keeps only those seeds.
    """
    import shutil

    (work / "runs").mkdir(parents=True, exist_ok=True)
    parts0 = json.loads((result_dirs[0] / "split.json").read_text())["parts"]
    results: dict[str, dict[str, Any]] = {}
    for d in result_dirs:
        if json.loads((d / "split.json").read_text())["parts"] != parts0:
            raise SystemExit(f"{d} used another split than {result_dirs[0]}: its runs cannot share one table")
        for f in sorted((d / "runs").glob("*.json")):
            r = json.loads(f.read_text())
            if seeds is not None and r["seed"] not in seeds:
                continue
            key = r["key"]
            if kind is not None and r["alpha"] < 1:
                r["teacher_kind"] = kind
                if kind != "wav2vec2":
                    key = r["key"] = f"{kind}-{key}"
            if key in results:
                raise SystemExit(f"run {key} appears twice ({d}); keep one")
            r.pop("history", None)
            results[key] = r
            shutil.copy(f, work / "runs" / f"{key}.json")
            shutil.copy(f.with_suffix(".pt"), work / "runs" / f"{key}.pt")
    shutil.copy(result_dirs[0] / "split.json", work / "split.json")
    summary = json.loads((result_dirs[0] / "summary.json").read_text())
    summary["merged_from"] = [str(d) for d in result_dirs]
    return list(results.values()), summary


@dataclass(frozen=True)
class ShipOptions:
    """What `edgekd train ship emotion` takes."""

    results: tuple[Path, ...]  # `edgekd train run emotion` results: wav2vec2 teacher and labels-only runs
    teacher_summary: Path  # summary.json of the run that trained the wav2vec2
    ensemble_results: tuple[Path, ...] = ()  # results whose teacher was a student ensemble
    alt_teacher_summary: Path | None = None  # a wav2vec2 trained and not used
    ensemble_summary: Path | None = None  # a run that evaluated the ensemble teacher
    seeds: tuple[int, ...] | None = None  # seeds the tables keep (default: the recipe's)
    work: Path = Path("runs/emotion-final")
    models: Path = Path("models")
    data: Path = Path("../shared/data")
    manifest: Path = Path(".devdata/emotion-whole/manifest.json")
    recipe: str = "emotion"


def ship(a: ShipOptions) -> None:
    """Merge, select on validation, export, re-measure on the CPU; write each model's file, record and card."""
    from edgekd_train.ablate import write_ablation
    from edgekd_train.onnx_eval import split_windows
    from edgekd_train.recipe import distill_settings
    from edgekd_train.tasks.emotion import select_and_export

    recipe = load_recipe(a.recipe)
    seeds = set(a.seeds or recipe.ablation.seeds)
    results, summary = merge_runs(a.results, a.work, "wav2vec2", seeds)
    teachers = {"wav2vec2": json.loads(a.teacher_summary.read_text())["stages"]["teacher"]}
    if a.alt_teacher_summary:
        teachers["wav2vec2_alt"] = json.loads(a.alt_teacher_summary.read_text())["stages"]["teacher"]
    ens_results: list[dict[str, Any]] = []
    if a.ensemble_results:
        ens_results, _ = merge_runs(a.ensemble_results, a.work, "ensemble", seeds)
        if a.ensemble_summary:
            teachers["ensemble"] = json.loads(a.ensemble_summary.read_text())["stages"]["teacher"]
    tests = sorted({t for r in results for t in r["tests"]})
    metrics = ["val_acc", *tests]
    notes = ["cells are chosen on validation accuracy; test figures are reported, never used to choose",
             "test figures in this table: torch on the GPU, on the packed (Opus) test windows"]
    labels_only = [r for r in results if r["alpha"] >= 1]
    ablations = {"wav2vec2": write_ablation(a.work / "ablation", results, list(recipe.ablation.temperatures), metrics,
                                            "val_acc", [f"teacher: wav2vec2 from scratch; merged from {[str(d) for d in a.results]}", *notes])}
    if ens_results:
        ens_temps = sorted({r["T"] for r in ens_results})
        ablations["ensemble"] = write_ablation(a.work / "ablation-ensemble", ens_results + labels_only, ens_temps, metrics,
                                               "val_acc", [f"teacher: Wav2Small ensemble; merged from {[str(d) for d in a.ensemble_results]}", *notes])
    for kind, abl in ablations.items():
        for row in abl["rows"]:
            if row["alpha"] < 1:
                row["teacher_kind"] = kind
    rows = [r for abl in ablations.values() for r in abl["rows"]]
    (a.work / "summary.json").write_text(json.dumps({**summary, "teachers": teachers}, indent=1, sort_keys=True, default=str))
    split_path = original_split(a.recipe, a.data, a.work / "split.json", a.manifest, a.work / "split-original.json")
    check, _ = split_windows(split_path, "val", recipe.task.labels, recipe.task.sample_rate,
                             recipe.task.window_samples, limit=16)
    shipped = select_and_export(a.work, "all", recipe, results + ens_results, {"rows": rows}, check,
                                teachers["wav2vec2"], teachers)
    _, settings, _ = distill_settings(recipe)
    settings["train_window_seconds"] = recipe.distill.train_window_seconds or recipe.task.window_seconds
    a.models.mkdir(parents=True, exist_ok=True)
    for student, info in shipped.items():
        name = f"{student}-{recipe.task.name}"
        src = a.work / f"{name}.onnx"
        evals, einfo = evaluate_onnx_on_split(src, split_path, "test")
        write_report(a.work / f"report-{name}-cpu", evals, f"{name} (CPU, original files)", einfo)
        proto = onnx.load(str(src))
        training = set_training(proto, {
            "teacher_kind": info["cell"].get("teacher"),
            "figures": {k: {"accuracy": round(e.accuracy, 4), "macro_f1": round(e.macro_f1, 4), "n": e.n}
                        for k, e in evals.items()},
            "figures_measured": "CPU onnxruntime via edgekd.model.Model on the original FLAC test files",
            "distillation_helped": {k: abl["teacher_effect"].get(student, {}).get("verdict")
                                    for k, abl in ablations.items()},
            "onnx_vs_torch_max_abs": info["export"]["max_abs_diff"],
        })
        dst = a.models / f"{name}.onnx"
        onnx.save(proto, str(dst))
        sha = file_sha256(dst)
        info["cpu_figures"] = training["figures"]
        (a.models / f"{name}-int8.onnx").unlink(missing_ok=True)  # an older INT8 copy must not outlive its float32
        int8 = try_int8(dst, split_path, recipe, evals, a.work, a.models)
        info["int8"] = int8
        record = {"model": name, "sha256": sha, "settings": settings, "teachers": teachers, "ablations": ablations,
                  "int8": int8, "split_groups": split_groups(split_path)}
        record_path = a.models / f"{name}{RECORD_SUFFIX}"
        record_path.write_text(json.dumps(record, indent=1, sort_keys=True, default=float, ensure_ascii=False) + "\n")
        write_card(dst, a.models / f"{name}.md", record_path)
        log.info("%s (%s): %s", name, info["run"], training["figures"])
    (a.work / "shipped.json").write_text(json.dumps(shipped, indent=1, sort_keys=True, default=float))
