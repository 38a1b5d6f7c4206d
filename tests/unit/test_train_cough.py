"""Cough/COVID run pieces: the loudest window, band-limiting, the validation threshold, the figures."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd_train.recipe import load_recipe
from edgekd_train.binary_figures import binary_figures, youden_threshold
from edgekd_train.data.loudest import bandlimit, loudest_window


def test_loudest_window_finds_the_cough_and_pads_short_clips():
    x = np.zeros(48000, np.float32)
    x[30000:32000] = 1.0
    w = loudest_window(x, 8000)
    assert len(w) == 8000 and w.sum() == pytest.approx(2000.0)
    short = loudest_window(np.ones(100, np.float32), 1000)
    assert len(short) == 1000 and short.sum() == 100 and short[450] == 1.0


def test_bandlimit_removes_everything_above_4khz_and_keeps_speech_band():
    rate = 16000
    t = np.arange(rate) / rate
    x = np.stack([np.sin(2 * np.pi * 1000 * t), np.sin(2 * np.pi * 6000 * t)]).astype(np.float32)
    y = bandlimit(x, rate)
    assert y.shape == x.shape
    assert np.sqrt(np.mean(y[0, 1000:-1000] ** 2)) == pytest.approx(np.sqrt(0.5), rel=0.05)
    assert np.sqrt(np.mean(y[1, 1000:-1000] ** 2)) < 0.01


def test_threshold_is_chosen_for_youden_and_figures_follow_it():
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    pos = np.array([False, False, True, False, True, True])
    t = youden_threshold(scores, pos)
    assert t == pytest.approx(0.7) or t == pytest.approx(0.3)  # both give J = 2/3
    f = binary_figures(scores, pos, 0.65)
    assert (f["tp"], f["fp"], f["fn"], f["tn"]) == (2, 0, 1, 3)
    assert f["sensitivity"] == pytest.approx(2 / 3) and f["specificity"] == 1.0 and f["precision"] == 1.0
    assert f["f1"] == pytest.approx(0.8) and f["roc_auc"] == pytest.approx(8 / 9)


def test_covid_model_runs_in_the_telephone_band():
    r = load_recipe("covid")
    assert r.task.labels == ("negative", "positive") and r.task.sample_rate == 8000
    assert load_recipe("cough").task.labels == ("cough", "speech", "other")
