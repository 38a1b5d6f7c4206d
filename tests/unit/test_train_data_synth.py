"""The synthetic keyword generator yields the labelled files it promises.

Needs espeak-ng (Debian package); the flite test also needs flite.
"""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
import soundfile as sf

from edgekd_train.data.corpora import load_corpus
from edgekd_train.data.split import group_split
from edgekd_train.data.synth import SynthConfig, available_voices, generate

pytestmark = [
    pytest.mark.train,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (apt-get install espeak-ng)"),
]
RATE = 16_000


@pytest.fixture
def noise_dir(tmp_path):
    folder = tmp_path / "noise"
    folder.mkdir()
    sf.write(str(folder / "hum.flac"), (0.2 * np.random.default_rng(0).standard_normal(3 * RATE)).astype(np.float32), RATE)
    return folder


def digest(folder) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.wav"))}


def test_generates_the_promised_labelled_files(tmp_path, noise_dir):
    cfg = SynthConfig(per_label=3, labels=("yes", "stop", "_unknown_", "_silence_"), noise_dir=str(noise_dir), engines=("espeak-ng",), seed=4)
    clips = generate(cfg, tmp_path / "a")
    assert [c.label for c in clips] == ["yes"] * 3 + ["stop"] * 3 + ["_unknown_"] * 3 + ["_silence_"] * 3
    for c in clips:
        x, rate = sf.read(str(c.path), dtype="float32")
        assert rate == RATE and len(x) == RATE and 0.001 < np.abs(x).max() <= 1.0, c.path
        assert c.path.parent.name == c.label
    assert all(c.meta["word"] == "stop" for c in clips if c.label == "stop")
    assert all(c.meta["word"] not in ("yes", "stop") for c in clips if c.label == "_unknown_")
    assert all(c.group.startswith("espeak-ng_") for c in clips if c.label != "_silence_")
    # A clean spoken word stands out of its own window: the loudest 100 ms is far above the quietest.
    clean = [c for c in clips if c.label == "yes" and c.meta["snr_db"] is None] or [clips[0]]
    frames = np.square(sf.read(str(clean[0].path), dtype="float32")[0]).reshape(10, -1).mean(axis=1)
    assert frames.max() > 5 * frames.min()

    listed = load_corpus("manifest", tmp_path / "a")
    assert [(c.path, c.label, c.group) for c in listed] == [(c.path, c.label, c.group) for c in clips]
    assert (tmp_path / "a" / "synth.json").is_file()


def test_same_seed_same_files_other_seed_other_files(tmp_path, noise_dir):
    def run(seed, name):
        cfg = SynthConfig(per_label=2, labels=("go", "_silence_"), noise_dir=str(noise_dir), engines=("espeak-ng",), seed=seed)
        generate(cfg, tmp_path / name)
        return digest(tmp_path / name)

    a, b, c = run(1, "a"), run(1, "b"), run(2, "c")
    assert a == b
    assert a != c


def test_voices_span_variants_and_flite(tmp_path, noise_dir):
    voices = available_voices(("espeak-ng",))
    assert len(voices) > 50 and any("+f" in v.name for v in voices) and any("+m" in v.name for v in voices)
    if shutil.which("flite") is None:
        pytest.skip("needs flite (apt-get install flite)")
    cfg = SynthConfig(per_label=2, labels=("left",), engines=("flite",), noise_dir=None, seed=0)
    clips = generate(cfg, tmp_path / "f")
    assert all(c.group.startswith("flite_") for c in clips)
    assert all(np.abs(sf.read(str(c.path))[0]).max() > 0.05 for c in clips)


def test_silence_needs_noise_and_groups_split_by_voice(tmp_path, noise_dir):
    with pytest.raises(ValueError, match="noise_dir"):
        generate(SynthConfig(per_label=1, labels=("_silence_",), engines=("espeak-ng",)), tmp_path / "x")
    clips = generate(SynthConfig(per_label=12, labels=("no",), noise_dir=str(noise_dir), engines=("espeak-ng",)), tmp_path / "y")
    split = group_split(clips, val=0.2, test=0.2, seed=0)
    assert not split.leaks() and split.test


def median_f0(x: np.ndarray, rate: int = RATE) -> float:
    """Autocorrelation pitch over the loud, voiced 40 ms frames."""
    n, found = 640, []
    starts = range(0, len(x) - n, 160)
    energy = np.array([np.mean(x[i : i + n] ** 2) for i in starts])
    for e, i in zip(energy, starts):
        seg = x[i : i + n] - x[i : i + n].mean()
        ac = np.correlate(seg, seg, "full")[n - 1 :]
        lag = rate // 400 + int(np.argmax(ac[rate // 400 : rate // 60]))
        if e > 0.3 * energy.max() and ac[lag] > 0.4 * ac[0]:
            found.append(rate / lag)
    return float(np.median(found))


@pytest.mark.parametrize(
    "engine,name",
    [("espeak-ng", "en-us+f3"), ("flite", "slt"), ("festival", "kal_diphone")],
)
@pytest.mark.slow
def test_rate_and_pitch_change_the_voice(tmp_path, engine, name):
    from edgekd_train.data.audio import load_audio
    from edgekd_train.data.synth import Voice, speak

    if shutil.which("flite" if engine == "flite" else "text2wave" if engine == "festival" else engine) is None:
        pytest.skip(f"needs {engine}")
    voice = Voice(engine, name)
    if voice not in available_voices((engine,)):
        pytest.skip(f"{engine} has no voice {name} here")

    def say(wpm, pitch):
        speak(voice, "go", wpm, pitch, tmp_path / "x.wav")
        return load_audio(tmp_path / "x.wav")

    slow, fast = say(120, 50), say(210, 50)
    assert len(slow) > 1.4 * len(fast)
    low, high = median_f0(say(175, 25)), median_f0(say(175, 75))
    assert high > 1.5 * low


def test_background_sentences_never_say_a_keyword():
    """The sentence vocabulary leaves out the keywords, their homophones and every word that starts
    with one (going, only, nobody): background speech must not hold a target."""
    from edgekd_train.data.synth import KEYWORDS, SENTENCE_VOCAB, keyword_free_sentence

    rng = np.random.default_rng(0)
    for _ in range(500):
        words = keyword_free_sentence(rng).lower().rstrip(".?").split()
        assert 4 <= len(words) <= 12
        for w in words:
            assert w in SENTENCE_VOCAB
            assert not any(w.startswith(k) for k in KEYWORDS), w
    assert not {"know", "write", "right", "of", "own"} & set(SENTENCE_VOCAB)


def test_speech_writes_whole_sentences_reproducibly(tmp_path):
    from edgekd_train.data.synth import SpeechConfig, generate_speech

    a = generate_speech(SpeechConfig(count=5, seed=4, engines=("espeak-ng",)), tmp_path / "a")
    b = generate_speech(SpeechConfig(count=5, seed=4, engines=("espeak-ng",)), tmp_path / "b")
    assert [c.meta["text"] for c in a] == [c.meta["text"] for c in b]
    assert [c.group for c in a] == [c.group for c in b]
    for clip in a:
        x, rate = sf.read(str(clip.path))
        assert rate == 16000 and clip.label == "_unknown_"
        assert len(x) / rate > 0.8  # a sentence, not a word cut to one second
        assert abs(np.abs(x).max() - 0.5) < 0.01
    loaded = load_corpus("folder", tmp_path / "a", group="file")
    assert len(loaded) == 5 and {c.label for c in loaded} == {"_unknown_"}
