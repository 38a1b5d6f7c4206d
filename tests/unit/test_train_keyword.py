"""Keyword run pieces: the noisy long-clip protocol and the recipe's labels."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd_train.recipe import load_recipe
from edgekd_train.tasks.keyword import long_clips


def test_recipe_labels_are_exactly_the_twelve_speech_commands_classes():
    r = load_recipe("keyword")
    assert r.task.labels == ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "_unknown_",
                             "_silence_")  # fmt: skip
    assert r.task.window_samples == 16000


@pytest.mark.parametrize("seconds", [2.0, 4.0, 8.0])
def test_long_clip_holds_the_keyword_at_its_onset_in_noise_at_the_snr(seconds):
    rate = 16000
    rng = np.random.default_rng(0)
    word = np.zeros((3, rate), np.float32)
    word[:, 4000:12000] = 0.5 * np.sin(np.arange(8000) * 0.2)
    noise = rng.standard_normal(20 * rate).astype(np.float32)
    clips, onsets = long_clips(word, noise, seconds, rate, seed=1, snr_db=10.0)
    assert clips.shape == (3, int(seconds * rate))
    for clip, onset, w in zip(clips, onsets, word):
        at = int(round(onset * rate))
        assert 0 <= at <= len(clip) - rate
        bg = np.delete(clip, np.s_[at : at + rate])
        if len(bg):  # the noise around the word is 10 dB below the word's own level
            level = 20 * np.log10(np.sqrt(np.mean(w.astype(np.float64) ** 2)) / np.sqrt(np.mean(bg.astype(np.float64) ** 2)))
            assert level == pytest.approx(10.0, abs=1.0)
        inside = clip[at : at + rate]
        assert np.corrcoef(inside, w)[0, 1] > 0.9  # the word is there, on top of weaker noise
    again, _ = long_clips(word, noise, seconds, rate, seed=1, snr_db=10.0)
    assert np.array_equal(clips, again)  # reproducible from the seed
