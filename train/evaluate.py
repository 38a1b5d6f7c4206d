"""Classification figures from logits: accuracy, macro P/R/F1, per class, confusion matrix.

Binary tasks also get ROC-AUC, sensitivity and specificity (the positive class is the second
label unless named). `write_report` writes `report.json`, `report.md` and `confusion.png`/`.json`.

Needs numpy and matplotlib only (no torch), so reports can be made anywhere.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)


class EvaluationError(ValueError):
    """Logits, labels and label names do not fit together."""


@dataclass(frozen=True)
class ClassFigures:
    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Evaluation:
    labels: tuple[str, ...]
    n: int
    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    per_class: tuple[ClassFigures, ...]
    confusion: tuple[tuple[int, ...], ...]  # rows: true label, columns: predicted
    binary: dict[str, float] = field(default_factory=dict)  # roc_auc, sensitivity, specificity

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = list(self.labels)
        d["per_class"] = [asdict(c) for c in self.per_class]
        d["confusion"] = [list(r) for r in self.confusion]
        return d

    def summary(self) -> dict[str, float]:
        out = {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "n": self.n}
        out.update(self.binary)
        return out


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve by the rank statistic (ties count half). NaN if one class is absent."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc_interval(scores: np.ndarray, positive: np.ndarray, level: float = 0.95, resamples: int = 2000,
                     seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the ROC-AUC; positives and negatives are resampled apart
    (stratified), so every resample has both. NaNs if one class is absent."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]
    aucs = [roc_auc(np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))], labels) for _ in range(resamples)]
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(aucs, [tail, 100 - tail])
    return float(lo), float(hi)


def evaluate(
    logits: np.ndarray, y: Sequence[int] | np.ndarray, labels: Sequence[str], positive: str | None = None
) -> Evaluation:
    """Figures for single-label logits `[n, n_labels]` against integer labels `y`."""
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    labels = tuple(labels)
    k = len(labels)
    if logits.ndim != 2 or logits.shape[1] != k:
        raise EvaluationError(f"logits have shape {logits.shape}; expected [n, {k}] for labels {list(labels)}")
    if len(y) != len(logits):
        raise EvaluationError(f"{len(logits)} logits but {len(y)} labels")
    if len(y) == 0:
        raise EvaluationError("nothing to evaluate: no examples")
    if y.min() < 0 or y.max() >= k:
        raise EvaluationError(f"labels must be in 0..{k - 1}, found {int(y.min())}..{int(y.max())}")
    pred = logits.argmax(axis=1)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    present = support > 0  # macro averages over the classes that occur
    per_class = tuple(
        ClassFigures(labels[i], float(precision[i]), float(recall[i]), float(f1[i]), int(support[i])) for i in range(k)
    )
    binary: dict[str, float] = {}
    if k == 2:
        pos = labels.index(positive) if positive is not None else 1
        neg = 1 - pos
        p_scores = _softmax(logits)[:, pos]
        tp_b, fn_b = cm[pos, pos], cm[pos, neg]
        tn_b, fp_b = cm[neg, neg], cm[neg, pos]
        binary = {
            "roc_auc": roc_auc(p_scores, y == pos),
            "sensitivity": float(tp_b / (tp_b + fn_b)) if tp_b + fn_b else float("nan"),
            "specificity": float(tn_b / (tn_b + fp_b)) if tn_b + fp_b else float("nan"),
        }
    return Evaluation(
        labels=labels,
        n=int(len(y)),
        accuracy=float(tp.sum() / len(y)),
        macro_precision=float(precision[present].mean()),
        macro_recall=float(recall[present].mean()),
        macro_f1=float(f1[present].mean()),
        per_class=per_class,
        confusion=tuple(tuple(int(v) for v in row) for row in cm),
        binary=binary,
    )


def plot_confusion(ev: Evaluation, path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix with counts, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(ev.confusion, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(ev.labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * k, 0.8 + 0.7 * k))
    im = ax.imshow(frac, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(k), ev.labels, rotation=45, ha="right")
    ax.set_yticks(range(k), ev.labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if frac[i, j] > 0.5 else "black")
    ax.set_title(title or f"accuracy {ev.accuracy:.1%} (n={ev.n})", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown(ev: Evaluation, title: str, extra: dict[str, Any] | None = None) -> str:
    lines = [f"# {title}", "", f"- examples: {ev.n}", f"- accuracy: {ev.accuracy:.2%}",
             f"- macro precision / recall / F1: {ev.macro_precision:.3f} / {ev.macro_recall:.3f} / {ev.macro_f1:.3f}"]
    for key, value in ev.binary.items():
        lines.append(f"- {key}: {value:.3f}")
    for key, value in (extra or {}).items():
        lines.append(f"- {key}: {value}")
    lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    lines += [f"| {c.label} | {c.precision:.3f} | {c.recall:.3f} | {c.f1:.3f} | {c.support} |" for c in ev.per_class]
    lines += ["", "Confusion matrix (rows: true, columns: predicted):", "",
              "| | " + " | ".join(ev.labels) + " |", "|---" * (len(ev.labels) + 1) + "|"]
    lines += [f"| {ev.labels[i]} | " + " | ".join(str(v) for v in row) + " |" for i, row in enumerate(ev.confusion)]
    return "\n".join(lines) + "\n"


def write_report(
    out_dir: str | Path, evaluations: dict[str, Evaluation], title: str, extra: dict[str, Any] | None = None
) -> Path:
    """One report for several evaluations (e.g. per test subset): JSON, Markdown, confusion PNGs.

    Files: `report.json`, `report.md`, and `confusion-<name>.png` / `.json` for each evaluation.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"title": title, "extra": extra or {}, "evaluations": {}}
    parts = [f"# {title}", ""]
    for key, value in (extra or {}).items():
        parts.append(f"- {key}: {value}")
    for name, ev in evaluations.items():
        payload["evaluations"][name] = ev.to_dict()
        (out / f"confusion-{name}.json").write_text(
            json.dumps({"labels": list(ev.labels), "confusion": [list(r) for r in ev.confusion]}, indent=1)
        )
        plot_confusion(ev, out / f"confusion-{name}.png", f"{title}: {name}, accuracy {ev.accuracy:.1%} (n={ev.n})")
        parts += ["", markdown(ev, name).replace("# ", "## ", 1), f"![confusion {name}](confusion-{name}.png)"]
    (out / "report.json").write_text(json.dumps(payload, indent=1, sort_keys=True, default=float))
    (out / "report.md").write_text("\n".join(parts) + "\n")
    log.info("report written to %s", out)
    return out
