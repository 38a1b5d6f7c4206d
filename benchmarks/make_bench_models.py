"""Write random-weight ONNX models to bench: a wav2vec2-base-sized teacher and the students.

    .venv/bin/python benchmarks/make_bench_models.py --out /tmp/edgekd-bench
    edgekd bench /tmp/edgekd-bench/teacher-w2v2-base.onnx /tmp/edgekd-bench/wav2small.onnx \
        /tmp/edgekd-bench/wav2tiny.onnx

Latency and memory do not depend on the weights' values, so untrained models give the cost side
of the student-versus-teacher comparison before a trained teacher is exported. The teacher is
transformers' `Wav2Vec2Config()` defaults (wav2vec2-base: 12 layers, 768 wide, 95M parameters)
with a sequence-classification head, wrapped by `edgekd_train.teacher.AudioTeacher` (raw PCM in, the
per-window normalisation inside the graph) exactly as the training side exports it. Its FP32 file
is about 380 MB: write it to a temp folder, never into the repository.

Workstation side only (torch, transformers: `pip install -e ".[train]"`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from edgekd.contract import ModelMetadata

log = logging.getLogger("make_bench_models")

LABELS = ("angry", "disgust", "fear", "happy", "neutral", "surprise", "sad")
RATE = 16000
CHOICES = ("teacher", "wav2small", "wav2tiny", "cnn")


def build(kind: str) -> tuple[nn.Module, str]:
    if kind == "teacher":
        from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

        from edgekd_train.teacher import AudioTeacher

        torch.manual_seed(0)
        config = Wav2Vec2Config(num_labels=len(LABELS))
        return AudioTeacher(Wav2Vec2ForSequenceClassification(config)), "teacher-w2v2-base"
    from edgekd_train.models import build_student

    torch.manual_seed(0)
    return build_student(kind, len(LABELS), RATE), kind


def export(model: nn.Module, name: str, path: Path, window: int) -> Path:
    """Export through the training side's own exporter (contract metadata, parity check with torch)."""
    from edgekd_train.export import export_onnx

    meta = ModelMetadata(
        task="emotion",
        labels=LABELS,
        sample_rate=RATE,
        window_samples=window,
        multi_label=False,
        name=name,
        version="0.0.0-random",
        training={"data": "none: random weights, for benchmarking cost only"},
    )
    check = (0.1 * np.random.default_rng(0).standard_normal((2, window))).astype(np.float32)
    export_onnx(model, meta, path, check)
    return path


def quantize(path: Path, window: int) -> Path:
    """The training side's INT8 copy (`edgekd_train.quantize.quantize_int8`: static QDQ, per-channel int8
    weights, the log-mel front end kept in float), calibrated on seeded noise (cost only)."""
    from edgekd_train.quantize import quantize_int8

    out = path.with_name(path.stem + "-int8.onnx")
    calib = (0.1 * np.random.default_rng(1).standard_normal((8, window))).astype(np.float32)
    report = quantize_int8(path, out, calib, bench_runs=3)
    proto = onnx.load(str(out))
    props = {p.key: p.value for p in proto.metadata_props}
    props["edgekd.model_name"] += "-int8"
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(out))
    log.info("%s: INT8 by %s quantisation", out.name, report["method"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="folder (default: a new temp folder)")
    parser.add_argument("--window-samples", type=int, default=3 * RATE, help="window at 16 kHz (default 3 s)")
    parser.add_argument("--int8", action="store_true", help="also write an INT8 copy of each student (edgekd_train.quantize)")
    parser.add_argument("--only", nargs="+", choices=CHOICES, default=["teacher", "wav2small", "wav2tiny"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out or Path(tempfile.mkdtemp(prefix="edgekd-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    repo = Path(__file__).resolve().parent.parent
    if out.resolve().is_relative_to(repo):
        print(f"make_bench_models: --out {out} is inside the repository; use a temp folder", file=sys.stderr)
        return 2
    written = []
    for kind in args.only:
        t0 = time.perf_counter()
        model, name = build(kind)
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        path = export(model, name, out / f"{name}.onnx", args.window_samples)
        log.info("%s: %d trainable params, %.1f MB, exported in %.1f s -> %s", name, params, path.stat().st_size / 1e6,
                 time.perf_counter() - t0, path)
        written.append(path)
        if args.int8 and kind != "teacher":
            written.append(quantize(path, args.window_samples))
            log.info("%s: INT8 copy %.1f MB -> %s", name, written[-1].stat().st_size / 1e6, written[-1])
    print(" ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
