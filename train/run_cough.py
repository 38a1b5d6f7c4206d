"""Cough detection and COVID-19 screening from coughs, top to bottom, on a workstation CPU.

    nice -n 10 python -m train.run_cough cough --out runs/cough --export models/wav2tiny-cough.onnx
    nice -n 10 python -m train.run_cough covid --out runs/covid --export models/wav2small-covid.onnx

`cough` (labels cough, speech, other; 1 s at 16 kHz): coughs from covid19-cough (split by
recording), speech from RAVDESS (by actor) and TESS (by word), other from the noise
recordings (by time range: the first 60% of each recording trains, the next 15% validates,
the last 25% tests). Each clip gives its loudest window. A random 30% of the training
windows are band-limited to 4 kHz, so that the telephone band of the call-center coughs does
not become the sign of a cough.

`covid` (labels negative, positive; 2 s at 8 kHz): every clip resampled to 8 kHz, the
telephone band, which removes the band difference between the call-center (8 kHz, mostly
positive) and telegram (48 kHz, mostly negative) sources. Split by recording. The decision
threshold on P(positive) is chosen on validation (Youden's J); test figures overall and per
source: ROC-AUC, sensitivity, specificity, precision, recall, F1. `--target source` trains
the same model to tell the sources apart instead: how much of the shortcut is left after
band-limiting. `--score FILE.onnx ...` trains nothing and measures ONNX files (the shipped ones,
say) on the same windows with the same figures, ROC-AUCs with a 95% bootstrap interval.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

log = logging.getLogger("train.run_cough")

NOISE_PARTS = {"train": (0.0, 0.6), "val": (0.6, 0.75), "test": (0.75, 1.0)}
P_BANDLIMIT = 0.3


def loudest_window(x: np.ndarray, n: int) -> np.ndarray:
    """The `n`-sample stretch of `x` with the most energy (`x` centred and zero-padded if shorter)."""
    if len(x) <= n:
        out = np.zeros(n, np.float32)
        off = (n - len(x)) // 2
        out[off : off + len(x)] = x
        return out
    c = np.concatenate([[0.0], np.cumsum(np.square(x, dtype=np.float64))])
    start = int(np.argmax(c[n:] - c[:-n]))
    return x[start : start + n].astype(np.float32)


def decode_loudest(clips: Sequence, labels: Sequence[str], rate: int, n: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Windows, label indices and the clips kept (unreadable files are skipped and counted)."""
    from train.data.audio import AudioDecodeError, load_audio

    xs, ys, kept, bad = [], [], [], 0
    for c in clips:
        try:
            x = load_audio(c.path, rate)
        except AudioDecodeError as exc:
            bad += 1
            log.warning("skipping %s: %s", c.path, exc)
            continue
        xs.append(loudest_window(x, n))
        ys.append(labels.index(c.label))
        kept.append(c)
    if bad:
        log.warning("%d unreadable file(s) skipped", bad)
    return np.stack(xs), np.array(ys, np.int64), kept


def bandlimit(x: np.ndarray, rate: int, band_rate: int = 8000) -> np.ndarray:
    """Resample to `band_rate` and back: nothing above band_rate / 2 survives."""
    from train.data.audio import resample

    return np.stack([resample(resample(w, rate, band_rate), band_rate, rate)[: x.shape[1]] for w in x]).astype(np.float32)


def noise_windows(folder: Path, rate: int, n: int, part: str) -> np.ndarray:
    """Non-overlapping `n`-sample windows of each noise recording's `part` time range."""
    from train.data.audio import find_audio_files, load_audio

    lo, hi = NOISE_PARTS[part]
    out = []
    for f in find_audio_files(folder):
        x = load_audio(f, rate)
        seg = x[int(lo * len(x)) : int(hi * len(x))]
        out += [seg[i : i + n] for i in range(0, len(seg) - n + 1, n)]
    return np.stack(out).astype(np.float32)


def youden_threshold(scores: np.ndarray, positive: np.ndarray) -> float:
    """The threshold on P(positive) with the highest sensitivity + specificity - 1."""
    best, best_t = -1.0, 0.5
    for t in np.unique(scores):
        pred = scores >= t
        sens = (pred & positive).sum() / max(1, positive.sum())
        spec = (~pred & ~positive).sum() / max(1, (~positive).sum())
        if sens + spec - 1 > best:
            best, best_t = sens + spec - 1, float(t)
    return best_t


