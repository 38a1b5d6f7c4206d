"""Packing a clip list for the GPU machine, and reading it back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from edgekd_train.data.audio import load_audio
from edgekd_train.data.clips import Clip
from edgekd_train.data.corpora import CorpusError, load_corpus
from edgekd_train.data.pack import pack_corpus, snr_db, verify_packed
from edgekd_train.data.trim import speech_span

pytestmark = pytest.mark.train
RATE = 16_000


def voiced(seconds: float, seed: int) -> np.ndarray:
    """A harmonic, speech-like burst (decays and wobbles), not a pure tone."""
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 140 + 30 * np.sin(2 * np.pi * 3 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 8))
    return (0.3 * x * np.hanning(len(t))).astype(np.float32)


def test_pack_trims_encodes_and_reads_back(tmp_path):
    clips = []
    for i, (corpus, label, group) in enumerate([("tess", "angry", "back"), ("tess", "sad", "bar"), ("ravdess", "fear", "actor01")]):
        x = np.concatenate([np.zeros(RATE, np.float32), voiced(1.0, i), np.zeros(RATE // 2, np.float32)])
        path = tmp_path / "src" / corpus / f"spk{i}" / f"clip{i}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), x, RATE)
        clips.append(Clip(path, label, group, corpus, {"speaker": f"spk{i}"}))
    stub = tmp_path / "src" / "ravdess" / "stub.mp3"
    stub.write_bytes(b"ID3\x04" + bytes(257))
    clips.append(Clip(stub, "fear", "actor02", "ravdess"))

    report = pack_corpus(clips, tmp_path / "packed")
    assert report.clips == 3 and [s["original"] for s in report.skipped] == [str(stub)]
    assert report.seconds_after < report.seconds_before - 3 * 1.2  # most of the 1.5 s of silence went
    assert report.labels == {"ravdess": {"fear": 1}, "tess": {"angry": 1, "sad": 1}}

    back = load_corpus("packed", tmp_path / "packed")
    assert [(c.label, c.group, c.corpus, c.meta["speaker"]) for c in back] == [
        (c.label, c.group, c.corpus, c.meta["speaker"]) for c in clips[:3]
    ]
    assert all(c.path.suffix == ".ogg" and c.path.is_file() for c in back)
    assert [c.meta["original"] for c in back] == [str(c.path) for c in clips[:3]]
    assert len(load_corpus("packed", tmp_path / "packed", corpus="tess")) == 2

    info = sf.info(str(back[0].path))
    assert info.format == "OGG" and info.subtype == "OPUS" and info.samplerate == RATE
    start, end = back[0].meta["span"]
    assert 0.8 * RATE < start < RATE and 2.0 * RATE < end < 2.2 * RATE
    decoded = load_audio(back[0].path)
    assert abs(len(decoded) - (end - start)) < 0.01 * RATE
    assert min(verify_packed(tmp_path / "packed", n=3)) > 15.0

    with pytest.raises(CorpusError, match="cremad"):
        load_corpus("packed", tmp_path / "packed", corpus="cremad")


def test_manifest_of_another_version_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "edgekd-packed", "version": 99, "clips": []}))
    with pytest.raises(CorpusError, match="re-pack"):
        load_corpus("packed", tmp_path)


def test_speech_span_and_snr():
    x = np.concatenate([np.zeros(RATE), voiced(0.5, 0), np.zeros(RATE)]).astype(np.float32)
    start, end = speech_span(x, RATE, floor_db=40, margin_s=0.1)
    assert RATE - 0.1 * RATE - 320 <= start <= RATE and 1.5 * RATE <= end <= 1.6 * RATE + 320
    assert snr_db(x, x * 0.9) == pytest.approx(20.0, abs=1e-4)


def test_pack_without_trim_keeps_each_clip_whole(tmp_path):
    x = np.concatenate([np.zeros(RATE // 2, np.float32), voiced(1.0, 0), np.zeros(RATE // 2, np.float32)])
    path = tmp_path / "src" / "tess" / "clip.flac"
    path.parent.mkdir(parents=True)
    sf.write(str(path), x, RATE)
    report = pack_corpus([Clip(path, "angry", "back", "tess")], tmp_path / "packed", trim=False)
    assert report.seconds_after == report.seconds_before == pytest.approx(2.0)
    (back,) = load_corpus("packed", tmp_path / "packed")
    assert back.meta["span"] == [0, len(x)]
    assert abs(len(load_audio(back.path)) - len(x)) < 0.01 * RATE
    assert json.loads((tmp_path / "packed" / "manifest.json").read_text())["trim"] is None
