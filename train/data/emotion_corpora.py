"""Speech-emotion corpora: TESS, RAVDESS, CREMA-D.

Every loader maps its emotions onto exactly `EMOTIONS`: TESS `ps` (pleasant
surprise) and RAVDESS `surprised` become `surprise`, RAVDESS `fearful`
becomes `fear`. RAVDESS `calm` has no counterpart: it is dropped by default
(`calm="drop"`) or merged into `neutral` (`calm="neutral"`).
"""

from __future__ import annotations

import re
from pathlib import Path

from edgekd_train.data.clips import Clip
from edgekd_train.data.corpus_base import CorpusError, Skips, describe_contents, find_audio, require_dir

EMOTIONS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")

# Spellings seen in TESS copies (folder and file names) -> our label.
_TESS_EMOTIONS = {
    "angry": "angry",
    "disgust": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "happy": "happy",
    "neutral": "neutral",
    "sad": "sad",
    "ps": "surprise",
    "surprise": "surprise",
    "surprised": "surprise",
    "psd": "surprise",  # "pleasant_surprised" after the rewrite in load_tess
}

_RAVDESS_EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fear",  # fearful
    "07": "disgust",
    "08": "surprise",  # surprised
}
_RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")

_CREMAD_EMOTIONS = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}


def load_tess(root: str | Path) -> list[Clip]:
    """TESS: `SPEAKER_emotion/SPEAKER_word_emotion.ext`; group = the word."""
    expected = "folders like OAF_angry/ holding files named SPEAKER_word_emotion (e.g. OAF_back_angry.flac)"
    root = require_dir("tess", root, expected)
    skips = Skips("tess")
    clips = []
    for path in find_audio(root):
        parts = path.stem.lower().replace("pleasant_surprise", "ps").split("_")
        emotion = _TESS_EMOTIONS.get(parts[-1]) if len(parts) >= 3 else None
        if emotion is None:
            skips.skip(path, "name is not SPEAKER_word_emotion with a TESS emotion")
            continue
        speaker, word = parts[0].upper(), "_".join(parts[1:-1])
        clips.append(Clip(path, emotion, word, "tess", {"speaker": speaker, "word": word}))
    skips.summarize()
    if not clips:
        raise CorpusError("tess", root, f"no TESS clips found (it holds {describe_contents(root)})", expected)
    return clips


def load_ravdess(root: str | Path, calm: str = "drop", channel: str = "speech") -> list[Clip]:
    """RAVDESS: `Actor_NN/MM-VV-EE-II-SS-RR-AA.ext`; group = the actor.

    `calm`: "drop" (default) or "neutral". `channel`: "speech" (default),
    "song" or "all".
    """
    if calm not in ("drop", "neutral"):
        raise ValueError(f"ravdess calm={calm!r}: use 'drop' or 'neutral'")
    channels = {"speech": {"01"}, "song": {"02"}, "all": {"01", "02"}}
    if channel not in channels:
        raise ValueError(f"ravdess channel={channel!r}: use 'speech', 'song' or 'all'")
    expected = "Actor_NN/ folders holding files named MM-VV-EE-II-SS-RR-AA (e.g. 03-01-05-01-02-01-12.wav)"
    root = require_dir("ravdess", root, expected)
    skips = Skips("ravdess")
    clips = []
    for path in find_audio(root):
        m = _RAVDESS_NAME.match(path.stem)
        if m is None or m.group(3) not in _RAVDESS_EMOTIONS:
            skips.skip(path, "name is not a RAVDESS identifier")
            continue
        modality, vocal, emo, intensity, statement, repetition, actor = m.groups()
        if vocal not in channels[channel]:
            continue
        label = _RAVDESS_EMOTIONS[emo]
        if label == "calm":
            if calm == "drop":
                continue
            label = "neutral"
        meta = {
            "actor": int(actor),
            "sex": "male" if int(actor) % 2 else "female",
            "intensity": "strong" if intensity == "02" else "normal",
            "statement": int(statement),
            "repetition": int(repetition),
            "vocal": "song" if vocal == "02" else "speech",
            "original_emotion": emo,
        }
        clips.append(Clip(path, label, f"actor{int(actor):02d}", "ravdess", meta))
    skips.summarize()
    if not clips:
        raise CorpusError("ravdess", root, f"no RAVDESS clips found (it holds {describe_contents(root)})", expected)
    return clips


def load_cremad(root: str | Path) -> list[Clip]:
    """CREMA-D: `AudioWAV/ACTOR_SENTENCE_EMOTION_LEVEL.wav`; group = the actor."""
    expected = "files named ACTOR_SENTENCE_EMOTION_LEVEL (e.g. AudioWAV/1001_DFA_ANG_XX.wav)"
    root = require_dir("cremad", root, expected)
    skips = Skips("cremad")
    clips = []
    for path in find_audio(root):
        parts = path.stem.split("_")
        if len(parts) != 4 or parts[2] not in _CREMAD_EMOTIONS or not parts[0].isdigit():
            skips.skip(path, "name is not ACTOR_SENTENCE_EMOTION_LEVEL")
            continue
        actor, sentence, emo, level = parts
        meta = {"actor": int(actor), "sentence": sentence, "level": level}
        clips.append(Clip(path, _CREMAD_EMOTIONS[emo], f"actor{actor}", "cremad", meta))
    skips.summarize()
    if not clips:
        raise CorpusError("cremad", root, f"no CREMA-D clips found (it holds {describe_contents(root)})", expected)
    return clips
