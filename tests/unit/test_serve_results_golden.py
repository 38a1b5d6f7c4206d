"""serve's results for real clips stay what they were: the daemon's per-window work may get faster, never different.

The golden file holds the JSON results (every field but the random id and the timings) that serve's
pipeline gave for five bundled speech clips with a few NaN and full-scale samples, on the shipped
Wav2Tiny keyword model (whole windows and split path) and on a numpy-only scorer (no onnxruntime, so
its figures do not depend on the CPU's kernels). Written by running this file as a script:

    PYTHONPATH=TREE .venv/bin/python tests/unit/test_serve_results_golden.py --write tests/fixtures/serve_results.json

The numpy scorer's results must match exactly. The ONNX model's labels, events, times and sequence
numbers must match exactly and its scores within 1e-6 (onnxruntime's kernels differ between CPUs);
on the machine that wrote the file they match exactly.
"""

from __future__ import annotations

import json
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "fixtures" / "serve_results.json"
CLIPS = ("YAF_search_happy.flac", "YAF_bar_angry.flac", "YAF_search_sad.flac", "YAF_search_ps.flac", "YAF_search_neutral.flac")
RATE = 16000
CHUNK = 1024
HOP_MS = 250.0


def clip_audio() -> np.ndarray:
    from edgekd.audio.decode import decode_file

    x = np.concatenate([decode_file(ROOT / "edgekd" / "assets" / c, RATE).samples for c in CLIPS]).astype(np.float32)
    x[5000:5003] = np.nan  # replaced by silence
    x[9000] = np.inf
    x[20000:20400] = 1.0  # full scale: counted as clipping
    x[40000:56000] += 0.2  # a second with a DC offset
    return x


class NumpyScorer:
    """A deterministic stand-in for a model: logits from the window's level and shape, softmax as Model does."""

    def __init__(self, labels: tuple[str, ...]) -> None:
        from edgekd.contract import ModelMetadata

        self.meta = ModelMetadata(task="scorer", labels=labels, sample_rate=RATE, window_samples=RATE,
                                  multi_label=False, name="numpy-scorer", version="1")  # fmt: skip
        self.short_hash = "000000000000"

    def scores(self, windows: np.ndarray) -> np.ndarray:
        from edgekd.model import logits_to_scores

        w = windows.astype(np.float64)
        parts = np.array_split(np.abs(w), len(self.meta.labels), axis=1)
        logits = np.stack([p.mean(axis=1) * 40.0 for p in parts], axis=1).astype(np.float32)
        return logits_to_scores(logits, multi_label=False)


def results(scorer, split: bool, post=None) -> list[dict]:
    from edgekd.payloads import ResultPayload
    from edgekd.pipeline import ModelRunner, Pipeline, RunnerSpec
    from edgekd.postprocess import PostConfig
    from edgekd.sink import MemorySink

    hop = round(HOP_MS * RATE / 1e3)
    runner = ModelRunner(scorer, RunnerSpec(hop, post or PostConfig(), gate_db=None))
    sink = MemorySink()
    pipe = Pipeline([runner], RATE, sink, "golden", t0=datetime(2026, 12, 7, tzinfo=timezone.utc), run_id="1",
                    split=split)  # fmt: skip
    x = clip_audio()
    for pos in range(0, len(x), CHUNK):
        pipe.feed(x[pos : pos + CHUNK].copy())
    pipe.finish()
    h = pipe.health
    out = [{"health": [h.samples, h.nonfinite, h.clipped, h.dc_blocks, h.last_dc]}]
    for r in sink.results:
        assert ResultPayload.model_validate_json(r.to_json()) == r  # what the pipeline built passes validation
        d = json.loads(r.to_json())
        del d["id"], d["latency_ms"]
        out.append(d)
    return out


def onnx_model(tmp: Path):
    from edgekd.model import Model
    from edgekd_train.stream_parts import add_stream_parts

    from tests.onnx_models import version1_copy

    # the shipped graph as a version-1 file (no operating point), cut into its stream parts
    older = version1_copy(ROOT / "models" / "wav2tiny-keyword.onnx", tmp / "v1.onnx")
    path = tmp / "wav2tiny-keyword.onnx"
    add_stream_parts(older, path)
    return Model(path)


def all_results() -> dict[str, list[dict]]:
    from edgekd.postprocess import PostConfig

    with tempfile.TemporaryDirectory() as tmp:
        model = onnx_model(Path(tmp))
        labels = tuple(model.meta.labels)
        smoothed = PostConfig(smoothing=3, threshold=0.3, refractory_s=1.0, background=(labels[0],))
        return {
            "numpy": results(NumpyScorer(labels[:4]), split=False),
            "numpy_smoothed_events": results(NumpyScorer(labels[:4]), split=False,
                                             post=PostConfig(smoothing=3, threshold=0.3, refractory_s=0.6, mode="events")),
            "onnx_whole": results(model, split=False),
            "onnx_split": results(model, split=True),
            "onnx_split_smoothed": results(model, split=True, post=smoothed),
        }


def close(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-6
    return a == b


def test_results_equal_the_golden_file() -> None:
    golden = json.loads(GOLDEN.read_text())
    now = all_results()
    assert now.keys() == golden.keys()
    for name in golden:
        assert len(now[name]) == len(golden[name]) > 3, name
        if name.startswith("numpy"):
            assert now[name] == golden[name], name
            continue
        for got, want in zip(now[name], golden[name]):
            # the file's hash is not a result: the same graph is written again when its metadata changes
            skip = ("score", "scores", "model_hash")
            assert {k: v for k, v in got.items() if k not in skip} == {k: v for k, v in want.items() if k not in skip}, name
            assert close({k: v for k, v in got.items() if k != "model_hash"},
                         {k: v for k, v in want.items() if k != "model_hash"}), (name, got, want)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--write":
        raise SystemExit(__doc__)
    sys.path.insert(0, str(ROOT))
    Path(sys.argv[2]).write_text(json.dumps(all_results(), indent=0, sort_keys=True) + "\n")
