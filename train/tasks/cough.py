"""Cough detection on a workstation CPU, top to bottom: is this second of audio a cough, speech or
something else?

    nice -n 10 edgekd train run cough --out runs/cough --export models/wav2tiny-cough.onnx

Labels cough, speech, other; 1 s at 16 kHz (train/recipes/cough.toml). The recipe's corpora give
the coughs and the speech (each corpus labelled and split by its own groups: coughs by recording,
RAVDESS by actor, TESS by word); "other" comes from the recipe's noise recordings by time range
(the first 60% of each recording trains, the next 15% validates, the last 25% tests). Each clip
gives its loudest window. A random 30% of the training windows are band-limited to 4 kHz, so that
the telephone band of the call-center coughs does not become the sign of a cough. Figures: accuracy
and per-class figures, coughs called cough per recording source, and how often band-limited speech
is called a cough. `--score FILE.onnx ...` trains nothing and measures ONNX files on the same windows.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekd_train.data.loudest import TaskData, bandlimit, decode_loudest
from edgekd_train.tasks import ClipTaskOptions, TaskOptionsError, start_run

log = logging.getLogger(__name__)

COUGH, SPEECH, OTHER = "cough", "speech", "other"  # the labels the figures and the noise windows need
NOISE_PARTS = {"train": (0.0, 0.6), "val": (0.6, 0.75), "test": (0.75, 1.0)}  # time range of each noise recording
P_BANDLIMIT = 0.3  # share of the training windows band-limited to the telephone band


@dataclass(frozen=True)
class CoughOptions(ClipTaskOptions):
    """What `edgekd train run cough` takes."""

    recipe: str = "cough"


def check_labels(recipe) -> None:
    missing = [lab for lab in (COUGH, SPEECH, OTHER) if lab not in recipe.task.labels]
    if missing or recipe.data.noise is None:
        raise TaskOptionsError(f"recipe {recipe.path}: the cough task needs the labels {[COUGH, SPEECH, OTHER]} "
                               f"(missing {missing}) and [data] noise (the recordings that make \"{OTHER}\")")


def noise_windows(folder: Path, rate: int, n: int, part: str) -> np.ndarray:
    """Non-overlapping `n`-sample windows of each noise recording's `part` time range."""
    from edgekd_train.data.audio import find_audio_files, load_audio

    lo, hi = NOISE_PARTS[part]
    out = []
    for f in find_audio_files(folder):
        x = load_audio(f, rate)
        seg = x[int(lo * len(x)) : int(hi * len(x))]
        out += [seg[i : i + n] for i in range(0, len(seg) - n + 1, n)]
    return np.stack(out).astype(np.float32)


def cough_data(data: Path, recipe) -> TaskData:
    """The recipe's corpora, each split by its own groups (coughs by recording, RAVDESS speech by actor,
    TESS speech by word), and "other" from the noise recordings by time range; a fixed random 30% of
    the training windows band-limited to 4 kHz."""
    from edgekd_train.prepare import load_clips, protocol_split

    check_labels(recipe)
    labels, rate, n = recipe.task.labels, recipe.task.sample_rate, recipe.task.window_samples
    sp = recipe.split
    split, _ = protocol_split(load_clips(recipe.corpora, data), sp)
    parts = split.parts()
    split_info: dict[str, Any] = {}
    for corpus in dict.fromkeys(c.corpus for c in split.train):
        groups = {k: sorted({c.group for c in clips if c.corpus == corpus}) for k, clips in parts.items()}
        split_info[corpus] = {k: len(g) if len(g) > 100 else g for k, g in groups.items()}
    split_info["other_noise_time_ranges"] = NOISE_PARTS
    xs, ys, kept = {}, {}, {}
    for k, clips in parts.items():
        x, y, kept[k] = decode_loudest(clips, labels, rate, n)
        nz = noise_windows(data / recipe.data.noise, rate, n, k)
        xs[k] = np.concatenate([x, nz])
        ys[k] = np.concatenate([y, np.full(len(nz), labels.index(OTHER))])
        log.info("%s: %s", k, {lab: int((ys[k] == i).sum()) for i, lab in enumerate(labels)})
    rng = np.random.default_rng(sp.seed)
    pick = rng.random(len(xs["train"])) < P_BANDLIMIT
    xs["train"][pick] = bandlimit(xs["train"][pick], rate)
    return TaskData(xs, ys, kept, split_info)


