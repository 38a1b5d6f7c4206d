"""From a recipe to windows: list the corpora, split them without leaks, decode fixed windows.

Split protocol, per corpus: a `[split.holdout.<corpus>]` rule (e.g. RAVDESS `actor = [15, ...]`)
makes the matching clips that corpus's test part; otherwise whole groups (TESS words) go to test
by `group_split`. Validation is then carved, again by whole groups, from what is left. Each
corpus's test part is also a named test subset, so figures are reported per corpus.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from edgekd_train.data.clips import Clip
from edgekd_train.data.corpora import load_corpus
from edgekd_train.data.split import Split, group_split, holdout
from edgekd_train.recipe import CorpusSpec, Recipe, SplitSpec

log = logging.getLogger(__name__)


def load_clips(corpora: Sequence[CorpusSpec], data_root: str | Path) -> dict[str, list[Clip]]:
    """Clips per corpus (the clips' own corpus name, so a packed copy groups like the original);
    a corpus root is relative to `data_root` unless absolute. A corpus's `label` replaces every
    clip's label; `thin` keeps every thin-th clip."""
    out: dict[str, list[Clip]] = {}
    for spec in corpora:
        root = Path(spec.root)
        root = root if root.is_absolute() else Path(data_root) / root
        clips = load_corpus(spec.name, root, **spec.options)[:: spec.thin]
        if spec.label is not None:
            clips = [replace(c, label=spec.label) for c in clips]
        for c in clips:
            out.setdefault(c.corpus, []).append(c)
        log.info("corpus %s: %d clips from %s", spec.name, len(clips), root)
    return out


def protocol_split(by_corpus: dict[str, list[Clip]], spec: SplitSpec) -> tuple[Split, dict[str, list[Clip]]]:
    """The combined split and the test clips of each corpus (named test subsets)."""
    train, val, test = [], [], []
    tests: dict[str, list[Clip]] = {}
    for corpus, clips in by_corpus.items():
        rule = spec.holdout.get(corpus)
        if rule:
            def held(c: Clip, rule=rule) -> bool:
                return all(c.meta.get(k) in values for k, values in rule.items())

            rest, corpus_test = holdout(clips, held)
            if not corpus_test:
                raise ValueError(f"split holdout {rule} matches no {corpus} clip; check the meta key and values")
            part = group_split(rest, val=spec.val / (1 - spec.test) if spec.test < 1 else spec.val, test=0.0, seed=spec.seed)
        else:
            part = group_split(clips, val=spec.val, test=spec.test, seed=spec.seed)
            corpus_test = part.test
        train += part.train
        val += part.val
        test += corpus_test
        tests[corpus] = corpus_test
    split = Split(train, val, test, spec.seed, "group")
    leaks = split.leaks()
    if leaks:
        raise ValueError(f"the split leaks groups across parts: {sorted(leaks)[:5]}")
    return split, tests


@dataclass
class Windows:
    """Decoded, fixed-length windows and label indices of every part and test subset."""

    x: dict[str, np.ndarray]  # "train", "val", "test_<corpus>"
    y: dict[str, np.ndarray]
    skipped: dict[str, int]
    corpus: dict[str, np.ndarray] = field(default_factory=dict)  # each window's corpus name, per part


def centre_crop(x: np.ndarray, samples: int) -> np.ndarray:
    """The centre `samples` of each `[n, longer]` window (the windows every evaluation sees)."""
    if x.shape[-1] < samples:
        raise ValueError(f"windows of {x.shape[-1]} samples are shorter than {samples}")
    start = (x.shape[-1] - samples) // 2
    return x[..., start : start + samples]


def decode(parts: dict[str, list[Clip]], labels: Sequence[str], rate: int, window_samples: int,
           lengths: dict[str, int] | None = None) -> Windows:
    """Decode each part's clips once (centre crop or pad); broken files are skipped and counted.

    `lengths` gives some parts a longer window (e.g. the training part, from which the
    augmentation crops a random `window_samples` each time it is seen)."""
    from edgekd_train.data.dataset import ClipDataset

    xs, ys, skipped, corpus = {}, {}, {}, {}
    for name, clips in parts.items():
        ds = ClipDataset(clips, labels, rate=rate, window_samples=(lengths or {}).get(name, window_samples))
        xs[name], ys[name], skipped[name] = ds.waveforms(), ds.targets.copy(), ds.skipped
        corpus[name] = np.array([c.corpus for c in ds.clips])
        log.info("%s: %d windows (%d skipped)", name, len(ds), ds.skipped)
    return Windows(xs, ys, skipped, corpus)


def prepare(recipe: Recipe, data_root: str | Path, thin: int = 1) -> tuple[Split, dict[str, list[Clip]], Windows]:
    """Split and windows; `thin` > 1 keeps every thin-th clip of each corpus (quick smoke runs).

    With `[distill] train_window_seconds` in the recipe the training windows are that long
    (centred on the clip), for the augmentation to crop from; every other part has the task's window.
    """
    by_corpus = {k: v[::thin] for k, v in load_clips(recipe.corpora, data_root).items()}
    split, tests = protocol_split(by_corpus, recipe.split)
    parts = {"train": split.train, "val": split.val, **{f"test_{k}": v for k, v in tests.items()}}
    lengths = {"train": train_window_samples(recipe)}
    windows = decode(parts, recipe.task.labels, recipe.task.sample_rate, recipe.task.window_samples, lengths)
    return split, tests, windows


def train_window_samples(recipe: Recipe) -> int:
    """Samples per training window: `[distill] train_window_seconds`, else the task's window."""
    seconds = recipe.distill.train_window_seconds
    if seconds is None:
        return recipe.task.window_samples
    samples = int(round(float(seconds) * recipe.task.sample_rate))
    if samples < recipe.task.window_samples:
        raise ValueError(f"[distill] train_window_seconds={seconds} is shorter than the task's window "
                         f"({recipe.task.window_seconds} s): the augmentation crops the window from it")
    return samples


def noise_bank(folder: str | Path, rate: int, seconds_per_file: float | None = None) -> np.ndarray:
    """Background noise for augmentation: the folder's recordings (each cut to `seconds_per_file`)
    concatenated into one float32 array."""
    from edgekd_train.data.audio import find_audio_files, load_audio

    files = find_audio_files(folder)
    if not files:
        raise FileNotFoundError(f"no audio files in noise folder {folder}")
    parts = []
    for f in files:
        x = load_audio(f, rate)
        parts.append(x[: int(seconds_per_file * rate)] if seconds_per_file else x)
    return np.concatenate(parts).astype(np.float32)
