"""COVID-19 status from a cough, at 8 kHz, on a workstation CPU, top to bottom.

    nice -n 10 edgekd train run covid --out runs/covid --export models/wav2small-covid.onnx

Labels negative, positive; 2 s at 8 kHz (train/recipes/covid.toml): every clip resampled to 8 kHz,
the telephone band, which removes the band difference between the call-center (8 kHz, mostly
positive) and telegram (48 kHz, mostly negative) sources. Split by recording (the recipe's [split]).
The decision threshold on P(positive) is chosen on validation (Youden's J); test figures overall and
per source: ROC-AUC, sensitivity, specificity, precision, recall, F1. `--target source` trains the
same model to tell the sources apart instead: how much of the shortcut is left after band-limiting.
`--score FILE.onnx ...` trains nothing and measures ONNX files on the same windows.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from edgekd_train.binary_figures import binary_figures, softmax, youden_threshold
from edgekd_train.data.loudest import TaskData, decode_loudest
from edgekd_train.tasks import ClipTaskOptions, TaskOptionsError, start_run

log = logging.getLogger(__name__)

POSITIVE = "positive"  # the label whose probability is thresholded


@dataclass(frozen=True)
class CovidOptions(ClipTaskOptions):
    """What `edgekd train run covid` takes."""

    recipe: str = "covid"
    target: Literal["covid", "source"] = "covid"  # source: the shortcut probe (which recording source)

    def __post_init__(self) -> None:
        if self.target not in ("covid", "source"):
            raise TaskOptionsError(f"--target {self.target!r}: use covid or source")
        super().__post_init__()


def check_labels(recipe) -> None:
    if len(recipe.task.labels) != 2 or POSITIVE not in recipe.task.labels or recipe.data.noise is None:
        raise TaskOptionsError(f"recipe {recipe.path}: the covid task needs two labels, one of them "
                               f"{POSITIVE!r} (it has {list(recipe.task.labels)}), and [data] noise")


def covid_data(data: Path, recipe, target: str = "covid") -> TaskData:
    """Every clip at the recipe's rate (8 kHz: the telephone band), split by recording; `target` "source"
    labels each clip by its recording source instead (the shortcut probe)."""
    from dataclasses import replace

    from edgekd_train.prepare import load_clips, protocol_split

    labels, rate, n = recipe.task.labels, recipe.task.sample_rate, recipe.task.window_samples
    by_corpus = load_clips(recipe.corpora, data)
    if target == "source":  # the shortcut probe: same model, same band, the recording source as the label
        negative = next(lab for lab in labels if lab != POSITIVE)
        by_corpus = {k: [replace(c, label=POSITIVE if c.meta["source"] == "call-center" else negative) for c in clips]
                     for k, clips in by_corpus.items()}  # fmt: skip
    s, _ = protocol_split(by_corpus, recipe.split)
    xs, ys, kept = {}, {}, {}
    for k in ("train", "val", "test"):  # load_audio at 8 kHz: the telephone band for every clip
        xs[k], ys[k], kept[k] = decode_loudest(getattr(s, k), labels, rate, n)
    return TaskData(xs, ys, kept, s)


def covid_figures(logits_fn: Callable[[np.ndarray], np.ndarray], d: TaskData, recipe) -> dict[str, Any]:
    """The threshold on P(positive) chosen on validation (Youden's J), then figures overall and per
    recording source on val and test; the counts of each part by source and label."""
    labels = recipe.task.labels
    pos = labels.index(POSITIVE)
    p = {k: softmax(logits_fn(d.x[k]))[:, pos] for k in ("val", "test")}
    threshold = youden_threshold(p["val"], d.y["val"] == pos)
    src = {k: np.array([c.meta.get("source") for c in d.kept[k]]) for k in ("val", "test")}
    figures = {}
    for part in ("val", "test"):
        figures[part] = {"overall": binary_figures(p[part], d.y[part] == pos, threshold)}
        for source in sorted(set(src[part])):
            m = src[part] == source
            figures[part][source] = binary_figures(p[part][m], d.y[part][m] == pos, threshold)
    counts = {k: {f"{so}/{lab}": int(((src[k] == so) & (d.y[k] == i)).sum()) for so in sorted(set(src[k]))
                  for i, lab in enumerate(labels)} for k in ("val", "test")}  # fmt: skip
    counts["train"] = {f"{so}/{lab}": sum(1 for c in d.kept["train"] if c.meta.get("source") == so and c.label == lab)
                       for so in ("call-center", "telegram") for lab in labels}  # fmt: skip
    return {"threshold_from_val": threshold, "counts": counts, "figures": figures}


def run(a: CovidOptions) -> dict[str, Any]:
    """Data, student, figures (threshold from validation), export; writes OUT/summary.json and returns
    it (or, with `score`, the rows of the given ONNX files, and OUT/table.md)."""
    from edgekd_train.recipe import distill_settings, load_recipe, with_overrides

    recipe = with_overrides(load_recipe(a.recipe), a.assignments)
    check_labels(recipe)
    start_run(a.out)
    from edgekd_train.prepare import noise_bank
    from edgekd_train.student_run import export, fit, logits_of
    from edgekd_train.tasks.scoring import score
    labels, rate = recipe.task.labels, recipe.task.sample_rate
    d = covid_data(a.data, recipe, a.target)
    if a.score:
        return score(a.score, d, recipe, a.out)
    d.split.write(a.out / "split.json")
    student, fields, aug = distill_settings(recipe, student=a.student, epochs=a.epochs)
    res = fit(student, labels, (d.x["train"], d.y["train"]), (d.x["val"], d.y["val"]), fields, aug,
              noise_bank(a.data / recipe.data.noise, rate, seconds_per_file=40.0), sample_rate=rate,
              time_limit_s=a.minutes * 60)
    figs = covid_figures(lambda x: logits_of(res.model, x), d, recipe)
    summary = {"target": a.target, "student": student, "params": res.params, "macs_per_window": res.macs_per_window,
               "train_seconds": round(res.seconds, 1), "epochs_run": len(res.history["epoch"]),
               "best_epoch": res.history["best_epoch"], **{k: figs[k] for k in ("threshold_from_val", "counts")},
               "distill": fields, "augment": aug, "figures": figs["figures"]}  # fmt: skip
    if a.export and a.target == "covid":
        sp = recipe.split
        training = {"data": "covid19-cough (CC0), both sources, every clip resampled to 8 kHz (telephone band)",
                    "split": f"by recording, seed {sp.seed}: val {sp.val:.0%}, test {sp.test:.0%}", "teacher": None,
                    "student": student, "alpha": fields.get("alpha", 1.0), "params": res.params, "threshold_positive": figs["threshold_from_val"],
                    "figures": {"test": figs["figures"]["test"]},
                    "intended_use": "screening aid for research; not a diagnosis"}  # fmt: skip
        summary["export"] = export(res.model, recipe, f"{student}-covid", training, d.x["test"][:16], a.export)
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    log.info("summary: %s", json.dumps(summary.get("figures"), default=float)[:2000])
    return summary
