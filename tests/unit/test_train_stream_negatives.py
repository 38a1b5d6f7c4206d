"""Training windows for stream detectors: background draws, partial events, mined false alarms."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekd_train.data.clips import Clip
from edgekd_train.streams.build import active_span
from edgekd_train.streams.negatives import PARTIAL_MAX, BackgroundPool, background_windows, mined_windows, partial_windows

RATE = 16000


def burst(seconds: float, pad_s: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pad = np.zeros(int(pad_s * RATE), np.float32)
    return np.concatenate([pad, (0.3 * rng.standard_normal(int(seconds * RATE))).astype(np.float32), pad])


def test_partial_windows_hold_only_an_edge_of_the_event():
    events = [burst(0.5, 0.25, seed=i) for i in range(20)]
    wins = partial_windows(events, RATE, RATE, seed=0, per_event=3)
    assert wins.shape == (60, RATE)
    for w in wins:
        a, b = active_span(w, RATE)
        assert 0 < b - a <= PARTIAL_MAX * 0.5 * RATE + 0.01 * RATE


def test_background_windows_follow_the_pool_labels_and_levels(tmp_path: Path):
    clips = {"speech": [Clip(tmp_path / f"s{i}.wav", "speech", f"g{i}", "t") for i in range(3)]}
    audio = {c.path: burst(2.0, 0.1, seed=i) for i, c in enumerate(clips["speech"])}
    pool = BackgroundPool(clips=clips, labels={"speech": "_unknown_", "noise": "_silence_"},
                          noise=[burst(10.0, 0.0, seed=9)], weights={"speech": 0.7, "noise": 0.3})
    x, labels = background_windows(pool, 200, RATE, seed=1, decode=lambda p: audio[p])
    assert x.shape == (200, RATE) and set(labels) == {"_unknown_", "_silence_"}
    assert 0.55 < labels.count("_unknown_") / 200 < 0.85
    rms_db = 10 * np.log10(np.mean(x.astype(np.float64) ** 2, axis=1))
    assert rms_db.min() > -41 and rms_db.max() < -11
    again, _ = background_windows(pool, 200, RATE, seed=1, decode=lambda p: audio[p])
    assert np.array_equal(x, again)


def test_mined_windows_end_where_the_false_alarms_were():
    audio = np.arange(10 * RATE, dtype=np.float32)
    w = mined_windows(audio, RATE, [2.0, 0.5, 9.5], RATE)
    assert w.shape == (2, RATE)  # 0.5 s has no full window before it
    assert w[0][-1] == 2 * RATE - 1 and w[1][-1] == 9.5 * RATE - 1


def test_speed_perturbation_moves_the_pitch_and_length_of_speech_only():
    from edgekd_train.streams.negatives import speed_perturb

    t = np.arange(RATE) / RATE
    tone = (0.5 * np.sin(2 * np.pi * 200.0 * t)).astype(np.float32)
    fast = speed_perturb(tone, 1.25)
    assert abs(len(fast) - RATE / 1.25) <= 2
    peak = np.argmax(np.abs(np.fft.rfft(fast * np.hanning(len(fast))))) * RATE / len(fast)
    assert abs(peak - 250.0) < 3.0  # 200 Hz played 1.25 times faster
    assert speed_perturb(tone, 1.0) is tone


def test_a_pool_with_speed_perturbation_changes_its_speech_windows_reproducibly(tmp_path: Path):
    clips = {"speech": [Clip(tmp_path / "s.wav", "speech", "g", "t")]}
    t = np.arange(3 * RATE) / RATE
    audio = {clips["speech"][0].path: (0.3 * np.sin(2 * np.pi * 300.0 * t)).astype(np.float32)}
    plain = BackgroundPool(clips=clips, labels={"speech": "_unknown_"}, noise=[], weights={"speech": 1.0})
    sped = BackgroundPool(clips=clips, labels={"speech": "_unknown_"}, noise=[], weights={"speech": 1.0},
                          speed=(0.8, 1.2))
    x, _ = background_windows(plain, 20, RATE, seed=3, decode=lambda p: audio[p])
    y, _ = background_windows(sped, 20, RATE, seed=3, decode=lambda p: audio[p])
    y2, _ = background_windows(sped, 20, RATE, seed=3, decode=lambda p: audio[p])
    assert np.array_equal(y, y2) and not np.allclose(x, y)
    freqs = [np.argmax(np.abs(np.fft.rfft(w))) for w in y]  # 1 Hz bins over a 1 s window
    assert 240 <= min(freqs) and max(freqs) <= 360 and len(set(freqs)) > 5
