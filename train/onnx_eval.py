"""Score an exported ONNX model the way the device runs it: edgekd.model.Model, CPU onnxruntime.

The clips come from a split file (`Split.write`), decoded from their original files and
centre-cropped or padded to the model's window, exactly as the training side windows them.
Figures are given for the whole part and per corpus.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from train.data.audio import AudioDecodeError, fit_length, load_audio
from train.data.split import Split
from train.evaluate import Evaluation, evaluate

log = logging.getLogger(__name__)


def split_windows(
    split_path: str | Path,
    part: str,
    labels: Sequence[str],
    rate: int,
    window_samples: int,
    limit: int | None = None,
    corpus: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Windows and label indices of one part of a split; broken files are skipped with a warning."""
    split = Split.read(split_path)
    clips = split.parts()[part]
    if corpus is not None:
        clips = [c for c in clips if c.corpus == corpus]
    if limit is not None:
        clips = clips[:: max(1, len(clips) // limit)][:limit]
    index = {name: i for i, name in enumerate(labels)}
    xs, ys, skipped = [], [], 0
    for c in clips:
        if c.label not in index:
            raise ValueError(f"clip {c.path} has label {c.label!r}, which the model's labels {list(labels)} lack")
        try:
            x = load_audio(c.path, rate)
        except AudioDecodeError as exc:
            skipped += 1
            log.warning("skipping %s", exc)
            continue
        xs.append(fit_length(x, window_samples, "center"))
        ys.append(index[c.label])
    if not xs:
        raise ValueError(f"no decodable clips in part {part!r} of {split_path}")
    return np.stack(xs).astype(np.float32), np.asarray(ys, dtype=np.int64)


def evaluate_onnx_on_split(
    model_path: str | Path, split_path: str | Path, part: str = "test", batch_size: int = 32
) -> tuple[dict[str, Evaluation], dict[str, Any]]:
    """Evaluations of the ONNX file on `part` (all clips) and on each corpus within it."""
    from edgekd.model import Model

    model = Model(model_path)
    meta = model.meta
    split = Split.read(split_path)
    corpora = sorted({c.corpus for c in split.parts()[part]})
    evals: dict[str, Evaluation] = {}
    all_logits, all_y = [], []
    for corpus in corpora:
        x, y = split_windows(split_path, part, meta.labels, meta.sample_rate, meta.window_samples, corpus=corpus)
        logits = np.concatenate([model.logits(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
        evals[f"{part}_{corpus}"] = evaluate(logits, y, meta.labels)
        all_logits.append(logits)
        all_y.append(y)
    evals[part] = evaluate(np.concatenate(all_logits), np.concatenate(all_y), meta.labels)
    info = {"model": str(model_path), "sha256": model.sha256, "split": str(split_path), "part": part,
            "runtime": "edgekd.model.Model (onnxruntime CPU)", "windows": "centre crop/pad of each original file"}
    return evals, info
