"""Ship the emotion models: re-measure them here, on the CPU, and write their cards.

    python -m train.ship_emotion --results runs/emotion-gpu --models models

For each student ONNX file that `edgekd train run emotion` exported, this

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

import numpy as np
import onnx

from edgekd.contract import file_sha256
from train.evaluate import write_report
from train.export import set_training
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


INT8_MAX_DROP = 0.005  # an INT8 copy ships only if no test subset loses more than half a point


def try_int8(fp32: Path, split_path: Path, recipe, fp32_evals: dict[str, Any], work: Path, models: Path) -> dict[str, Any]:
    """Quantise with calibration windows from the training part; ship it if it holds accuracy and is faster."""
    from train.onnx_eval import split_windows
    from train.quantize import quantize_int8

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


def _cell_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| T | alpha | n | val | TESS unseen words | RAVDESS held-out actors |", "|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{_pct(r[m][0])} (one run)" if r[m][1] != r[m][1] else f"{_pct(r[m][0])} ± {_pct(r[m][1])}"
                 for m in ("val_acc", "tess", "ravdess")]
        lines.append(f"| {r['T']:g} | {r['alpha']:g} | {r['n']} | " + " | ".join(cells) + " |")
    return lines


def card(name: str, meta_training: dict[str, Any], figures: dict[str, Any], teachers: dict[str, dict[str, Any]],
         ablations: dict[str, dict[str, Any]], size: int, sha: str, int8: dict[str, Any] | None = None,
         groups: dict[str, dict[str, list[str]]] | None = None, settings: dict[str, Any] | None = None) -> str:
    """The model card. `teachers` / `ablations` are keyed by teacher kind: "wav2vec2", "ensemble"."""
    t = meta_training
    student = t["student"]
    settings = settings or {}
    w2v, ens = teachers.get("wav2vec2", {}), teachers.get("ensemble", {})
    wfig, efig = w2v.get("figures", {}), ens.get("figures", {})

    def acc(fig: dict[str, Any], key: str) -> str:
        return _pct(fig.get(key, {}).get("accuracy", float("nan")))

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
    ev = figures["evaluations"]
    target_r = 0.60 if student == "wav2small" else 0.55
    met_t, met_r = ev["test_tess"]["accuracy"] >= 0.995, ev["test_ravdess"]["accuracy"] >= target_r
    gpu = t.get("figures_gpu", {})
    kind = t.get("teacher_kind")
    if t["alpha"] >= 1:
        how = (f"labels alone (alpha = 1, so no teacher and no T), seed {t['seed']}")
    else:
        who = ("the Wav2Small ensemble (below)" if kind == "ensemble" else "the wav2vec2 teacher (below)")
        how = (f"distilled from {who} with Hinton's loss, T = {t['T']:g}, alpha = {t['alpha']:g} (alpha weighs the "
               f"label loss; alpha = 1 would ignore the teacher), seed {t['seed']}")
    lines += [
        "",
        "Windows: the centre 3 s of each file (shorter files zero-padded), as the evaluation has always used.",
        "",
        f"**Targets of issue 3: {'met' if met_t and met_r else 'NOT met'}.** Unseen TESS words ≥ 99.5%: "
        f"{_pct(ev['test_tess']['accuracy'])} ({'met' if met_t else 'missed'}); held-out RAVDESS actors ≥ "
        f"{_pct(target_r)}: {_pct(ev['test_ravdess']['accuracy'])} ({'met' if met_r else 'missed'}). "
        f"RAVDESS's test part is 208 clips of 4 actors: one clip is 0.5 points, and runs that differ only in their "
        f"seed spread by several points (tables below). In torch on the GPU, on the packed copy of the same test "
        f"clips, the same weights scored TESS {_pct(gpu.get('tess', {}).get('accuracy', float('nan')))} and "
        f"RAVDESS {_pct(gpu.get('ravdess', {}).get('accuracy', float('nan')))}.",
        "",
        "## Model",
        "",
        f"- student: {student}, {t['params']:,} trainable parameters, {t['macs_per_second'] / 1e6:.1f} M "
        "multiply-accumulates per second of audio (log-mel front end included)",
        f"- training: {how}. The rule, fixed before any test figure was seen: the cell (teacher, T, alpha) with the "
        "best mean validation accuracy over seeds, then the seed with the best validation accuracy in it; "
        "never a test figure.",
        f"- recipe: {settings.get('epochs', '?')} epochs, AdamW (lr {settings.get('lr', '?')}, weight decay "
        f"{settings.get('weight_decay', '?')}), warm-up then linear decay, batch {settings.get('batch_size', '?')}; "
        f"each training clip decoded as a centred {settings.get('train_window_seconds', 3)} s window from which every "
        "epoch crops a random 3 s, then time shift, gain and background noise at 10-30 dB SNR on half the windows.",
        "",
        "## Teachers",
        "",
        f"- **wav2vec2** (`Wav2Vec2ForSequenceClassification`) trained **from random weights** on the same training "
        f"part with transformers' Trainer: {w2v.get('parameters', 0):,} parameters (hidden 256, 4 layers, "
        f"256-channel CNN), learning rate {w2v.get('train', {}).get('learning_rate', '?')}, "
        f"{w2v.get('epochs_run', 0):.0f} epochs in its {w2v.get('train', {}).get('max_minutes', '?')}-minute budget; "
        f"validation {_pct(w2v.get('best_val_accuracy', float('nan')))}, test TESS {acc(wfig, 'test_tess')}, "
        f"RAVDESS {acc(wfig, 'test_ravdess')}. It is *not* the 95M-parameter pretrained wav2vec2-base of the study "
        "we follow: no model hub is reachable here. A second one at learning rate 2e-4 validated lower "
        f"({_pct(teachers.get('wav2vec2_alt', {}).get('best_val_accuracy', float('nan')))}) and was not used. "
        "From scratch on ~2,200 clips it is weaker than the students it should teach.",
        f"- **ensemble**: the mean logits of four Wav2Small students trained on labels alone (seeds 0-3 of the "
        f"recipe above; {ens.get('parameters', 0):,} parameters together): validation {acc(efig, 'val')}, test TESS "
        f"{acc(efig, 'test_tess')}, RAVDESS {acc(efig, 'test_ravdess')}. A stronger teacher than the wav2vec2 that "
        "can be trained here (Mirzadeh et al. 2020, \"teacher assistant\"; `train/ensemble.py`).",
        "",
        "## Data and split",
        "",
        f"- {LICENCES}",
        "- labels: TESS `ps` and RAVDESS `surprised` -> surprise, RAVDESS `fearful` -> fear; RAVDESS `calm` "
        "(no counterpart among the 7 labels) was **dropped**.",
        "- test: whole TESS words never seen in training (20% of the words), and RAVDESS actors 15-18 "
        "(the local copy holds actors 1-18). Validation: whole TESS words and whole RAVDESS actors carved "
        "from the rest. Seed 0; `train.prepare.protocol_split` with the recipe rebuilds it exactly (a data test checks "
        "these figures that way)."
        + (f" Test words ({len(groups['test']['tess'])}): {', '.join(groups['test']['tess'])}. Validation words: "
           f"{', '.join(groups['val']['tess'])}; validation actors: {', '.join(groups['val']['ravdess'])}."
           if groups else ""),
        "- training ran on the GPU from a packed copy of the clips, whole (not silence-trimmed), as Opus at ~40 kbit/s, "
        "because the GPU machine could not take the FLACs; the figures at the top are on the original files. "
        "(The previous models trained on a silence-trimmed copy and lost about 4 points on the originals.)",
        "",
        "## Did distillation help? (ablation, means ± std over seeds)",
        "",
    ]
    for k, title in (("wav2vec2", "wav2vec2 teacher: the study's T x alpha grid"),
                     ("ensemble", "Wav2Small ensemble as teacher (T = 2)")):
        abl = ablations.get(k)
        if not abl:
            continue
        effect = abl["teacher_effect"].get(student, {})
        lines += [f"### {title}", "",
                  f"Verdict: **{effect.get('verdict', 'not measured')}** (best teacher cell by validation: "
                  f"{effect.get('best_cell')}; a difference counts only when it exceeds the larger spread).", ""]
        mine = [r for r in abl["rows"] if r["student"] == student]
        lines += _cell_table(mine) + [""]
        most = max(r["n"] for r in mine)
        short = [f"T = {r['T']:g}, alpha = {r['alpha']:g} (seeds {', '.join(map(str, r['seeds']))})"
                 for r in mine if r["n"] < most]
        if short:
            lines += [f"Cells with fewer than {most} runs: {'; '.join(short)}. The missing run did not start "
                      "within its GPU call's time limit.", ""]
    lines += ["alpha = 1 rows are the same three labels-only runs in every table and T row (the loss ignores the "
              "teacher and T there). Ablation figures: torch on the GPU, on the packed test windows.", ""]
    if int8:
        f = int8.get("figures", {})
        lines += ["## INT8", "",
                  f"Static INT8 (QDQ, per-channel weights, 64 calibration windows from the training part; log-mel front "
                  f"end kept in float): {int8.get('int8_bytes', 0):,} bytes ({int8.get('size_ratio', 0):.2f} of float32), "
                  f"single-window latency {int8.get('int8_ms', 0):.2f} ms vs {int8.get('fp32_ms', 0):.2f} ms "
                  f"(1 thread, this 2-core workstation, shared), test accuracy TESS {_pct(f.get('test_tess', float('nan')))}, "
                  f"RAVDESS {_pct(f.get('test_ravdess', float('nan')))}. "
                  + (f"Shipped as `{name}-int8.onnx`: {int8['why']}." if int8.get("shipped")
                     else f"{str(int8.get('why')).capitalize()}."), ""]
    onnx_diff = meta_training.get("onnx_vs_torch_max_abs")
    if onnx_diff is not None:
        lines += ["## Export check", "",
                  f"ONNX Runtime vs torch on 16 real validation windows: max |logit difference| {onnx_diff:.1e}. "
                  "The figures above come from this file.", ""]
    return "\n".join(lines)


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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Select, export, re-measure on the CPU and card the emotion students.")
    p.add_argument("--results", type=Path, nargs="+", required=True,
                   help="unpacked `edgekd train run emotion` results with the wav2vec2 teacher and the labels-only runs")
    p.add_argument("--ensemble-results", type=Path, nargs="*", default=[],
                   help="unpacked results whose teacher was a student ensemble (train.ensemble)")
    p.add_argument("--teacher-summary", type=Path, required=True, help="summary.json of the run that trained the wav2vec2")
    p.add_argument("--alt-teacher-summary", type=Path, help="summary.json of a wav2vec2 trained and not used")
    p.add_argument("--ensemble-summary", type=Path, help="summary.json of a run that evaluated the ensemble teacher")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds the tables keep (default: the recipe's)")
    p.add_argument("--work", type=Path, default=Path("runs/emotion-final"))
    p.add_argument("--models", type=Path, default=Path("models"))
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--manifest", type=Path, default=Path(".devdata/emotion-whole/manifest.json"))
    p.add_argument("--recipe", default="emotion")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from train.ablate import write_ablation
    from train.onnx_eval import split_windows
    from train.recipe import distill_settings
    from train.tasks.emotion import select_and_export

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
        figures = {"labels": list(evals["test"].labels), "evaluations": {k: e.to_dict() for k, e in evals.items()}}
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
        size, sha = dst.stat().st_size, file_sha256(dst)
        info["cpu_figures"] = training["figures"]
        (a.models / f"{name}-int8.onnx").unlink(missing_ok=True)  # an older INT8 copy must not outlive its float32
        int8 = try_int8(dst, split_path, recipe, evals, a.work, a.models)
        info["int8"] = int8
        (a.models / f"{name}.md").write_text(card(name, training, figures, teachers, ablations, size, sha, int8,
                                                  split_groups(split_path), settings))
        log.info("%s (%s): %s", name, info["run"], training["figures"])
    (a.work / "shipped.json").write_text(json.dumps(shipped, indent=1, sort_keys=True, default=float))


if __name__ == "__main__":
    main()
