"""Corpus loaders on tiny fixtures of each layout, made here in temp folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgekd_train.data.audio import AudioDecodeError, load_audio
from edgekd_train.data.corpora import EMOTIONS, CorpusError, load_corpus

pytestmark = pytest.mark.train

RATE = 16_000
# A 261-byte MP3 that holds an ID3 tag and no audio frame, like the two stubs in covid19-cough.
BROKEN_MP3 = b"ID3\x04\x00\x00\x00\x00\x00#TSSE" + bytes(261 - 13)


def tone(path: Path, seconds: float = 0.2, rate: int = RATE, freq: float = 440.0, channels: int = 1) -> Path:
    """Write a short real audio file in the format its suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".mp3": "MP3"}[path.suffix.lower()]
    sf.write(str(path), data, rate, format=fmt)
    return path


def test_audio_decodes_every_format_to_mono_at_the_rate(tmp_path):
    for name, rate, channels in [("a.wav", 8000, 1), ("b.flac", 44100, 2), ("c.ogg", 48000, 1), ("d.mp3", 16000, 2)]:
        x = load_audio(tone(tmp_path / name, seconds=0.5, rate=rate, channels=channels), RATE)
        assert x.dtype == np.float32 and x.ndim == 1
        assert abs(len(x) - RATE // 2) < 1200, name  # mp3 adds encoder delay/padding
        assert 0.15 < np.abs(x).max() < 0.4, name


def test_audio_names_the_broken_file(tmp_path):
    bad = tmp_path / "stub.mp3"
    bad.write_bytes(BROKEN_MP3)
    with pytest.raises(AudioDecodeError, match="stub.mp3"):
        load_audio(bad)
    with pytest.raises(AudioDecodeError, match="no such file"):
        load_audio(tmp_path / "absent.wav")


def test_tess_maps_ps_to_surprise_and_groups_by_word(tmp_path):
    for speaker in ("OAF", "YAF"):
        for emo in ("angry", "disgust", "fear", "happy", "neutral", "ps", "sad"):
            for word in ("back", "bar"):
                tone(tmp_path / f"{speaker}_{emo}" / f"{speaker}_{word}_{emo}.flac")
    tone(tmp_path / "OAF_Pleasant_surprise" / "OAF_read_Pleasant_surprised.wav")  # the Kaggle copy's spelling
    tone(tmp_path / "OAF_angry" / "notes.wav")  # not a TESS name: skipped
    clips = load_corpus("tess", tmp_path)
    assert len(clips) == 29
    assert [c.label for c in clips if c.group == "read"] == ["surprise"]
    assert {c.label for c in clips} == set(EMOTIONS)
    assert {c.group for c in clips} == {"back", "bar", "read"}
    assert {c.meta["speaker"] for c in clips} == {"OAF", "YAF"}


def test_ravdess_drops_or_merges_calm_and_groups_by_actor(tmp_path):
    for actor in (1, 2):
        for emo in range(1, 9):
            tone(tmp_path / f"Actor_{actor:02d}" / f"03-01-{emo:02d}-01-01-01-{actor:02d}.wav")
        tone(tmp_path / f"Actor_{actor:02d}" / f"03-02-03-01-01-01-{actor:02d}.wav")  # song: left out
    dropped = load_corpus("ravdess", tmp_path)
    assert len(dropped) == 14 and "calm" not in {c.label for c in dropped}
    assert {c.label for c in dropped} == set(EMOTIONS)
    assert {c.group for c in dropped} == {"actor01", "actor02"}
    merged = load_corpus("ravdess", tmp_path, calm="neutral")
    assert sum(c.label == "neutral" for c in merged) == 4
    assert len(load_corpus("ravdess", tmp_path, channel="all", calm="neutral")) == 18
    with pytest.raises(ValueError, match="calm"):
        load_corpus("ravdess", tmp_path, calm="keep")


def test_cremad_labels_and_actors(tmp_path):
    for actor, emo in [("1001", "ANG"), ("1001", "SAD"), ("1002", "NEU"), ("1002", "FEA")]:
        tone(tmp_path / "AudioWAV" / f"{actor}_DFA_{emo}_XX.wav")
    clips = load_corpus("cremad", tmp_path)
    assert sorted(c.label for c in clips) == ["angry", "fear", "neutral", "sad"]
    assert {c.group for c in clips} == {"actor1001", "actor1002"}


def test_speech_commands_speakers_lists_and_unknown(tmp_path):
    for word in ("yes", "no", "bed"):
        for spk in ("aaaa1111", "bbbb2222"):
            tone(tmp_path / word / f"{spk}_nohash_0.wav")
    tone(tmp_path / "_background_noise_" / "white_noise.wav", seconds=1.0)
    tone(tmp_path / "_silence_" / "1024.ogg")
    tone(tmp_path / "_unknown_" / "backward_cccc3333_nohash_1.wav.ogg")
    (tmp_path / "testing_list.txt").write_text("yes/aaaa1111_nohash_0.wav\nno/aaaa1111_nohash_0.wav\n")
    (tmp_path / "validation_list.txt").write_text("bed/bbbb2222_nohash_0.wav\n")
    clips = load_corpus("speech_commands", tmp_path, keywords=["yes", "no"])
    by_path = {c.path.relative_to(tmp_path).as_posix(): c for c in clips}
    assert len(clips) == 8  # background noise left out
    assert by_path["bed/aaaa1111_nohash_0.wav"].label == "_unknown_"
    assert by_path["_unknown_/backward_cccc3333_nohash_1.wav.ogg"].group == "cccc3333"
    assert by_path["_silence_/1024.ogg"].group == "_silence_/1024"
    assert by_path["yes/aaaa1111_nohash_0.wav"].meta["official"] == "testing"
    assert by_path["bed/bbbb2222_nohash_0.wav"].meta["official"] == "validation"
    assert by_path["yes/bbbb2222_nohash_0.wav"].meta["official"] == "training"
    assert {c.label for c in load_corpus("speech_commands", tmp_path)} == {"yes", "no", "bed", "_silence_", "_unknown_"}


def test_covid19_cough_lists_the_broken_stub_and_labels(tmp_path):
    rows = [
        {"filename": "a.mp3", "covid19": True, "source": "call-center", "verified": True},
        {"filename": "b.mp3", "covid19": False, "source": "telegram"},
        {"filename": "stub.mp3", "covid19": False, "source": "telegram"},
        {"filename": "gone.mp3", "covid19": True, "source": "telegram"},
    ]
    (tmp_path / "metadata.json").write_text(json.dumps(rows))
    tone(tmp_path / "raw" / "a.mp3", rate=8000)
    tone(tmp_path / "raw" / "b.mp3", rate=48000)
    (tmp_path / "raw" / "stub.mp3").write_bytes(BROKEN_MP3)
    clips = load_corpus("covid19_cough", tmp_path)
    assert [(c.path.name, c.label) for c in clips] == [("a.mp3", "positive"), ("b.mp3", "negative"), ("stub.mp3", "negative")]
    assert [c.meta["source"] for c in load_corpus("covid19_cough", tmp_path, source="telegram")] == ["telegram"] * 2
    assert len(load_corpus("covid19_cough", tmp_path, verified_only=True)) == 1


def test_coughvid_thresholds_and_webm_message(tmp_path):
    (tmp_path / "metadata_compiled.csv").write_text(
        "uuid,datetime,cough_detected,age,gender,status\n"
        "u1,x,0.95,30,male,healthy\nu2,x,0.90,40,female,COVID-19\n"
        "u3,x,0.10,50,male,healthy\nu4,x,0.99,20,male,symptomatic\nu5,x,0.99,20,male,\n"
    )
    for u in ("u1", "u2", "u3", "u4", "u5"):
        tone(tmp_path / f"{u}.ogg")
    assert sorted(c.label for c in load_corpus("coughvid", tmp_path)) == ["covid-19", "healthy", "symptomatic"]
    assert sorted(c.label for c in load_corpus("coughvid", tmp_path, label_by="covid")) == ["negative", "positive"]
    webm = tmp_path / "webm"
    webm.mkdir()
    (webm / "metadata_compiled.csv").write_text("uuid,cough_detected,status\nu1,0.9,healthy\n")
    (webm / "u1.webm").write_bytes(b"\x1aE\xdf\xa3")
    with pytest.raises(CorpusError, match="ffmpeg"):
        load_corpus("coughvid", webm)


def test_coswara_binary_status(tmp_path):
    (tmp_path / "combined_data.csv").write_text("id,covid_status\np1,healthy\np2,positive_mild\np3,recovered_full\n")
    for pid in ("p1", "p2", "p3"):
        tone(tmp_path / "Extracted_data" / "20200413" / pid / "cough-heavy.wav")
        tone(tmp_path / "Extracted_data" / "20200413" / pid / "vowel-a.wav")
    clips = load_corpus("coswara", tmp_path)
    assert sorted((c.group, c.label) for c in clips) == [("p1", "negative"), ("p2", "positive")]
    assert len(load_corpus("coswara", tmp_path, binary=False, sound="vowel-a")) == 3


def test_esc50_folder_and_manifest(tmp_path):
    esc = tmp_path / "esc"
    (esc / "meta").mkdir(parents=True)
    (esc / "meta" / "esc50.csv").write_text(
        "filename,fold,target,category,esc10,src_file,take\n"
        "1-100-A-0.wav,1,0,dog,True,100,A\n1-100-B-0.wav,1,0,dog,True,100,B\n2-200-A-1.wav,2,1,rooster,False,200,A\n"
    )
    for name in ("1-100-A-0.wav", "1-100-B-0.wav", "2-200-A-1.wav"):
        tone(esc / "audio" / name)
    clips = load_corpus("esc50", esc)
    assert [c.group for c in clips] == ["100", "100", "200"]
    assert [c.label for c in load_corpus("esc50", esc, esc10=True)] == ["dog", "dog"]

    folder = tmp_path / "folder"
    tone(folder / "cough" / "spk1" / "a.wav")
    tone(folder / "speech" / "b.flac")
    clips = load_corpus("folder", folder, group="parent")
    assert sorted((c.label, c.group) for c in clips) == [("cough", "cough/spk1"), ("speech", "speech")]

    tone(tmp_path / "m" / "x.wav")
    (tmp_path / "m" / "manifest.csv").write_text("path,label,group\nx.wav,yes,alice\n/abs/y.wav,no\n")
    clips = load_corpus("manifest", tmp_path / "m")
    assert clips[0].path == tmp_path / "m" / "x.wav" and clips[0].group == "alice"
    assert clips[1].path == Path("/abs/y.wav") and clips[1].group == "/abs/y.wav"
    (tmp_path / "m" / "bad.csv").write_text("x.wav\n")
    with pytest.raises(CorpusError, match="line 1"):
        load_corpus("manifest", tmp_path / "m" / "bad.csv")


@pytest.mark.parametrize(
    "name,expected",
    [
        ("tess", "OAF_angry"),
        ("ravdess", "Actor_NN"),
        ("cremad", "ACTOR_SENTENCE"),
        ("speech_commands", "one folder per word"),
        ("coughvid", "metadata_compiled.csv"),
        ("coswara", "combined_data.csv"),
        ("covid19_cough", "metadata.json"),
        ("esc50", "meta/esc50.csv"),
        ("folder", "one folder per label"),
        ("packed", "manifest.json"),
    ],
)
def test_missing_and_misshapen_folders_say_what_was_expected(tmp_path, name, expected):
    with pytest.raises(CorpusError, match="does not exist") as missing:
        load_corpus(name, tmp_path / "nowhere")
    assert expected in str(missing.value)
    tone(tmp_path / "wrong" / "readme_not_audio.wav")
    with pytest.raises(CorpusError) as wrong:
        load_corpus(name, tmp_path / "wrong")
    assert expected in str(wrong.value) and "wrong" in str(wrong.value)


def test_unknown_corpus_or_option_is_named():
    with pytest.raises(ValueError, match="known: .*tess"):
        load_corpus("timit", "/tmp")
    with pytest.raises(ValueError, match="unexpected keyword"):
        load_corpus("tess", "/tmp", calm="drop")


def test_listing_splitting_and_packing_work_without_torch():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import edgekd_train.data.corpora, edgekd_train.data.split, edgekd_train.data.audio, edgekd_train.data.augment, edgekd_train.data.pack, edgekd_train.data.synth\n"
        "from edgekd_train.data.dataset import ClipDataset\n"
        "try:\n    ClipDataset([], [])\nexcept ImportError:\n    print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr
