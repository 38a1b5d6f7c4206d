"""Cropping, augmentation, and the dataset that skips and counts broken files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgekd_train.data.audio import fit_length
from edgekd_train.data.augment import Augment, mix_at_snr, rms
from edgekd_train.data.clips import Clip

pytestmark = pytest.mark.train
RATE = 16_000


def test_fit_length_modes():
    x = np.arange(10, dtype=np.float32)
    assert fit_length(x, 4, "start").tolist() == [0, 1, 2, 3]
    assert fit_length(x, 4, "center").tolist() == [3, 4, 5, 6]
    assert fit_length(x[:2], 4, "center").tolist() == [0, 0, 1, 0]
    rng = np.random.default_rng(0)
    crops = {tuple(fit_length(x, 4, "random", rng)) for _ in range(50)}
    assert len(crops) > 3 and all(list(c) == list(range(int(c[0]), int(c[0]) + 4)) for c in crops)
    with pytest.raises(ValueError, match="crop mode"):
        fit_length(x, 4, "middle")


def test_mix_at_snr_hits_the_snr():
    rng = np.random.default_rng(0)
    s = rng.standard_normal(RATE).astype(np.float32) * 0.1
    n = rng.standard_normal(RATE).astype(np.float32)
    for snr in (0.0, 10.0, 20.0):
        mixed = mix_at_snr(s, n, snr)
        assert 20 * np.log10(rms(s) / rms(mixed - s)) == pytest.approx(snr, abs=1e-3)


def noise_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "noise"
    folder.mkdir(parents=True)
    sf.write(str(folder / "hiss.flac"), np.random.default_rng(1).uniform(-0.5, 0.5, 2 * RATE).astype(np.float32), RATE)
    return folder


def test_augment_is_seeded_and_changes_the_window(tmp_path):
    x = np.sin(np.arange(RATE) / 10).astype(np.float32) * 0.3
    a = Augment(noise_folder(tmp_path), p_noise=1.0, seed=5)
    b = Augment(noise_folder(tmp_path / "b"), p_noise=1.0, seed=5)
    ya, yb = a(x), b(x)
    assert ya.shape == x.shape and ya.dtype == np.float32
    np.testing.assert_array_equal(ya, yb)
    assert not np.allclose(ya, x) and np.abs(ya).max() <= 1.0
    plain = Augment(None, gain_db=(0, 0), shift_s=0.0, seed=0)
    np.testing.assert_array_equal(plain(x), x)
    with pytest.raises(FileNotFoundError, match="noise folder"):
        Augment(tmp_path / "nothing")


def test_dataset_skips_and_counts_broken_files(tmp_path, caplog):
    pytest.importorskip("torch")
    from edgekd_train.data.dataset import ClipDataset

    clips = []
    for i, label in enumerate(["yes", "no", "yes"]):
        path = tmp_path / f"{i}.wav"
        sf.write(str(path), np.full(RATE // 2 + i * 100, 0.1 * (i + 1), np.float32), RATE)
        clips.append(Clip(path, label, str(i), "fake"))
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"ID3\x04" + bytes(257))
    clips.insert(1, Clip(bad, "no", "bad", "fake"))
    clips.append(Clip(tmp_path / "absent.wav", "yes", "absent", "fake"))
    ds = ClipDataset(clips, ["no", "yes"], RATE, window_samples=RATE)
    assert len(ds) == 3 and ds.skipped == 2
    assert [c.path.name for c in ds.skipped_clips] == ["bad.mp3", "absent.wav"]
    assert sum("bad.mp3" in r.message for r in caplog.records) == 1
    x, y = ds[1]
    assert tuple(x.shape) == (RATE,) and y == 0 and float(x.max()) == pytest.approx(0.2, abs=1e-4)
    waves = ds.waveforms()
    assert waves.shape == (3, RATE) and waves.dtype == np.float32
    with pytest.raises(ValueError, match="maybe"):
        ClipDataset([Clip(bad, "maybe", "g", "fake")], ["no", "yes"])
