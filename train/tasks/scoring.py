"""ONNX files measured on a cough or covid task's windows the way the device runs them: the task's
figures, size, MACs and latency, and the markdown table of them (`--score`, `edgekd_train.run_reduced`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgekd_train.data.loudest import TaskData
from edgekd_train.tasks import TaskOptionsError


def score(paths: Sequence[Path], d: TaskData, recipe, out: Path) -> dict[str, Any]:
    """Rows of `paths` (by file stem); writes OUT/table.md and OUT/summary.json."""
    rows = {path.stem: onnx_row(path, d, recipe) for path in paths}
    table = table_md(recipe.task.name, rows)
    (out / "table.md").write_text(table)
    print(table)
    (out / "summary.json").write_text(json.dumps({"task": recipe.task.name, "scored": rows}, indent=1, default=float))
    return rows


def task_figures(logits_fn: Callable[[np.ndarray], np.ndarray], d: TaskData, recipe) -> dict[str, Any]:
    """`cough_figures` or `covid_figures` by the recipe's task, as plain data."""
    from edgekd_train.tasks.cough import cough_figures
    from edgekd_train.tasks.covid import covid_figures

    if recipe.task.name == "cough":
        out = cough_figures(logits_fn, d, recipe)
        out.pop("evals")
        return out
    return covid_figures(logits_fn, d, recipe)


def onnx_row(path: Path, d: TaskData, recipe) -> dict[str, Any]:
    """An ONNX file measured the way the device runs it (`edgekd.model.Model`) on the task's windows:
    its figures, size, MACs and one-thread latency."""
    from edgekd.model import Model
    from edgekd_train.onnx_eval import measure_onnx

    model = Model(path)
    window = recipe.task.window_samples
    if model.meta.sample_rate != recipe.task.sample_rate or model.meta.window_samples != window:
        raise TaskOptionsError(f"{path}: its window ({model.meta.window_samples} samples at {model.meta.sample_rate} Hz) "
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
