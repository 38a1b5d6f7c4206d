"""The loaders on the real corpora in ../shared/data: counts, splits, broken stubs."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd_train.data.audio import AudioDecodeError, load_audio
from edgekd_train.data.augment import Augment
from edgekd_train.data.clips import label_counts
from edgekd_train.data.corpora import EMOTIONS, load_corpus
from edgekd_train.data.split import group_split

pytestmark = [pytest.mark.data, pytest.mark.train]


def test_tess_counts_and_word_disjoint_split(data_dir):
    clips = load_corpus("tess", data_dir / "tess")
    counts = label_counts(clips)
    assert set(counts) == set(EMOTIONS)
    # 163 words x 2 speakers per emotion, less the missing YAF_beg_sad.
    assert counts == {**{e: 326 for e in EMOTIONS}, "sad": 325}
    assert len({c.group for c in clips}) == 163
    assert all(c.meta["speaker"] in ("OAF", "YAF") for c in clips)
    split = group_split(clips, val=0.1, test=0.2, seed=0)
    assert not split.leaks()
    assert {c.meta["word"] for c in split.test}.isdisjoint({c.meta["word"] for c in split.train})
    assert 0.15 < len(split.test) / len(clips) < 0.25


def test_ravdess_counts_and_actor_disjoint_split(data_dir):
    clips = load_corpus("ravdess", data_dir / "ravdess")  # calm dropped
    counts = label_counts(clips)
    assert set(counts) == set(EMOTIONS)
    assert len(clips) == 18 * 52 and counts["neutral"] == 18 * 4 and counts["angry"] == 18 * 8
    assert len(load_corpus("ravdess", data_dir / "ravdess", calm="neutral")) == 18 * 60
    split = group_split(clips, val=0.1, test=0.2, seed=0)
    assert not split.leaks() and len({c.group for c in split.test}) >= 3


def test_covid19_cough_counts_and_its_two_broken_stubs(data_dir):
    clips = load_corpus("covid19_cough", data_dir / "covid19-cough")
    assert len(clips) == 1061 and label_counts(clips) == {"negative": 524, "positive": 537}
    stubs = [c for c in clips if c.path.stat().st_size == 261]
    assert len(stubs) == 2
    for c in stubs:
        with pytest.raises(AudioDecodeError, match=c.path.name):
            load_audio(c.path)
    good = next(c for c in clips if c.meta["source"] == "call-center" and c.path.stat().st_size > 10_000)
    assert len(load_audio(good.path)) > 16_000 * 0.5


def test_speech_commands_counts_and_speaker_disjoint_split(data_dir):
    clips = load_corpus("speech_commands", data_dir / "speech_commands")
    counts = label_counts(clips)
    assert len(counts) == 12 and len(clips) == 3463 and min(counts.values()) > 250
    assert all("_nohash_" not in c.group for c in clips)
    split = group_split(clips, val=0.1, test=0.2, seed=0)
    assert not split.leaks()
    speakers = [{c.meta["speaker"] for c in part if c.meta["speaker"]} for part in split.parts().values()]
    assert speakers[0].isdisjoint(speakers[1]) and speakers[0].isdisjoint(speakers[2])
    x = load_audio(clips[0].path)
    assert x.dtype == np.float32 and 15_000 < len(x) <= 16_000


def test_noise_folder_feeds_augmentation(data_dir):
    aug = Augment(data_dir / "noise", p_noise=1.0, seed=0)
    assert len(aug.noises) == 6
    y = aug(np.zeros(16_000, np.float32))
    assert 0 < np.abs(y).max() <= 1.0


@pytest.mark.slow
def test_packing_real_speech_keeps_it_and_shrinks_it(data_dir, tmp_path):
    from edgekd_train.data.pack import pack_corpus, verify_packed

    clips = load_corpus("tess", data_dir / "tess")[::200] + load_corpus("ravdess", data_dir / "ravdess")[::100]
    report = pack_corpus(clips, tmp_path / "packed")
    assert report.clips == len(clips) and not report.skipped
    flac_bytes = sum(c.path.stat().st_size for c in clips)
    assert report.bytes < flac_bytes / 2.5  # Opus at ~40 kbit/s against 16-bit FLAC (measured: 2.9x)
    assert report.seconds_after < report.seconds_before
    snrs = verify_packed(tmp_path / "packed", n=len(clips))
    assert min(snrs) > 15.0 and float(np.median(snrs)) > 20.0
    back = load_corpus("packed", tmp_path / "packed")
    assert [(c.label, c.group) for c in back] == [(c.label, c.group) for c in clips]
