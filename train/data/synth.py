"""A synthetic keyword corpus: the Speech Commands words spoken by every
espeak-ng, flite and festival voice, across rates and pitches, mixed with background
noise at several SNRs, with gain and time shift. Reproducible from a seed.

`generate(SynthConfig(...), out_dir)` writes `LABEL/*.wav` (16-bit, 1 s at
16 kHz by default), `manifest.csv` (path,label,group; loadable with
`load_corpus("manifest", out_dir)`) and `synth.json` (the config and each
file's voice, word, rate, pitch, SNR, gain and shift). The group of a clip is
its voice, so a voice-disjoint split is `group_split(clips)`.

Needs the Debian packages espeak-ng, flite and/or festival (with voices such as
festvox-kallpc16k, festvox-us-slt-hts); engines that are not installed are left out. A run with the same config
and seed, and the same engine versions, writes the same files.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgekd_train.data.audio import DEFAULT_RATE, load_audio
from edgekd_train.data.augment import Augment, mix_at_snr
from edgekd_train.data.clips import Clip
from edgekd_train.data.trim import speech_span

log = logging.getLogger(__name__)

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN, SILENCE = "_unknown_", "_silence_"
KEYWORD_LABELS = (*KEYWORDS, UNKNOWN, SILENCE)
# The other words of Speech Commands v2, plus a few near-misses of the keywords.
UNKNOWN_WORDS = (
    "backward", "bed", "bird", "cat", "dog", "eight", "five", "follow", "forward", "four", "happy",
    "house", "learn", "marvin", "nine", "one", "seven", "sheila", "six", "three", "tree", "two",
    "visual", "wow", "zero", "yet", "know", "cup", "town", "lift", "write", "own", "of", "top", "goat",
)
# English espeak-ng languages with their own voice files (mbrola voices need the mbrola program).
ESPEAK_LANGS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029")
# flite voices that speak any text (awb_time only tells the time), with their mean pitch in Hz.
# Measured here on "go" at pitch 25/50/75: slt 125/171/242 Hz, awb 76/108/154, kal 82/113/157;
# rms stayed at 83 Hz whatever int_f0_target_mean said, so its pitch is not varied.
FLITE_VOICES = {"slt": 170.0, "rms": 105.0, "awb": 110.0, "kal": 105.0, "kal16": 105.0}
FLITE_FIXED_PITCH = {"rms"}
# festival: diphone voices take a target pitch (int_lr_params; kal_diphone measured 69/98/138 Hz at
# pitch 25/50/75); HTS voices take a speed (-r), but their pitch option (-fm) changed nothing here
# (slt_hts stayed at 158 Hz), so their pitch stays the voice's own.
FESTIVAL_DIPHONE_F0 = {"kal_diphone": 105.0}
DEFAULT_WPM = 175  # espeak-ng's default rate; flite's rate is scaled against it


@dataclass(frozen=True)
class Voice:
    engine: str  # "espeak-ng" | "flite" | "festival"
    name: str  # "en-us+f3" | "slt" | "kal_diphone"

    @property
    def takes_pitch(self) -> bool:
        if self.engine == "festival":
            return self.name in FESTIVAL_DIPHONE_F0
        return not (self.engine == "flite" and self.name in FLITE_FIXED_PITCH)

    @property
    def id(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{self.engine}_{self.name}")


def espeak_variants() -> list[str]:
    """Variant names espeak-ng offers (m1..m7, f1..f5, croak, whisper, ...)."""
    out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True).stdout
    names = []
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5 and cols[4].startswith("!v/") and " " not in cols[4][3:]:
            names.append(cols[4][3:])
    return sorted(set(names))


def festival_voices() -> list[str]:
    """Voices festival has installed (e.g. kal_diphone, cmu_us_slt_arctic_hts)."""
    out = subprocess.run(["festival", "-b", "(print (voice.list))"], capture_output=True, text=True).stdout
    return sorted(re.findall(r"[A-Za-z0-9_]+", out))


def available_voices(engines: Sequence[str] = ("espeak-ng", "flite", "festival")) -> list[Voice]:
    """Every voice of the installed engines, in a fixed order."""
    voices: list[Voice] = []
    if "espeak-ng" in engines and shutil.which("espeak-ng"):
        variants = espeak_variants()
        voices += [Voice("espeak-ng", lang) for lang in ESPEAK_LANGS]
        voices += [Voice("espeak-ng", f"{lang}+{v}") for lang in ESPEAK_LANGS for v in variants]
    if "flite" in engines and shutil.which("flite"):
        listed = subprocess.run(["flite", "-lv"], capture_output=True, text=True).stdout.split()
        voices += [Voice("flite", v) for v in FLITE_VOICES if v in listed]
    if "festival" in engines and shutil.which("festival") and shutil.which("text2wave"):
        voices += [Voice("festival", v) for v in festival_voices()]
    return voices


def speak(voice: Voice, text: str, wpm: int, pitch: int, out: Path) -> None:
    """Render `text` to the wav file `out`. `pitch` is espeak-ng's 0-99 scale (50 = the voice's own)."""
    if voice.engine == "espeak-ng":
        cmd = ["espeak-ng", "-v", voice.name, "-s", str(wpm), "-p", str(pitch), "-w", str(out), text]
    elif voice.engine == "flite":
        f0 = FLITE_VOICES[voice.name] * 2 ** ((pitch - 50) / 50)
        cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={DEFAULT_WPM / wpm:.3f}",
               "--setf", f"int_f0_target_mean={f0:.1f}", "-t", text, "-o", str(out)]
    elif voice.engine == "festival":
        settings = [f"(voice_{voice.name})"]
        if voice.name.endswith("_hts"):
            settings.append(f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {wpm / DEFAULT_WPM:.3f}))))')
        else:
            settings.append(f"(Parameter.set 'Duration_Stretch {DEFAULT_WPM / wpm:.3f})")
            if voice.name in FESTIVAL_DIPHONE_F0:
                f0 = FESTIVAL_DIPHONE_F0[voice.name] * 2 ** ((pitch - 50) / 50)
                settings.append(
                    f"(set! int_lr_params '((target_f0_mean {f0:.1f}) (target_f0_std {f0 / 5:.1f}) "
                    "(model_f0_mean 170) (model_f0_std 34)))"
                )
        cmd = ["text2wave", *[a for s in settings for a in ("-eval", s)], "-o", str(out)]
    else:
        raise ValueError(f"unknown speech engine {voice.engine!r}: use espeak-ng, flite or festival")
    done = subprocess.run(cmd, input=text if voice.engine == "festival" else None, capture_output=True, text=True)
    if done.returncode != 0 or not out.is_file():
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[:200]}")


@dataclass
class SynthConfig:
    per_label: int = 400
    labels: tuple[str, ...] = KEYWORD_LABELS
    unknown_words: tuple[str, ...] = UNKNOWN_WORDS
    engines: tuple[str, ...] = ("espeak-ng", "flite", "festival")
    # How often each installed engine speaks, relative to the others (flite and festival have a
    # few voices, espeak-ng hundreds: drawing voices uniformly would leave them out).
    engine_weights: dict[str, float] = field(default_factory=lambda: {"espeak-ng": 3.0, "flite": 1.0, "festival": 1.0})
    rates_wpm: tuple[int, ...] = (120, 150, 175, 210)
    pitches: tuple[int, ...] = (25, 40, 50, 60, 75)
    noise_dir: str | None = None
    snr_db: tuple[float, ...] = (0.0, 5.0, 10.0, 20.0, 30.0)
    p_clean: float = 0.2  # share of word clips left without noise
    gain_db: tuple[float, float] = (-12.0, 3.0)
    shift_s: float = 0.15
    window_s: float = 1.0
    rate: int = DEFAULT_RATE
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _voice_drawer(voices: list[Voice], engine_weights: dict[str, float]) -> Callable[[np.random.Generator], Voice]:
    """Draws a voice: first an engine by `engine_weights` (espeak-ng has hundreds of voices, flite and
    festival a few, so drawing voices uniformly would leave those out), then one of its voices."""
    engines = sorted({v.engine for v in voices})
    by_engine = {e: [v for v in voices if v.engine == e] for e in engines}
    weights = np.array([engine_weights.get(e, 1.0) for e in engines], dtype=np.float64)
    weights = weights / weights.sum() if len(engines) else weights

    def draw(rng: np.random.Generator) -> Voice:
        pool = by_engine[engines[int(rng.choice(len(engines), p=weights))]]
        return pool[int(rng.integers(len(pool)))]

    return draw


def _say(voice: Voice, text: str, wpm: int, pitch: int, tmp: str | Path, rate: int, peak: float = 0.5) -> np.ndarray:
    """`text` spoken by `voice`, trimmed of the silence around it, scaled to `peak`."""
    wav = Path(tmp) / "say.wav"
    speak(voice, text, wpm, pitch, wav)
    spoken = load_audio(wav, rate)
    start, end = speech_span(spoken, rate, floor_db=40.0, margin_s=0.05)
    spoken = spoken[start:end]
    return spoken * (peak / max(float(np.abs(spoken).max()), 1e-6))


def _write_index(out_dir: Path, cfg: Any, voices: list[Voice], rows: list[dict[str, Any]]) -> None:
    """manifest.csv (path,label,group: `load_corpus("manifest", out_dir)`) and synth.json (config, rows)."""
    with (out_dir / "manifest.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "group"])
        writer.writerows([r["path"], r["label"], r["group"]] for r in rows)
    (out_dir / "synth.json").write_text(json.dumps({"config": asdict(cfg), "voices": len(voices), "clips": rows}, indent=1) + "\n")


def _plan(cfg: SynthConfig, voices: list[Voice], rng: np.random.Generator) -> list[dict[str, Any]]:
    draw_voice = _voice_drawer(voices, cfg.engine_weights)
    items = []
    for label in cfg.labels:
        for k in range(cfg.per_label):
            item: dict[str, Any] = {"label": label, "index": k, "gain_db": float(rng.uniform(*cfg.gain_db))}
            if label == SILENCE:
                item.update(voice=None, word=None, snr_db=None)
            else:
                words = cfg.unknown_words if label == UNKNOWN else (label,)
                voice = draw_voice(rng)
                clean = rng.random() < cfg.p_clean or cfg.noise_dir is None
                item.update(
                    voice=voice, word=str(words[int(rng.integers(len(words)))]),
                    wpm=int(rng.choice(cfg.rates_wpm)), pitch=int(rng.choice(cfg.pitches)) if voice.takes_pitch else None,
                    snr_db=None if clean else float(rng.choice(cfg.snr_db)),
                    shift=float(rng.uniform(-cfg.shift_s, cfg.shift_s)),
                )
            items.append(item)
    return items


def _place(word: np.ndarray, n: int, shift: int) -> np.ndarray:
    """Put `word` in the middle of `n` samples, moved by `shift`, kept inside the window."""
    out = np.zeros(n, dtype=np.float32)
    if len(word) >= n:
        start = (len(word) - n) // 2
        return word[start : start + n].copy()
    offset = min(max((n - len(word)) // 2 + shift, 0), n - len(word))
    out[offset : offset + len(word)] = word
    return out


def generate(cfg: SynthConfig, out_dir: str | Path) -> list[Clip]:
    """Write the synthetic corpus under `out_dir` and return its clips."""
    import soundfile as sf

    out_dir = Path(out_dir)
    voices = available_voices(cfg.engines)
    if not voices and set(cfg.labels) - {SILENCE}:
        raise RuntimeError(f"no voice of {list(cfg.engines)} is installed: `apt-get install espeak-ng flite`")
    noise = Augment(cfg.noise_dir, p_noise=1.0, seed=cfg.seed, rate=cfg.rate) if cfg.noise_dir else None
    if SILENCE in cfg.labels and noise is None:
        raise ValueError(f"{SILENCE} clips are cut from background noise: give noise_dir (e.g. ../shared/data/noise)")
    rng = np.random.default_rng(cfg.seed)
    items = _plan(cfg, voices, rng)
    n = int(cfg.window_s * cfg.rate)
    clips, rows = [], []
    with tempfile.TemporaryDirectory(prefix="edgekd-synth-") as tmp:
        for item in items:
            label, voice = item["label"], item["voice"]
            if voice is None:
                x = noise.noise_window(n).copy()
                x *= 0.1 / max(float(np.sqrt(np.mean(np.square(x)))), 1e-6)
                group = "noise"
            else:
                spoken = _say(voice, item["word"], item["wpm"], item["pitch"] or 50, tmp, cfg.rate)
                x = _place(spoken, n, int(item["shift"] * cfg.rate))
                if item["snr_db"] is not None:
                    x = mix_at_snr(x, noise.noise_window(n), item["snr_db"])
                group = voice.id
            x = np.clip(x * 10 ** (item["gain_db"] / 20), -1.0, 1.0).astype(np.float32)
            rel = Path(label) / f"{label}-{item['index']:05d}-{group}.wav"
            (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(out_dir / rel), x, cfg.rate, subtype="PCM_16")
            meta = {k: v for k, v in item.items() if k not in ("label", "voice", "index")}
            meta["voice"] = None if voice is None else f"{voice.engine}:{voice.name}"
            clips.append(Clip(out_dir / rel, label, group, "synth", meta))
            rows.append({"path": rel.as_posix(), "label": label, "group": group, **meta})
    _write_index(out_dir, cfg, voices, rows)
    log.info("synth: %d clips from %d voices in %s", len(clips), len(voices), out_dir)
    return clips


# Background speech: sentences with none of the keywords, for stream-trained detectors whose false
# alarms come from speakers they never heard (docs/streams.md). A fixed vocabulary keeps it
# reproducible on any machine; it leaves out the keywords, their homophones and near-misses
# (know, write, of, own, ...) and every word that starts with a keyword's sound (only, going, upper).
SENTENCE_VOCAB = (
    "the a this that these those my your his her their our some every each many few more most other "
    "same such what which who when where why how and but or so because if then than while after "
    "before since until though also just very really quite still even again already soon never always "
    "often maybe perhaps here there today tomorrow tonight morning evening night week month "
    "year time day hour minute moment people person man woman child children friend family mother "
    "father sister brother teacher doctor nurse neighbour kitchen table chair window garden street "
    "city house room door wall floor bed car bus train bike road water coffee tea bread milk dinner "
    "lunch breakfast apple orange music song radio paper letter book story picture phone computer "
    "money price market shop work job school class lesson question answer problem idea reason plan "
    "weather rain snow wind sun cloud summer winter spring autumn colour blue green red yellow black "
    "white small big little large long short warm cold hot cool bright dark quiet loud happy sad "
    "tired busy easy hard early late quick slow new old young bad nice fine better best great "
    "real true wrong sure ready full empty open clean is are was were be been being have has had do "
    "does did can could will would shall should may might must make made take took bring brought "
    "think thought feel felt see saw look looked watch hear heard listen speak said say tell told ask "
    "asked call called want wanted need like liked love find found give gave keep kept leave let put "
    "sit sat stand walk walked run ran come came buy bought pay paid read wait waited help helped "
    "play played cook cooked clean cleaned finish finished start started learn learned carry carried "
    "remember forget forgot believe seem seemed happen happened change changed move moved live lived "
    "with without about around between behind beside under over through into from for at by to in "
    "near across along against during instead together across inside outside enough almost "
    "probably certainly usually sometimes nearly behind beneath everyone someone anyone "
    "everything something anything somewhere everywhere that's it's we they she he you i me "
    "him them us her it"
).split()
SENTENCE_WORDS = (4, 12)  # words per sentence, inclusive


def keyword_free_sentence(rng: np.random.Generator, vocab: Sequence[str] = SENTENCE_VOCAB) -> str:
    """A run of words from `vocab`, capitalised and ended like a sentence (prosody, not grammar)."""
    n = int(rng.integers(SENTENCE_WORDS[0], SENTENCE_WORDS[1] + 1))
    words = [vocab[int(rng.integers(len(vocab)))] for _ in range(n)]
    return " ".join(words).capitalize() + ("?" if rng.random() < 0.2 else ".")


@dataclass
class SpeechConfig:
    count: int = 1500
    engines: tuple[str, ...] = ("espeak-ng", "flite", "festival")
    engine_weights: dict[str, float] = field(default_factory=lambda: {"espeak-ng": 3.0, "flite": 1.0, "festival": 1.0})
    rates_wpm: tuple[int, ...] = (120, 150, 175, 210)
    pitches: tuple[int, ...] = (25, 40, 50, 60, 75)
    peak: float = 0.5
    rate: int = DEFAULT_RATE
    seed: int = 0


def generate_speech(cfg: SpeechConfig, out_dir: str | Path) -> list[Clip]:
    """Write `cfg.count` keyword-free sentences, each by a voice drawn as `generate` draws them, under
    `out_dir/_unknown_/` (whole sentences, trimmed of silence, peak `cfg.peak`, no noise: the stream
    windows add their own), with manifest.csv and synth.json (each file's voice, text, rate, pitch)."""
    import soundfile as sf

    out_dir = Path(out_dir)
    voices = available_voices(cfg.engines)
    if not voices:
        raise RuntimeError(f"no voice of {list(cfg.engines)} is installed: `apt-get install espeak-ng flite`")
    forbidden = set(KEYWORDS) | {"know", "write", "right", "of", "own", "top", "goat"}
    bad = [w for w in SENTENCE_VOCAB if w in forbidden or any(w.startswith(k) for k in KEYWORDS)]
    if bad:  # a guard on the vocabulary above: background speech must not say a keyword
        raise AssertionError(f"SENTENCE_VOCAB holds keyword sounds {bad}")
    rng = np.random.default_rng(cfg.seed)
    draw_voice = _voice_drawer(voices, cfg.engine_weights)
    clips, rows = [], []
    with tempfile.TemporaryDirectory(prefix="edgekd-speech-") as tmp:
        for k in range(cfg.count):
            voice = draw_voice(rng)
            text = keyword_free_sentence(rng)
            wpm = int(rng.choice(cfg.rates_wpm))
            pitch = int(rng.choice(cfg.pitches)) if voice.takes_pitch else None
            x = np.clip(_say(voice, text, wpm, pitch or 50, tmp, cfg.rate, cfg.peak), -1.0, 1.0).astype(np.float32)
            rel = Path(UNKNOWN) / f"speech-{k:05d}-{voice.id}.wav"
            (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(out_dir / rel), x, cfg.rate, subtype="PCM_16")
            meta = {"voice": f"{voice.engine}:{voice.name}", "text": text, "wpm": wpm, "pitch": pitch,
                    "seconds": round(len(x) / cfg.rate, 3)}
            clips.append(Clip(out_dir / rel, UNKNOWN, voice.id, "synth", meta))
            rows.append({"path": rel.as_posix(), "label": UNKNOWN, "group": voice.id, **meta})
    _write_index(out_dir, cfg, voices, rows)
    log.info("synth speech: %d sentences (%.0f s) from %d voices in %s", len(clips),
             sum(r["seconds"] for r in rows), len({r["group"] for r in rows}), out_dir)
    return clips
