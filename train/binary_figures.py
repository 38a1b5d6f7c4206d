"""Figures of a two-class screen: a threshold chosen on validation (Youden's J), then ROC-AUC with its
bootstrap interval, sensitivity, specificity, precision, recall, F1 at that threshold."""

from __future__ import annotations

import numpy as np


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
    from edgekd_train.evaluate import roc_auc, roc_auc_interval

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


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
