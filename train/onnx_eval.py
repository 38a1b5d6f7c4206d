"""Score an exported ONNX model the way the device runs it: edgekd.model.Model, CPU onnxruntime.

The clips come from a split file (`Split.write`), decoded from their original files and
centre-cropped or padded to the model's window, exactly as the training side windows them.
Figures are given for the whole part and per corpus.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgekd_train.data.audio import AudioDecodeError, fit_length, load_audio
from edgekd_train.data.split import Split
from edgekd_train.evaluate import Evaluation, evaluate

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


def one_thread_session(path: str | Path):
    """An onnxruntime CPU session on one thread (the figures of a one-core device), quiet."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(os.fspath(path), so, providers=["CPUExecutionProvider"])


def latency_ms(sess, window: np.ndarray, runs: int = 30) -> float:
    """Median wall time of one single-window inference (after two warm-up runs)."""
    name = sess.get_inputs()[0].name
    x = np.ascontiguousarray(window[None], dtype=np.float32)
    for _ in range(2):
        sess.run(None, {name: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def measure_onnx(path: str | Path, window: np.ndarray) -> dict[str, Any]:
    """MACs and stored weights counted from the graph (a front end's constant DFT and mel matrices
    included), file size and one-thread latency of an ONNX file."""
    from edgekd.bench.graphcount import count_graph

    path = Path(path)
    graph = count_graph(path, len(window))
    return {"file": str(path), "graph_weights": graph.params, "macs_per_window": graph.macs,
            "bytes": path.stat().st_size, "latency_ms_1thread": latency_ms(one_thread_session(path), window)}
