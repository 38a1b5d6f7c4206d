"""Folder-shaped corpora: Speech Commands, ESC-50, folder-per-label, CSV manifest."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from edgekd_train.data.audio import AUDIO_EXTENSIONS
from edgekd_train.data.clips import Clip
from edgekd_train.data.corpus_base import CorpusError, Skips, describe_contents, find_audio, read_metadata_csv, require_dir

UNKNOWN = "_unknown_"
SILENCE = "_silence_"
BACKGROUND = "_background_noise_"


def speaker_of(path: Path) -> str | None:
    """Speech Commands speaker id: the last `_` token before `_nohash_`, or None."""
    name = path.name
    if "_nohash_" not in name:
        return None
    return name.split("_nohash_")[0].split("_")[-1]


def _list_key(rel: str) -> str:
    """`yes/a_nohash_0.wav`, `yes/a_nohash_0.ogg` and `yes/a_nohash_0.wav.ogg` -> `yes/a_nohash_0`."""
    while Path(rel).suffix.lower() in AUDIO_EXTENSIONS:
        rel = rel[: -len(Path(rel).suffix)]
    return rel


def _read_list(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    return {_list_key(line.strip()) for line in path.read_text().splitlines() if line.strip()}


def load_speech_commands(root: str | Path, keywords: Sequence[str] | None = None) -> list[Clip]:
    """Speech Commands v1/v2: `WORD/SPEAKER_nohash_N.ext`; group = the speaker.

    Every word folder becomes a label, unless `keywords` is given: then other
    words become `_unknown_`. `_background_noise_` is left out (use it as an
    augmentation noise folder). Where validation_list.txt / testing_list.txt
    exist, `meta["official"]` says which official part a clip is in.
    Clips without a speaker (e.g. `_silence_/1024.ogg`) are their own group.
    """
    expected = "one folder per word (yes/, no/, _unknown_/ ...) holding SPEAKER_nohash_N.wav files"
    root = require_dir("speech_commands", root, expected)
    validation = _read_list(root / "validation_list.txt")
    testing = _read_list(root / "testing_list.txt")
    keep = set(keywords) if keywords is not None else None
    clips = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name == BACKGROUND:
            continue
        word = folder.name
        if keep is None or word in keep or word in (UNKNOWN, SILENCE):
            label = word
        else:
            label = UNKNOWN
        for path in find_audio(folder):
            key = _list_key(path.relative_to(root).as_posix())
            official = "testing" if key in testing else "validation" if key in validation else "training"
            speaker = speaker_of(path)
            group = speaker if speaker is not None else f"{word}/{path.stem}"
            meta = {"word": word, "speaker": speaker, "official": official}
            clips.append(Clip(path, label, group, "speech_commands", meta))
    if not clips:
        raise CorpusError(
            "speech_commands", root, f"no clips in word folders (it holds {describe_contents(root)})", expected
        )
    return clips


def load_esc50(root: str | Path, esc10: bool = False) -> list[Clip]:
    """ESC-50: `meta/esc50.csv` + `audio/`; label = category, group = the source recording."""
    expected = "meta/esc50.csv (filename, fold, target, category, esc10, src_file) and audio/"
    root = require_dir("esc50", root, expected)
    meta_path = root / "meta" / "esc50.csv"
    if not meta_path.is_file():
        raise CorpusError("esc50", root, f"meta/esc50.csv is missing (it holds {describe_contents(root)})", expected)
    rows = read_metadata_csv("esc50", root, meta_path, {"filename", "fold", "category"}, expected)
    skips = Skips("esc50")
    clips = []
    for row in rows:
        if esc10 and row.get("esc10", "").strip().lower() != "true":
            continue
        path = root / "audio" / row["filename"]
        if not path.is_file():
            skips.skip(path, "listed in esc50.csv but missing")
            continue
        group = row.get("src_file") or path.stem
        clips.append(Clip(path, row["category"], group, "esc50", {"fold": int(row["fold"])}))
    skips.summarize()
    if not clips:
        raise CorpusError("esc50", root, "no clip listed in meta/esc50.csv was found in audio/", expected)
    return clips


def load_folder(root: str | Path, group: str = "file") -> list[Clip]:
    """Folder-per-label: `LABEL/**/*.wav`. group="file" (each file its own) or
    "parent" (the folder holding the file, e.g. one folder per speaker)."""
    if group not in ("file", "parent"):
        raise ValueError(f"folder group={group!r}: use 'file' or 'parent'")
    expected = "one folder per label holding audio files (e.g. cough/a.wav, speech/b.flac)"
    root = require_dir("folder", root, expected)
    clips = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in find_audio(folder):
            rel = path.relative_to(root)
            g = rel.as_posix() if group == "file" else path.parent.relative_to(root).as_posix()
            clips.append(Clip(path, folder.name, g, "folder", {}))
    if not clips:
        raise CorpusError("folder", root, f"no audio in label folders (it holds {describe_contents(root)})", expected)
    return clips


def load_manifest(root: str | Path) -> list[Clip]:
    """CSV manifest `path,label[,group]` (header optional); paths relative to the CSV.

    `root` is the CSV file, or a folder holding manifest.csv. group defaults to the path.
    """
    expected = "a CSV file with rows path,label[,group] (an optional header row 'path,label,group')"
    root = Path(root)
    csv_path = root / "manifest.csv" if root.is_dir() else root
    if not csv_path.is_file():
        raise CorpusError("manifest", root, "no such CSV file", expected)
    clips = []
    with csv_path.open(newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if lineno == 1 and row[0].strip().lower() == "path":
                continue
            if len(row) < 2 or not row[0].strip() or not row[1].strip():
                raise CorpusError("manifest", csv_path, f"line {lineno} is {row!r}", expected)
            path = Path(row[0].strip())
            path = path if path.is_absolute() else csv_path.parent / path
            group = row[2].strip() if len(row) > 2 and row[2].strip() else row[0].strip()
            clips.append(Clip(path, row[1].strip(), group, "manifest", {}))
    if not clips:
        raise CorpusError("manifest", csv_path, "the file lists no clips", expected)
    return clips