def binary_figures(scores: np.ndarray, positive: np.ndarray, threshold: float) -> dict[str, float]:
    from train.evaluate import roc_auc, roc_auc_interval

    pred = scores >= threshold
    tp, fp = int((pred & positive).sum()), int((pred & ~positive).sum())
    fn, tn = int((~pred & positive).sum()), int((~pred & ~positive).sum())
    sens = tp / (tp + fn) if tp + fn else float("nan")
    prec = tp / (tp + fp) if tp + fp else float("nan")
    both = len(set(positive.tolist())) == 2
    return {
        "n": int(len(scores)), "positives": int(positive.sum()),
        "roc_auc": roc_auc(scores, positive) if both else float("nan"),
        "roc_auc_95ci": list(roc_auc_interval(scores, positive)) if both else [float("nan")] * 2,
        "sensitivity": sens, "specificity": tn / (tn + fp) if tn + fp else float("nan"),
        "precision": prec, "recall": sens,
        "f1": 2 * prec * sens / (prec + sens) if tp else 0.0,
        "accuracy": (tp + tn) / len(scores), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }  # fmt: skip


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class TaskData:
    """A task's windows, label indices and source clips per part (`train`, `val`, `test`)."""

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    kept: dict[str, list]
    split: Any  # covid: the `Split`; cough: the groups of each source in each part


def cough_data(data: Path, recipe) -> TaskData:
    """The recipe's corpora, each split by its own groups (coughs by recording, RAVDESS speech by actor,
    TESS speech by word), and "other" from the noise recordings by time range; a fixed random 30% of
    the training windows band-limited to 4 kHz."""
    from train.prepare import load_clips, protocol_split

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
        ys[k] = np.concatenate([y, np.full(len(nz), labels.index("other"))])
        log.info("%s: %s", k, {lab: int((ys[k] == i).sum()) for i, lab in enumerate(labels)})
    rng = np.random.default_rng(sp.seed)
    pick = rng.random(len(xs["train"])) < P_BANDLIMIT
    xs["train"][pick] = bandlimit(xs["train"][pick], rate)
    return TaskData(xs, ys, kept, split_info)


def cough_figures(logits_fn: Callable[[np.ndarray], np.ndarray], d: TaskData, recipe) -> dict[str, Any]:
    """Accuracy and per-class figures on val and test, coughs called cough per source, and whether
    band-limited test speech is called cough. Keys: `evals` (EvalResult per part) and the rest."""
    from train.evaluate import evaluate

    labels, rate = recipe.task.labels, recipe.task.sample_rate
    test_logits = logits_fn(d.x["test"])
    evals = {"val": evaluate(logits_fn(d.x["val"]), d.y["val"], labels), "test": evaluate(test_logits, d.y["test"], labels)}
    # coughs of each source: how many the detector calls cough
    src = np.array([c.meta.get("source") if c.corpus == "covid19_cough" else c.corpus for c in d.kept["test"]]
                   + ["noise"] * (len(d.x["test"]) - len(d.kept["test"])))
    pred = test_logits.argmax(1)
    per_source = {s: {"n": int((src == s).sum()), "called_cough": float((pred[src == s] == 0).mean())}
                  for s in sorted(set(src))}  # fmt: skip
    # band-limited test speech: does the telephone band alone make speech a cough?
    sp_idx = d.y["test"] == labels.index("speech")
    bl_pred = logits_fn(bandlimit(d.x["test"][sp_idx], rate)).argmax(1)
    return {"evals": evals, "figures": {k: e.summary() for k, e in evals.items()},
            "per_class_test": [c.__dict__ for c in evals["test"].per_class], "confusion_test": evals["test"].confusion,
            "test_by_source": per_source, "bandlimited_test_speech_called_cough": float((bl_pred == 0).mean())}


def run_cough(a: argparse.Namespace, recipe) -> dict[str, Any]:
    from train.evaluate import write_report
    from train.prepare import noise_bank
    from train.recipe import distill_settings
    from train.student_run import export, fit, logits_of

    labels, rate = recipe.task.labels, recipe.task.sample_rate
    d = cough_data(a.data, recipe)
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
                    "split": "coughs by recording, RAVDESS by actor, TESS by word, noise by time range; seed 0",
                    "teacher": None, "student": student, "alpha": 1.0, "params": res.params,
                    "figures": {"test": evals["test"].summary(), "test_by_source": figs["test_by_source"]}}  # fmt: skip
        summary["export"] = export(res.model, recipe, f"{student}-cough", training, d.x["test"][::40][:16], a.export)
    return summary


