"""`load_corpus(name, root, **opts)`: one entry point for every corpus layout.

| name | layout | group |
|---|---|---|
| tess | SPEAKER_emotion/SPEAKER_word_emotion.ext | word |
| ravdess | Actor_NN/MM-VV-EE-II-SS-RR-AA.ext (calm="drop"/"neutral") | actor |
| cremad | AudioWAV/ACTOR_SENTENCE_EMOTION_LEVEL.wav | actor |
| speech_commands | WORD/SPEAKER_nohash_N.ext (+ validation/testing lists) | speaker |
| coughvid | metadata_compiled.csv + uuid.ext | recording |
| coswara | combined_data.csv + DATE/ID/cough-heavy.wav | participant |
| covid19_cough | metadata.json + raw/ | recording |
| esc50 | meta/esc50.csv + audio/ | source recording |
| folder | LABEL/**/*.ext | file (or parent folder) |
| manifest | CSV path,label[,group] | given, else file |
| packed | manifest.json written by `edgekd_train.data.pack.pack_corpus` | as packed |
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from edgekd_train.data import cough_corpora, emotion_corpora, generic_corpora
from edgekd_train.data.clips import Clip, label_counts
from edgekd_train.data.corpus_base import CorpusError
from edgekd_train.data.emotion_corpora import EMOTIONS

log = logging.getLogger(__name__)

__all__ = ["CORPORA", "EMOTIONS", "Clip", "CorpusError", "load_corpus"]


def _load_packed(root: str | Path, corpus: str | None = None) -> list[Clip]:
    from edgekd_train.data.pack import load_packed  # keeps pack's imports out of every loader call

    return load_packed(root, corpus=corpus)


CORPORA: dict[str, Callable[..., list[Clip]]] = {
    "tess": emotion_corpora.load_tess,
    "ravdess": emotion_corpora.load_ravdess,
    "cremad": emotion_corpora.load_cremad,
    "speech_commands": generic_corpora.load_speech_commands,
    "coughvid": cough_corpora.load_coughvid,
    "coswara": cough_corpora.load_coswara,
    "covid19_cough": cough_corpora.load_covid19_cough,
    "esc50": generic_corpora.load_esc50,
    "folder": generic_corpora.load_folder,
    "manifest": generic_corpora.load_manifest,
    "packed": _load_packed,
}


def load_corpus(name: str, root: str | Path, **opts: Any) -> list[Clip]:
    """List the clips of corpus `name` under `root`. Decodes nothing.

    Raises `CorpusError` when the folder is missing or laid out unlike `name`
    expects, and `ValueError` for an unknown name or option.
    """
    key = name.lower().replace("-", "_")
    if key not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; known: {', '.join(sorted(CORPORA))}")
    try:
        clips = CORPORA[key](root, **opts)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise ValueError(f"corpus {key}: {exc}") from None
        raise
    log.info("%s: %d clips from %s %s", key, len(clips), root, label_counts(clips))
    return clips
