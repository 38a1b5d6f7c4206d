"""Ship the emotion models: re-measure them here, on the CPU, and write their cards.

    python -m train.ship_emotion --results runs/emotion-gpu --models models

For each student ONNX file that `train.run_emotion` exported, this

1. rebuilds the split from the original FLAC files with the same recipe and checks that it is
   the very split the GPU run used (via the packed copy's manifest);
2. scores the file with the device runtime (`edgekd.model.Model`, CPU onnxruntime) on the
   original test files: unseen TESS words and held-out RAVDESS actors;
3. writes those figures into the file's `edgekd.training` metadata (the graph is unchanged) and
   a model card `models/<name>.md` with data, licences, split, teacher, T, alpha, figures, size,
   parameters, MACs and what the ablation says about the teacher.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import onnx

from edgekd.contract import KEY_TRAINING, file_sha256
from train.evaluate import write_report
from train.onnx_eval import evaluate_onnx_on_split
from train.prepare import load_clips, protocol_split
from train.recipe import load_recipe

log = logging.getLogger("train.ship_emotion")

LICENCES = (
    "TESS (Toronto Emotional Speech Set; Dupuis & Pichora-Fuller, University of Toronto, 2010, "
    "doi:10.5683/SP2/E8H2MF): CC BY-NC-ND 4.0. RAVDESS speech (Livingstone & Russo 2018, "
    "doi:10.5281/zenodo.1188976): CC BY-NC-SA 4.0. Background noise for augmentation: the Speech "
    "Commands noise recordings (Warden 2018), CC BY 4.0."
)


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


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def card(name: str, meta_training: dict[str, Any], figures: dict[str, Any], summary: dict[str, Any],
         ablation: dict[str, Any], size: int, sha: str) -> str:
    t = meta_training
    student = t["student"]
    effect = ablation["teacher_effect"].get(student, {})
    teacher = summary["stages"].get("teacher", {})
    tfig = teacher.get("figures", {})
    rows = [r for r in ablation["rows"] if r["student"] == student]
    lines = [
        f"# {name}",
        "",
        f"Speech emotion classifier for edgekd: raw 16 kHz PCM in (3 s windows), 7 labels out "
        f"({', '.join(figures['labels'])}). One ONNX file, {size:,} bytes, SHA-256 `{sha[:12]}…`. "
        "**Non-commercial use only** (the training data's licences).",
        "",
        "## Measured figures (this file, CPU onnxruntime through `edgekd.model.Model`, original FLAC test files)",
        "",
        "| test set | clips | accuracy | macro F1 |",
        "|---|---|---|---|",
    ]
    for key, label in (("test_tess", "TESS, unseen words (word-disjoint)"),
                       ("test_ravdess", "RAVDESS, held-out actors 15-18"), ("test", "both")):
        e = figures["evaluations"][key]
        lines.append(f"| {label} | {e['n']} | {_pct(e['accuracy'])} | {e['macro_f1']:.3f} |")
    lines += [
        "",
        "Windows: the centre 3 s of each file (shorter files zero-padded), as in training. Targets of issue 3: "
        "unseen TESS words ≥ 99.5%; held-out RAVDESS actors ≥ 60% (Wav2Small) / ≥ 55% (Wav2Tiny).",
        "",
        "## Model",
        "",
        f"- student: {student}, {t['params']:,} trainable parameters, {t['macs_per_second'] / 1e6:.1f} M "
        "multiply-accumulates per second of audio (log-mel front end included)",
        f"- distillation: Hinton loss, T = {t['T']:g}, alpha = {t['alpha']:g} "
        "(alpha weighs the label loss; alpha = 1 would ignore the teacher), seed "
        f"{t['seed']}; the cell and the seed were chosen on validation accuracy, never on test",
        f"- teacher: wav2vec2 (Wav2Vec2ForSequenceClassification) trained **from random weights** on the same "
        f"training part, {teacher.get('parameters', 0):,} parameters (hidden 256, 4 layers, 256-channel CNN). "
        "It is *not* the 95M-parameter pretrained wav2vec2-base of the study we follow: no model hub is "
        "reachable here, and a small from-scratch model is what a few GPU minutes on ~2,200 clips can train. "
        f"Its accuracy on the (packed) test windows: TESS {_pct(tfig.get('test_tess', {}).get('accuracy', float('nan')))}, "
        f"RAVDESS {_pct(tfig.get('test_ravdess', {}).get('accuracy', float('nan')))}.",
        "",
        "## Data and split",
        "",
        f"- {LICENCES}",
        "- labels: TESS `ps` and RAVDESS `surprised` -> surprise, RAVDESS `fearful` -> fear; RAVDESS `calm` "
        "(no counterpart among the 7 labels) was **dropped**.",
        "- test: whole TESS words never seen in training (20% of the words), and RAVDESS actors 15-18 "
        "(the local copy holds actors 1-18). Validation: whole TESS words and whole RAVDESS actors carved "
        "from the rest. Seed 0; the split file is written next to the results.",
        "- training ran on a packed copy (silence-trimmed, Opus at ~40 kbit/s, median 25 dB SNR to the "
        "original) because the GPU machine could not take the FLACs; the figures above are on the originals.",
        "- augmentation: time shift, gain, background noise at 10-30 dB SNR (half the windows).",
        "",
        "## Did distillation help? (ablation, means ± std over seeds)",
        "",
        f"Verdict for {student}: **{effect.get('verdict', 'not measured')}** "
        f"(best teacher cell by validation: {effect.get('best_cell')}; a difference counts only when it exceeds "
        "the larger spread).",
        "",
        "| T | alpha | n | val | TESS unseen words | RAVDESS held-out actors |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [f"{_pct(r[m][0])} ± {_pct(r[m][1])}" for m in ("val_acc", "tess", "ravdess")]
        lines.append(f"| {r['T']:g} | {r['alpha']:g} | {r['n']} | " + " | ".join(cells) + " |")
    lines += ["", "(alpha = 1 rows are one set of runs repeated per T: the loss ignores T there. "
              "Ablation figures come from the GPU run on the packed windows.)", ""]
    return "\n".join(lines)


def merge_runs(result_dirs: list[Path], work: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Gather the ablation runs of several GPU calls (same split, same teacher) into `work/runs`."""
    import shutil

    (work / "runs").mkdir(parents=True, exist_ok=True)
    parts0 = json.loads((result_dirs[0] / "split.json").read_text())["parts"]
    results: dict[str, dict[str, Any]] = {}
    for d in result_dirs:
        if json.loads((d / "split.json").read_text())["parts"] != parts0:
            raise SystemExit(f"{d} used another split than {result_dirs[0]}: its runs cannot share one table")
        for f in sorted((d / "runs").glob("*.json")):
            r = json.loads(f.read_text())
            if r["key"] in results:
                raise SystemExit(f"run {r['key']} appears twice ({d}); keep one")
            r.pop("history", None)
            results[r["key"]] = r
            shutil.copy(f, work / "runs" / f.name)
            shutil.copy(f.with_suffix(".pt"), work / "runs" / f.with_suffix(".pt").name)
    shutil.copy(result_dirs[0] / "split.json", work / "split.json")
    summary = json.loads((result_dirs[0] / "summary.json").read_text())
    summary["merged_from"] = [str(d) for d in result_dirs]
    (work / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    return list(results.values()), summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Select, export, re-measure on the CPU and card the emotion students.")
    p.add_argument("--results", type=Path, nargs="+", required=True,
                   help="unpacked results of one or more train.run_emotion calls (same split and teacher)")
    p.add_argument("--work", type=Path, default=Path("runs/emotion-final"))
    p.add_argument("--models", type=Path, default=Path("models"))
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--manifest", type=Path, default=Path(".devdata/emotion/manifest.json"))
    p.add_argument("--recipe", default="emotion")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from train.ablate import write_ablation
    from train.onnx_eval import split_windows
    from train.run_emotion import select_and_export

    recipe = load_recipe(a.recipe)
    results, summary = merge_runs(a.results, a.work)
    tests = sorted({t for r in results for t in r["tests"]})
    notes = [f"merged from {len(a.results)} GPU calls with the same split and teacher: {[str(d) for d in a.results]}",
             "cells are chosen on validation accuracy; test figures are reported, never used to choose",
             "test figures in this table: torch on the GPU, on the packed (Opus) test windows"]
    ablation = write_ablation(a.work / "ablation", results, list(recipe.ablation.temperatures), ["val_acc", *tests],
                              "val_acc", notes)
    split_path = original_split(a.recipe, a.data, a.work / "split.json", a.manifest, a.work / "split-original.json")
    check, _ = split_windows(split_path, "val", recipe.task.labels, recipe.task.sample_rate,
                             recipe.task.window_samples, limit=16)
    teacher_info = summary["stages"].get("teacher", {})
    shipped = select_and_export(a.work, "all", recipe, results, ablation, check, teacher_info)
    a.models.mkdir(parents=True, exist_ok=True)
    for student, info in shipped.items():
        name = f"{student}-{recipe.task.name}"
        src = a.work / f"{name}.onnx"
        evals, einfo = evaluate_onnx_on_split(src, split_path, "test")
        write_report(a.work / f"report-{name}-cpu", evals, f"{name} (CPU, original files)", einfo)
        figures = {"labels": list(evals["test"].labels), "evaluations": {k: e.to_dict() for k, e in evals.items()}}
        proto = onnx.load(str(src))
        training = json.loads({p.key: p.value for p in proto.metadata_props}.get(KEY_TRAINING, "{}"))
        training["figures"] = {k: {"accuracy": round(e.accuracy, 4), "macro_f1": round(e.macro_f1, 4), "n": e.n}
                               for k, e in evals.items()}
        training["figures_measured"] = "CPU onnxruntime via edgekd.model.Model on the original FLAC test files"
        training["distillation_helped"] = ablation["teacher_effect"].get(student, {}).get("verdict")
        training["onnx_vs_torch_max_abs"] = info["export"]["max_abs_diff"]
        for prop in proto.metadata_props:
            if prop.key == KEY_TRAINING:
                prop.value = json.dumps(training, sort_keys=True)
        dst = a.models / f"{name}.onnx"
        onnx.save(proto, str(dst))
        size, sha = dst.stat().st_size, file_sha256(dst)
        info["cpu_figures"] = training["figures"]
        (a.models / f"{name}.md").write_text(card(name, training, figures, summary, ablation, size, sha))
        log.info("%s (%s): %s", name, info["run"], training["figures"])
    (a.work / "shipped.json").write_text(json.dumps(shipped, indent=1, sort_keys=True, default=float))


if __name__ == "__main__":
    main()
