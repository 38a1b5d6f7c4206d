"""A compact copy of a clip list, for shipping to a remote GPU machine.

`pack_corpus(clips, out_dir)` decodes each clip at `rate`, trims leading and
trailing silence (keeping a margin; `trim=False` keeps clips whole), encodes it as OGG/Opus through soundfile
and writes `manifest.json` (path, label, group, corpus, original path, the
kept span). `load_corpus("packed", out_dir)` lists the clips back.

Why Opus and not int16 arrays: measured on TESS + RAVDESS (calm dropped,
3,217 clips, about 2.2 s each after trimming), int16 `.npz` (zlib) would take
about 150 MiB, over the ~60 MiB a device call carries; Opus at
compression level 0.85 (about 40 kbit/s) takes under 40 MiB and decodes to a
median SNR of about 24 dB against the trimmed original. The GPU machine has
no soundfile, so carry its wheels with the data (see `.devdata/READY-emotion`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgekd_train.data.audio import DEFAULT_RATE, AudioDecodeError, load_audio
from edgekd_train.data.clips import Clip, label_counts
from edgekd_train.data.corpus_base import CorpusError, read_metadata_json, require_dir
from edgekd_train.data.trim import FRAME_S, speech_span

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "edgekd-packed"
FORMAT_VERSION = 1
_EXPECTED = f"a folder written by edgekd_train.data.pack.pack_corpus, holding {MANIFEST}"


@dataclass
class PackReport:
    out_dir: Path
    clips: int = 0
    bytes: int = 0
    seconds_before: float = 0.0
    seconds_after: float = 0.0
    skipped: list[dict[str, str]] = field(default_factory=list)
    labels: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def mib(self) -> float:
        return self.bytes / 2**20


def snr_db(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Waveform SNR (dB) of `decoded` against `reference`, over their common length."""
    m = min(len(reference), len(decoded))
    noise = np.sum(np.square(reference[:m] - decoded[:m], dtype=np.float64))
    return float(10 * np.log10(np.sum(np.square(reference[:m], dtype=np.float64)) / max(noise, 1e-20)))


def _relative_names(clips: Sequence[Clip]) -> list[str]:
    """`corpus/<path below the corpus's common folder>.ogg` for each clip, unique."""
    roots: dict[str, str] = {}
    for corpus in {c.corpus for c in clips}:
        parents = [str(c.path.parent) for c in clips if c.corpus == corpus]
        roots[corpus] = os.path.commonpath(parents) if parents else ""
    names = []
    for c in clips:
        below = Path(os.path.relpath(c.path, roots[c.corpus]))
        names.append((Path(c.corpus) / below.parent / (below.name + ".ogg")).as_posix())
    if len(set(names)) != len(names):
        raise ValueError("two clips map to the same packed name; pack their corpora separately")
    return names


def pack_corpus(
    clips: Sequence[Clip],
    out_dir: str | Path,
    rate: int = DEFAULT_RATE,
    compression_level: float = 0.85,
    floor_db: float = 40.0,
    margin_s: float = 0.15,
    trim: bool = True,
) -> PackReport:
    """Write OGG/Opus copies of `clips` (silence-trimmed unless `trim` is False) and `manifest.json`.

    Untrimmed packs are what a model meets on the device: a trimmed copy moves the centre
    window of every clip, and models trained on it lost about 4 points of RAVDESS accuracy on the originals.

    A clip that cannot be decoded is skipped with a warning and listed under
    `skipped` in the manifest. The manifest is written last, so a folder with
    one is complete.
    """
    import soundfile as sf

    if rate not in (8000, 12000, 16000, 24000, 48000):
        raise ValueError(f"Opus takes 8, 12, 16, 24 or 48 kHz, not {rate} Hz")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = PackReport(out_dir)
    entries: list[dict[str, Any]] = []
    for clip, name in zip(clips, _relative_names(clips)):
        try:
            x = load_audio(clip.path, rate)
        except AudioDecodeError as exc:
            log.warning("pack: skipping %s", exc)
            report.skipped.append({"original": str(clip.path), "reason": exc.reason})
            continue
        start, end = speech_span(x, rate, floor_db, margin_s) if trim else (0, len(x))
        target = out_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(target), x[start:end], rate, format="OGG", subtype="OPUS", compression_level=compression_level)
        report.clips += 1
        report.bytes += target.stat().st_size
        report.seconds_before += len(x) / rate
        report.seconds_after += (end - start) / rate
        entries.append(
            {
                "path": name,
                "label": clip.label,
                "group": clip.group,
                "corpus": clip.corpus,
                "original": str(clip.path),
                "span": [start, end],
                "meta": clip.meta,
            }
        )
    for corpus in sorted({e["corpus"] for e in entries}):
        report.labels[corpus] = label_counts(Clip(Path(e["path"]), e["label"], e["group"], corpus) for e in entries if e["corpus"] == corpus)
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "rate": rate,
        "codec": "ogg/opus",
        "compression_level": compression_level,
        "trim": {"floor_db": floor_db, "margin_s": margin_s, "frame_s": FRAME_S} if trim else None,
        "labels": report.labels,
        "clips": entries,
        "skipped": report.skipped,
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str) + "\n")
    report.bytes += (out_dir / MANIFEST).stat().st_size
    log.info(
        "packed %d clips (%.0f s -> %.0f s of audio) into %.1f MiB at %s; %d skipped",
        report.clips, report.seconds_before, report.seconds_after, report.mib, out_dir, len(report.skipped),
    )
    return report


def read_manifest(root: str | Path) -> dict[str, Any]:
    root = require_dir("packed", root, _EXPECTED)
    manifest = read_metadata_json("packed", root, MANIFEST, dict, _EXPECTED)
    if manifest.get("format") != FORMAT:
        raise CorpusError("packed", root, f"{MANIFEST} is not an {FORMAT} manifest", _EXPECTED)
    if manifest.get("version") != FORMAT_VERSION:
        raise CorpusError("packed", root, f"{MANIFEST} has version {manifest.get('version')!r}; this code reads {FORMAT_VERSION}", "a re-pack with this version of edgekd_train.data.pack")
    return manifest


def load_packed(root: str | Path, corpus: str | None = None) -> list[Clip]:
    """The clips of a packed folder (optionally one corpus of it). Decodes nothing."""
    root = Path(root)
    manifest = read_manifest(root)
    clips = [
        Clip(root / e["path"], e["label"], e["group"], e["corpus"], {**e.get("meta", {}), "original": e["original"], "span": e["span"]})
        for e in manifest["clips"]
        if corpus is None or e["corpus"] == corpus
    ]
    if not clips:
        have = sorted({e["corpus"] for e in manifest["clips"]})
        raise CorpusError("packed", root, f"no clips of corpus {corpus!r} (it holds {have})", _EXPECTED)
    return clips


def verify_packed(root: str | Path, n: int = 20, seed: int = 0) -> list[float]:
    """SNR (dB) of `n` random packed clips against their originals' kept span."""
    root = Path(root)
    manifest = read_manifest(root)
    entries = manifest["clips"]
    picks = np.random.default_rng(seed).choice(len(entries), size=min(n, len(entries)), replace=False)
    snrs = []
    for i in picks:
        e = entries[int(i)]
        start, end = e["span"]
        original = load_audio(e["original"], manifest["rate"])[start:end]
        snrs.append(snr_db(original, load_audio(root / e["path"], manifest["rate"])))
    return snrs
