"""Evaluation figures checked against hand-computed values, and the written report."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from edgekd_train.evaluate import EvaluationError, evaluate, roc_auc, write_report  # noqa: E402

pytestmark = pytest.mark.train

LABELS = ("a", "b", "c")


def onehot(pred, k=3):
    z = np.full((len(pred), k), -5.0)
    z[np.arange(len(pred)), pred] = 5.0
    return z


def test_multiclass_figures_match_hand_computation():
    y = [0, 0, 0, 1, 1, 2]
    pred = [0, 0, 1, 1, 2, 2]
    ev = evaluate(onehot(pred), y, LABELS)
    assert ev.accuracy == pytest.approx(4 / 6)
    assert ev.confusion == ((2, 1, 0), (0, 1, 1), (0, 0, 1))
    a, b, c = ev.per_class
    assert (a.precision, a.recall, a.support) == (1.0, pytest.approx(2 / 3), 3)
    assert (b.precision, b.recall) == (0.5, 0.5)
    assert (c.precision, c.recall) == (0.5, 1.0)
    assert a.f1 == pytest.approx(0.8)
    assert ev.macro_precision == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert ev.macro_f1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert ev.binary == {}


def test_binary_gets_auc_sensitivity_specificity():
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    p_pos = np.array([0.1, 0.4, 0.6, 0.3, 0.7, 0.8, 0.9])
    logits = np.stack([np.zeros(7), np.log(p_pos / (1 - p_pos))], axis=1)
    ev = evaluate(logits, y, ("neg", "pos"))
    # predicted positive when p > 0.5: tp=3 fn=1 tn=2 fp=1
    assert ev.binary["sensitivity"] == pytest.approx(3 / 4)
    assert ev.binary["specificity"] == pytest.approx(2 / 3)
    # pairs (pos, neg) ordered correctly: 0.3 beats 0.1 only -> 1 of 3; others 3 of 3 each
    assert ev.binary["roc_auc"] == pytest.approx((1 + 3 + 3 + 3) / 12)


def test_auc_ties_and_missing_class():
    assert roc_auc(np.array([0.5, 0.5]), np.array([True, False])) == 0.5
    assert np.isnan(roc_auc(np.array([0.1, 0.2]), np.array([True, True])))


def test_mismatched_inputs_are_named():
    with pytest.raises(EvaluationError, match=r"expected \[n, 3\]"):
        evaluate(np.zeros((2, 2)), [0, 1], LABELS)
    with pytest.raises(EvaluationError, match="labels must be in 0..2"):
        evaluate(np.zeros((2, 3)), [0, 3], LABELS)


def test_report_files(tmp_path):
    ev = evaluate(onehot([0, 1, 2, 2]), [0, 1, 2, 1], LABELS)
    out = write_report(tmp_path / "rep", {"test": ev}, "demo", {"model": "x"})
    data = json.loads((out / "report.json").read_text())
    assert data["evaluations"]["test"]["accuracy"] == pytest.approx(0.75)
    assert json.loads((out / "confusion-test.json").read_text())["confusion"] == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    png = (out / "confusion-test.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    md = (out / "report.md").read_text()
    assert "75.00%" in md and "| b | 1.000 | 0.500 |" in md


@pytest.mark.slow
def test_roc_auc_interval_brackets_the_auc_and_narrows_with_more_clips():
    from edgekd_train.evaluate import roc_auc, roc_auc_interval

    rng = np.random.default_rng(0)

    def sample(n):
        pos = np.r_[np.ones(n, bool), np.zeros(n, bool)]
        return rng.normal(0.0, 1.0, 2 * n) + pos * 0.8, pos  # a true AUC of about 0.71

    small, big = sample(40), sample(400)
    lo_s, hi_s = roc_auc_interval(*small)
    lo_b, hi_b = roc_auc_interval(*big)
    assert lo_s < roc_auc(*small) < hi_s and lo_b < roc_auc(*big) < hi_b
    assert hi_b - lo_b < (hi_s - lo_s) / 2
    assert lo_b < 0.71 < hi_b
    assert np.isnan(roc_auc_interval(np.array([0.2, 0.4]), np.array([True, True]))).all()