def covid_data(data: Path, recipe, target: str = "covid") -> TaskData:
    """Every clip at the recipe's rate (8 kHz: the telephone band), split by recording; `target` "source"
    labels each clip by its recording source instead (the shortcut probe)."""
    from dataclasses import replace

    from train.prepare import load_clips, protocol_split

    labels, rate, n = recipe.task.labels, recipe.task.sample_rate, recipe.task.window_samples
    by_corpus = load_clips(recipe.corpora, data)
    if target == "source":  # the shortcut probe: same model, same band, the recording source as the label
        by_corpus = {k: [replace(c, label="positive" if c.meta["source"] == "call-center" else "negative")
                         for c in clips] for k, clips in by_corpus.items()}  # fmt: skip
    s, _ = protocol_split(by_corpus, recipe.split)
    xs, ys, kept = {}, {}, {}
    for k in ("train", "val", "test"):  # load_audio at 8 kHz: the telephone band for every clip
        xs[k], ys[k], kept[k] = decode_loudest(getattr(s, k), labels, rate, n)
    return TaskData(xs, ys, kept, s)


def covid_figures(logits_fn: Callable[[np.ndarray], np.ndarray], d: TaskData, recipe) -> dict[str, Any]:
    """The threshold on P(positive) chosen on validation (Youden's J), then figures overall and per
    recording source on val and test; the counts of each part by source and label."""
    labels = recipe.task.labels
    p = {k: _softmax(logits_fn(d.x[k]))[:, 1] for k in ("val", "test")}
    threshold = youden_threshold(p["val"], d.y["val"] == 1)
    src = {k: np.array([c.meta.get("source") for c in d.kept[k]]) for k in ("val", "test")}
    figures = {}
    for part in ("val", "test"):
        figures[part] = {"overall": binary_figures(p[part], d.y[part] == 1, threshold)}
        for source in sorted(set(src[part])):
            m = src[part] == source
            figures[part][source] = binary_figures(p[part][m], d.y[part][m] == 1, threshold)
    counts = {k: {f"{so}/{lab}": int(((src[k] == so) & (d.y[k] == i)).sum()) for so in sorted(set(src[k]))
                  for i, lab in enumerate(labels)} for k in ("val", "test")}  # fmt: skip
    counts["train"] = {f"{so}/{lab}": sum(1 for c in d.kept["train"] if c.meta.get("source") == so and c.label == lab)
                       for so in ("call-center", "telegram") for lab in labels}  # fmt: skip
    return {"threshold_from_val": threshold, "counts": counts, "figures": figures}


def run_covid(a: argparse.Namespace, recipe) -> dict[str, Any]:
    from train.prepare import noise_bank
    from train.recipe import distill_settings
    from train.student_run import export, fit, logits_of

    labels, rate = recipe.task.labels, recipe.task.sample_rate
    d = covid_data(a.data, recipe, a.target)
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
        training = {"data": "covid19-cough (CC0), both sources, every clip resampled to 8 kHz (telephone band)",
                    "split": "by recording, seed 0: val 15%, test 25%", "teacher": None, "student": student,
                    "alpha": 1.0, "params": res.params, "threshold_positive": figs["threshold_from_val"],
                    "figures": {"test": figs["figures"]["test"]},
                    "intended_use": "screening aid for research; not a diagnosis"}  # fmt: skip
        summary["export"] = export(res.model, recipe, f"{student}-covid", training, d.x["test"][:16], a.export)
    return summary


def task_figures(logits_fn: Callable[[np.ndarray], np.ndarray], d: TaskData, recipe) -> dict[str, Any]:
    """`cough_figures` or `covid_figures` by the recipe's task, as plain data."""
    if recipe.task.name == "cough":
        out = cough_figures(logits_fn, d, recipe)
        out.pop("evals")
        return out
    return covid_figures(logits_fn, d, recipe)


def onnx_row(path: Path, d: TaskData, recipe) -> dict[str, Any]:
    """An ONNX file measured the way the device runs it (`edgekd.model.Model`) on the task's windows:
    its figures, size, MACs and one-thread latency."""
    from edgekd.model import Model
    from train.onnx_eval import measure_onnx

    model = Model(path)
    window = recipe.task.window_samples
    if model.meta.sample_rate != recipe.task.sample_rate or model.meta.window_samples != window:
        raise SystemExit(f"{path}: its window ({model.meta.window_samples} samples at {model.meta.sample_rate} Hz) "
                         f"is not the {recipe.task.name} task's ({window} at {recipe.task.sample_rate} Hz)")

    def logits(x: np.ndarray) -> np.ndarray:
        return np.concatenate([model.logits(x[i : i + 32]) for i in range(0, len(x), 32)])

    return {"figures": task_figures(logits, d, recipe), "params": model.meta.training.get("params"),
            "sha256": model.sha256, **measure_onnx(path, d.x["val"][0])}


