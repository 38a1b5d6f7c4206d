"""What each detector's streams are made of, from held-out audio only.

`val` streams are for choosing operating points, `test` streams for the figures reported. For the
task's own corpus the parts are the task's split (the same function, recipe fields and seed that
trained the shipped model). Corpora the task's shipped models never trained on are split by group
(word, actor, speaker, recording), a stable hash of the group name deciding the part: half of the
groups for training (background for detectors trained on streams), a quarter each for val and test
streams, so that val and test streams never share a speaker or a word, and neither shares one with
a detector trained on the training half.

Negative audio never contains a target: a TESS word or a Speech Commands word that is one of the
keywords is left out of the background (TESS's 200 words include "yes"), and the counts say so.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from edgekd.contract import WELL_KNOWN_BACKGROUND
from edgekd_train.data.clips import Clip
from edgekd_train.data.corpora import load_corpus
from edgekd_train.data.split import group_split
from edgekd_train.recipe import load_recipe
from edgekd_train.streams.build import StreamSources

PARTS = ("val", "test")
TRAIN = "train"  # training streams: for mining hard negatives, never for figures or operating points
# Held-out time ranges of the noise recordings (fractions of each recording), as each task's
# training used them: keywords trained on the first KEYWORD_NOISE_TRAIN_S seconds of each; the
# cough task on the first 60%, validated on 60-75% and tested on 75-100%.
KEYWORD_NOISE_TRAIN_S = 40.0
COUGH_NOISE_PARTS = {"train": (0.0, 0.6), "val": (0.6, 0.75), "test": (0.75, 1.0)}
COUGH_SPEECH_THIN = 2  # the cough task's speech corpora, every second clip (as it was trained)


def stable_part(group: str) -> str:
    """'train' (half), 'val' or 'test' (a quarter each) for a group, the same on every machine."""
    return ("train", "train", "val", "test")[hashlib.sha1(group.encode()).digest()[0] % 4]


def _check_part(part: str) -> None:
    if part not in (*PARTS, TRAIN):
        raise ValueError(f"part {part!r}: 'val' or 'test' (held-out audio), or 'train' (for mining hard negatives)")


def _noise(folder: Path, rate: int, lo_hi: tuple[float, float] | None = None, skip_s: float = 0.0,
           half: str | None = None) -> list[np.ndarray]:
    from edgekd_train.data.audio import find_audio_files, load_audio

    out = []
    for f in find_audio_files(folder):
        x = load_audio(f, rate)
        if lo_hi is not None:
            x = x[int(lo_hi[0] * len(x)) : int(lo_hi[1] * len(x))]
        else:
            cut = int(skip_s * rate)
            if half == TRAIN:
                x = x[:cut]
            else:
                x = x[cut:]
                mid = len(x) // 2
                x = x[:mid] if half == "val" else x[mid:]
        out.append(x.astype(np.float32))
    return out


def _relabel(clips: list[Clip], label: str) -> list[Clip]:
    return [Clip(c.path, label, c.group, c.corpus, c.meta) for c in clips]


def keyword_sources(data: Path, part: str, recipe: str = "keyword") -> StreamSources:
    """Events: the keyword clips of the held-out speakers. Background: other words and silence of
    those speakers, TESS and RAVDESS speech, coughs, noise."""
    _check_part(part)
    rec = load_recipe(recipe)
    labels = list(rec.task.labels)
    targets = [label for label in labels if label not in WELL_KNOWN_BACKGROUND]
    clips = load_corpus("speech_commands", data / "speech_commands", keywords=targets)
    split = group_split(clips, val=rec.split.val, test=rec.split.test, seed=rec.split.seed)
    held = getattr(split, part)
    events = [c for c in held if c.label in targets]
    non_target = [c for c in held if c.label not in targets and c.meta.get("word") not in targets]
    tess = [c for c in load_corpus("tess", data / "tess") if stable_part(c.group) == part]
    ravdess = [c for c in load_corpus("ravdess", data / "ravdess", calm="neutral") if stable_part(c.group) == part]
    speech = [c for c in tess + ravdess if c.meta.get("word") not in targets]
    coughs = [c for c in load_corpus("covid19_cough", data / "covid19-cough") if stable_part(c.group) == part]
    notes = {
        "events": f"Speech Commands keywords of the {part} speakers of the keyword split (seed {rec.split.seed}, "
                  f"val {rec.split.val}, test {rec.split.test})",
        "speakers": len({c.group for c in held}),
        "excluded_target_words": {
            "tess": sum(1 for c in tess if c.meta.get("word") in targets),
            "speech_commands_non_target": sum(1 for c in held if c.label not in targets and c.meta.get("word") in targets),
        },
        "background": {"speech": "TESS and RAVDESS (a quarter of the words and actors)", "non_target": "other words and "
                       "_silence_ of the same speakers", "distractor": "coughs (a quarter of the recordings)",
                       "noise": f"noise recordings after their first {KEYWORD_NOISE_TRAIN_S:g} s (one half)"},
    }
    return StreamSources(
        task="keyword", part=part, rate=rec.task.sample_rate, events=events,
        background={"speech": _relabel(speech, "speech"), "non_target": non_target, "distractor": _relabel(coughs, "cough")},
        noise=_noise(data / "noise", rec.task.sample_rate, skip_s=KEYWORD_NOISE_TRAIN_S, half=part),
        window_s=rec.task.window_seconds, notes=notes,
    )


def keyword_training_background(data: Path, recipe: str = "keyword", noise_s: float = KEYWORD_NOISE_TRAIN_S,
                                ) -> tuple[dict[str, list[Clip]], list[np.ndarray]]:
    """What a keyword detector may train on besides its own clips, from the training half only:
    TESS (keyword words left out) and RAVDESS speech, coughs, and the noise recordings' first
    `noise_s` seconds (the stretch the keyword augmentation already draws from; at most
    KEYWORD_NOISE_TRAIN_S, where the val and test streams' noise begins).
    Returns ({"speech": ..., "distractor": ...}, noise) for `edgekd_train.streams.negatives.BackgroundPool`."""
    if noise_s > KEYWORD_NOISE_TRAIN_S:
        raise ValueError(f"noise_s={noise_s:g}: the val and test streams' noise starts at {KEYWORD_NOISE_TRAIN_S:g} s "
                         "of each recording; train on at most that")
    rec = load_recipe(recipe)
    targets = [label for label in rec.task.labels if label not in WELL_KNOWN_BACKGROUND]
    tess = [c for c in load_corpus("tess", data / "tess") if stable_part(c.group) == TRAIN]
    ravdess = [c for c in load_corpus("ravdess", data / "ravdess", calm="neutral") if stable_part(c.group) == TRAIN]
    coughs = [c for c in load_corpus("covid19_cough", data / "covid19-cough") if stable_part(c.group) == TRAIN]
    speech = [c for c in tess if c.meta.get("word") not in targets] + ravdess
    noise = _noise(data / "noise", rec.task.sample_rate, skip_s=noise_s, half=TRAIN)
    return {"speech": speech, "distractor": coughs}, noise


def cough_sources(data: Path, part: str, recipe: str = "cough") -> StreamSources:
    """Events: the held-out cough recordings. Background: held-out RAVDESS actors and TESS words,
    Speech Commands speech, noise (held-out time ranges)."""
    _check_part(part)
    rec = load_recipe(recipe)
    sp = rec.split
    coughs = group_split(load_corpus("covid19_cough", data / "covid19-cough"), val=sp.val, test=sp.test, seed=sp.seed)
    events = _relabel(getattr(coughs, part), "cough")
    speech: list[Clip] = []
    for name, opts in (("ravdess", {"calm": "neutral"}), ("tess", {})):
        clips = load_corpus(name, data / name, **opts)
        thinned = clips[::COUGH_SPEECH_THIN]  # as the cough task split them
        held_groups = {c.group for c in getattr(group_split(thinned, val=sp.val, test=sp.test, seed=sp.seed), part)}
        speech += [c for c in clips if c.group in held_groups]
    commands = [c for c in load_corpus("speech_commands", data / "speech_commands") if stable_part(c.group) == part]
    notes = {
        "events": f"covid19-cough recordings of the {part} part of the cough split (seed {sp.seed})",
        "background": {"speech": "RAVDESS actors and TESS words of the same part", "distractor": "Speech Commands "
                       "words (a quarter of the speakers)", "noise": f"noise recordings, time range {COUGH_NOISE_PARTS[part]}"},
    }
    return StreamSources(
        task="cough", part=part, rate=rec.task.sample_rate, events=events,
        background={"speech": _relabel(speech, "speech"), "distractor": _relabel(commands, "speech")},
        noise=_noise(data / "noise", rec.task.sample_rate, lo_hi=COUGH_NOISE_PARTS[part]),
        window_s=rec.task.window_seconds, notes=notes,
    )


def emotion_sources(data: Path, part: str, recipe: str = "emotion") -> StreamSources:
    """Events: whole utterances of the held-out part of the emotion split (unseen TESS words, the
    RAVDESS holdout actors for test). Background: only a quiet noise bed in the pauses."""
    from edgekd_train.prepare import load_clips, protocol_split

    _check_part(part)
    rec = load_recipe(recipe)
    split, tests = protocol_split(load_clips(rec.corpora, data), rec.split)
    events = list(getattr(split, part))
    notes = {"events": f"whole utterances of the {part} part of the emotion split (seed {rec.split.seed})",
             "per_corpus": {c: sum(1 for e in events if e.corpus == c) for c in sorted({e.corpus for e in events})},
             "background": {"noise": "a quiet bed of the noise recordings (their last quarter)"}}
    return StreamSources(
        task="emotion", part=part, rate=rec.task.sample_rate, events=events, background={},
        noise=_noise(data / "noise", rec.task.sample_rate, lo_hi=(0.75, 1.0)),
        window_s=rec.task.window_seconds, notes=notes,
    )


SOURCES = {"keyword": keyword_sources, "cough": cough_sources, "emotion": emotion_sources}


def task_sources(task: str, data: Path, part: str) -> StreamSources:
    if task not in SOURCES:
        raise ValueError(f"no stream sources for task {task!r}; known: {', '.join(SOURCES)}")
    return SOURCES[task](data, part)
