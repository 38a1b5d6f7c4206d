"""`edgekd bench` times both paths of a model that has them: whole windows and the split path."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekd.bench.measure import Budget, load
from edgekd.bench.report import format_table
from edgekd.bench.stream import time_both_paths
from edgekd.model import ModelRuntimeOptions
from edgekd_train.stream_parts import add_stream_parts

from tests.onnx_models import version1_copy  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def both(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("cut")
    older = version1_copy(ROOT / "models" / "wav2tiny-keyword.onnx", folder / "v1.onnx")
    cut = folder / "wav2tiny-keyword.onnx"
    add_stream_parts(older, cut)
    return [cut, older]


def test_both_paths_are_timed_at_the_hop_rounded_to_whole_frames(both):
    loaded = load(both, ModelRuntimeOptions())
    out = time_both_paths(loaded, 250.0, Budget(windows=12, warmup=2))
    split = out[0]
    assert split["requested_hop_ms"] == 250.0 and split["hop_ms"] == 255.0
    for path in ("whole", "split"):
        assert split[path]["windows"] == 12
        assert split[path]["cpu_ms_per_audio_s"] == pytest.approx(split[path]["cpu_ms_per_window"] * 1000 / 255.0)
    assert split["speedup_cpu"] > 0
    assert "stream-parts" in out[1]["unavailable"]  # a version-1 file has no split path


def test_the_table_shows_both_paths_side_by_side():
    def result(stream):
        lat = {"p50": 1.0, "p95": 1.0, "p99": 1.0, "max": 1.0, "mean": 1.0}
        return {"name": "m", "file_bytes": 1, "sha256": "x", "window_s": 1.0, "sample_rate": 16000,
                "providers_used": ["CPUExecutionProvider"], "load_s": 0.1, "windows": 3, "latency_ms": lat,
                "windows_per_s": 1.0, "rtf": 1e-3, "cpu_ms_per_window": 1.0, "models_per_core": 250.0,
                "memory": None, "graph": None, "achieved_gflops": None, "peak_fraction": None, "e2e": None,
                "stream": stream, "ratios": {k: 1.0 for k in ("speedup_p50", "speedup_cpu", "macs", "file_bytes")}}  # fmt: skip

    paths = {p: {"latency_ms": {"p50": v}, "cpu_ms_per_audio_s": 4 * v, "models_per_core": 250 / v, "windows": 3}
             for p, v in (("whole", 0.5), ("split", 0.25))}  # fmt: skip
    report = {"device": {"cpu": "cpu", "machine": "x", "usable_cpus": 1, "logical_cpus": 1, "memory_bytes": None,
                         "cpu_flags": [], "os": "os", "python": "3", "onnxruntime": "1", "onnxruntime_providers": []},
              "settings": {"threads": 1, "hop_ms": 250.0, "windows": 3, "seconds": 1, "warmup": 1},
              "baseline": "m", "notes": [],
              "models": [result({"hop_ms": 255.0, **paths, "speedup_cpu": 2.0}),
                         result({"unavailable": "no checked front end"})]}  # fmt: skip
    table = format_table(report)
    assert "stream: hop" in table and "255 ms" in table and "no split path" in table
    assert "stream: split speedup (CPU)" in table and "2x" in table
    assert "2.000 ms" in table and "1.000 ms" in table  # CPU per audio second, whole and split


def test_a_file_with_a_step_graph_gets_its_stateful_path_timed_too(tmp_path):
    import numpy as np

    from edgekd.audio.decode import decode_file
    from tests.unit.test_stateful_path import ASSETS, RATE, streaming_model

    speech = np.concatenate([decode_file(p, RATE).samples for p in ASSETS]).astype(np.float32)
    path = streaming_model(tmp_path / "streamtcn-keyword.onnx", np.stack([speech[:RATE], speech[RATE : 2 * RATE]]))
    out = time_both_paths(load([path], ModelRuntimeOptions()), 80.0, Budget(windows=10, warmup=2))[0]
    assert out["hop_ms"] == 75.0
    for path_name in ("whole", "split", "stateful"):
        assert out[path_name]["windows"] == 10
    assert out["stateful"]["cpu_ms_per_audio_s"] == pytest.approx(out["stateful"]["cpu_ms_per_window"] * 1000 / 75.0)
    assert out["stateful_speedup_cpu"] > 0