def _auc(f: dict[str, Any]) -> str:
    lo, hi = f.get("roc_auc_95ci", (float("nan"),) * 2)
    return f"{f['roc_auc']:.2f}" + (f" ({lo:.2f}-{hi:.2f})" if lo == lo else "")


def _key_figures(task: str, figures: dict[str, Any]) -> list[str]:
    f = figures["figures"]
    if task == "cough":
        return [f"{100 * f['val']['accuracy']:.1f}%", f"{100 * f['test']['accuracy']:.1f}%", f"{f['test']['macro_f1']:.3f}"]
    test = f["test"]
    sources = [k for k in test if k != "overall"]
    return ([_auc(f["val"]["overall"]), _auc(test["overall"])] + [_auc(test[k]) for k in sources]
            + [f"{100 * test['overall']['sensitivity']:.0f}% / {100 * test['overall']['specificity']:.0f}%"])


ROW_NAMES = {"teacher": "wav2vec2 teacher", "reduced_before": "reduced, {layers} layers, before distillation",
             "reduced": "reduced, {layers} layers, distilled"}  # fmt: skip


def table_md(task: str, rows: dict[str, dict[str, Any]], layers: int | None = None) -> str:
    """A markdown table of cough or covid rows: size, MACs, latency, the task's figures (covid: ROC-AUC
    with its 95% bootstrap interval, overall and per recording source)."""
    if task == "cough":
        figure_cols = ["val accuracy", "test accuracy", "test macro F1"]
    else:
        sources = [k for k in next(iter(rows.values()))["figures"]["figures"]["test"] if k != "overall"]
        figure_cols = ["val ROC-AUC", "test ROC-AUC"] + [f"test ROC-AUC, {k}" for k in sources] + \
            ["test sensitivity / specificity (threshold from val)"]
    head = ["model", "trainable params", "MMAC / window", "ONNX bytes", "latency, 1 thread"] + figure_cols
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, r in rows.items():
        cells = [ROW_NAMES.get(key, key).format(layers=layers), f"{r['params']:,}" if r.get("params") else "",
                 f"{r['macs_per_window'] / 1e6:.1f}" if "macs_per_window" in r else "",
                 f"{r['bytes']:,}" if "bytes" in r else "",
                 f"{r['latency_ms_1thread']:.2f} ms" if "latency_ms_1thread" in r else ""]
        lines.append("| " + " | ".join(cells + _key_figures(task, r["figures"])) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("task", choices=("cough", "covid"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", type=Path, default=Path(os.environ.get("EDGEKD_DATA", "../shared/data")))
    p.add_argument("--student")
    p.add_argument("--epochs", type=int)
    p.add_argument("--minutes", type=float, default=10.0, help="no new epoch starts after this")
    p.add_argument("--target", choices=("covid", "source"), default="covid", help="covid: what to predict")
    p.add_argument("--export", type=Path)
    p.add_argument("--score", nargs="+", type=Path, metavar="ONNX",
                   help="train nothing: measure these ONNX files on the task's windows (figures, size, MACs, latency)")
    a = p.parse_args(argv)
    for folder in (["covid19-cough", "noise"] + (["ravdess", "tess"] if a.task == "cough" else [])):
        if not (a.data / folder).is_dir():
            p.error(f"no {a.data / folder}: pass --data (the folder holding {folder}/)")
    a.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(a.out / "run.log")])
    import torch

    from train.recipe import load_recipe

    torch.set_num_threads(int(os.environ.get("EDGEKD_THREADS", "1")))
    recipe = load_recipe(a.task)
    if a.score:
        d = cough_data(a.data, recipe) if a.task == "cough" else covid_data(a.data, recipe, a.target)
        rows = {path.stem: onnx_row(path, d, recipe) for path in a.score}
        (a.out / "table.md").write_text(table_md(a.task, rows))
        print(table_md(a.task, rows))
        (a.out / "summary.json").write_text(json.dumps({"task": a.task, "scored": rows}, indent=1, default=float))
        return rows
    summary = run_cough(a, recipe) if a.task == "cough" else run_covid(a, recipe)
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    log.info("summary: %s", json.dumps(summary.get("figures"), default=float)[:2000])
    return summary


if __name__ == "__main__":
    main()