def cough_figures(logits_fn: Callable[[np.ndarray], np.ndarray], d: TaskData, recipe) -> dict[str, Any]:
    """Accuracy and per-class figures on val and test, coughs called cough per source, and whether
    band-limited test speech is called cough. Keys: `evals` (EvalResult per part) and the rest."""
    from edgekd_train.evaluate import evaluate

    labels, rate = recipe.task.labels, recipe.task.sample_rate
    test_logits = logits_fn(d.x["test"])
    evals = {"val": evaluate(logits_fn(d.x["val"]), d.y["val"], labels), "test": evaluate(test_logits, d.y["test"], labels)}
    # coughs of each source: how many the detector calls cough
    src = np.array([c.meta.get("source") if c.corpus == "covid19_cough" else c.corpus for c in d.kept["test"]]
                   + ["noise"] * (len(d.x["test"]) - len(d.kept["test"])))
    cough = labels.index(COUGH)
    pred = test_logits.argmax(1)
    per_source = {s: {"n": int((src == s).sum()), "called_cough": float((pred[src == s] == cough).mean())}
                  for s in sorted(set(src))}  # fmt: skip
    # band-limited test speech: does the telephone band alone make speech a cough?
    sp_idx = d.y["test"] == labels.index(SPEECH)
    bl_pred = logits_fn(bandlimit(d.x["test"][sp_idx], rate)).argmax(1)
    return {"evals": evals, "figures": {k: e.summary() for k, e in evals.items()},
            "per_class_test": [c.__dict__ for c in evals["test"].per_class], "confusion_test": evals["test"].confusion,
            "test_by_source": per_source, "bandlimited_test_speech_called_cough": float((bl_pred == cough).mean())}


def run(a: CoughOptions) -> dict[str, Any]:
    """Data, student, figures, export; writes OUT/summary.json and returns it (or, with `score`, the
    rows of the given ONNX files, and OUT/table.md)."""
    from edgekd_train.recipe import distill_settings, load_recipe, with_overrides

    recipe = with_overrides(load_recipe(a.recipe), a.assignments)
    check_labels(recipe)
    start_run(a.out)
    from edgekd_train.evaluate import write_report
    from edgekd_train.prepare import noise_bank
    from edgekd_train.student_run import export, fit, logits_of
    from edgekd_train.tasks.scoring import score

    labels, rate = recipe.task.labels, recipe.task.sample_rate
    d = cough_data(a.data, recipe)
    if a.score:
        return score(a.score, d, recipe, a.out)
    student, fields, aug = distill_settings(recipe, student=a.student, epochs=a.epochs)
    res = fit(student, labels, (d.x["train"], d.y["train"]), (d.x["val"], d.y["val"]), fields, aug,
              noise_bank(a.data / recipe.data.noise, rate, seconds_per_file=40.0), sample_rate=rate,
              time_limit_s=a.minutes * 60)
    figs = cough_figures(lambda x: logits_of(res.model, x), d, recipe)
    evals = figs.pop("evals")
    write_report(a.out / "report", evals, f"{student} cough detector", {"params": res.params})
    summary = {"student": student, "params": res.params, "macs_per_window": res.macs_per_window,
               "train_seconds": round(res.seconds, 1), "epochs_run": len(res.history["epoch"]),
               "best_epoch": res.history["best_epoch"], "split": d.split, "distill": fields, "augment": aug,
               **figs}  # fmt: skip
    if a.export:
        training = {"data": "coughs: covid19-cough (CC0); speech: RAVDESS (CC BY-NC-SA 4.0), TESS (CC BY-NC-ND 4.0); "
                            "other: Speech Commands background noise (CC BY 4.0); non-commercial use",
                    "split": "coughs by recording, RAVDESS by actor, TESS by word, noise by time range; "
                             f"seed {recipe.split.seed}",
                    "teacher": None, "student": student, "alpha": fields.get("alpha", 1.0), "params": res.params,
                    "figures": {"test": evals["test"].summary(), "test_by_source": figs["test_by_source"]}}  # fmt: skip
        summary["export"] = export(res.model, recipe, f"{student}-cough", training, d.x["test"][::40][:16], a.export)
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    log.info("summary: %s", json.dumps(summary.get("figures"), default=float)[:2000])
    return summary
