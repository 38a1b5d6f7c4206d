"""Derived figures, ratios, provider choice and the table, from fixed measurements (no timing)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgekd.bench.measure import Timing
from edgekd.bench.peak import Peak
from edgekd.bench.report import format_table
from edgekd.bench.results import add_ratios, latency_stats, model_result
from edgekd.bench.run import resolve_providers
from edgekd.model import CPU, CUDA, TENSORRT
from edgekd.contract import ModelMetadata


def _loaded(tmp_path: Path, name: str, size: int, providers=(CPU,)):
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(b"x" * size)
    meta = ModelMetadata(
        task="t", labels=("a", "b"), sample_rate=16000, window_samples=16000, multi_label=False,
        name=name, version="1",
    )
    model = SimpleNamespace(meta=meta, short_hash="0123456789ab", providers=providers)
    return SimpleNamespace(path=path, model=model, load_s=0.02)


def _timing(ms: list[float], cpu_s: float) -> Timing:
    return Timing(latencies_ns=np.array([int(m * 1e6) for m in ms]), cpu_s=cpu_s, wall_s=sum(ms) / 1e3, warmup=3)


def test_latency_stats_of_known_values():
    stats = latency_stats(np.arange(1, 101, dtype=np.int64) * 1_000_000)  # 1..100 ms
    assert stats["min"] == 1.0 and stats["max"] == 100.0
    assert stats["p50"] == pytest.approx(50.5)
    assert stats["p99"] == pytest.approx(99.01)
    assert stats["mean"] == pytest.approx(50.5)
    assert stats["p50"] <= stats["p95"] <= stats["p99"] <= stats["max"]


def test_derived_figures_follow_their_definitions(tmp_path):
    graph = {"macs": 10_000_000, "int8_macs": 0, "params": 1000}
    peak = Peak(fp32_gflops=100.0, int8_gops=400.0, threads=1, method="test")
    r = model_result(
        _loaded(tmp_path, "m", 4096), _timing([2.0] * 10, cpu_s=0.02), hop_s=0.25, graph=graph,
        graph_note=None, memory={"session_peak_bytes": 5}, peak=peak, providers_requested=[CPU],
    )
    assert r["latency_ms"]["mean"] == pytest.approx(2.0)
    assert r["windows_per_s"] == pytest.approx(500.0)
    assert r["rtf"] == pytest.approx(0.002)  # 2 ms for a 1 s window
    assert r["cpu_ms_per_window"] == pytest.approx(2.0)
    assert r["models_per_core"] == pytest.approx(125.0)  # 250 ms hop / 2 ms per window
    assert r["achieved_gflops"] == pytest.approx(10.0)  # 2 x 1e7 / 2 ms
    assert r["peak_fraction"] == pytest.approx(0.1)  # 0.2 ms at 100 GFLOP/s vs 2 ms
    assert r["file_bytes"] == 4096 and r["windows"] == 10
    assert r["provider_note"] == "as requested"


def test_int8_macs_are_set_against_the_int8_peak(tmp_path):
    graph = {"macs": 10_000_000, "int8_macs": 10_000_000, "params": 1000}
    peak = Peak(fp32_gflops=100.0, int8_gops=400.0, threads=1, method="test")
    r = model_result(
        _loaded(tmp_path, "q", 10), _timing([1.0] * 4, cpu_s=0.004), hop_s=0.25, graph=graph,
        graph_note=None, memory=None, peak=peak, providers_requested=[CPU],
    )
    assert r["peak_fraction"] == pytest.approx(0.05)  # 0.05 ms at 400 GOP/s vs 1 ms


def test_two_models_give_ratios_to_the_baseline(tmp_path):
    results = []
    for name, ms, macs in (("big", 10.0, 1_000_000), ("small", 0.5, 10_000)):
        results.append(model_result(
            _loaded(tmp_path, name, 1000 if name == "big" else 10), _timing([ms] * 5, cpu_s=5 * ms / 1e3),
            hop_s=0.25, graph={"macs": macs, "int8_macs": 0, "params": macs // 100}, graph_note=None,
            memory={"session_peak_bytes": 100 if name == "big" else 25}, peak=None, providers_requested=[CPU],
        ))
    add_ratios(results, 0)
    small = results[1]["ratios"]
    assert small["baseline"] == "big"
    assert small["speedup_p50"] == pytest.approx(20.0)
    assert small["models_per_core"] == pytest.approx(20.0)
    assert small["speedup_cpu"] == pytest.approx(20.0)
    assert small["macs"] == pytest.approx(0.01)
    assert small["file_bytes"] == pytest.approx(0.01)
    assert small["session_peak_bytes"] == pytest.approx(0.25)
    assert results[0]["ratios"]["speedup_p50"] == 1.0
    add_ratios(results, 1)
    assert results[0]["ratios"]["speedup_p50"] == pytest.approx(0.05)


def test_provider_fallback_is_noted(tmp_path):
    r = model_result(
        _loaded(tmp_path, "m", 1), _timing([1.0], cpu_s=0.001), hop_s=0.25, graph=None, graph_note=None,
        memory=None, peak=None, providers_requested=[CUDA, CPU],
    )
    assert r["provider_note"] == f"{CUDA} not available here; ran on {CPU}"
    assert r["achieved_gflops"] is None and r["peak_fraction"] is None


def test_auto_providers_add_gpus_only_when_present():
    sets, notes = resolve_providers(("auto",), [CPU])
    assert sets == [(CPU,)] and notes == []
    sets, notes = resolve_providers(("auto",), [TENSORRT, CUDA, CPU])
    assert sets == [(CPU,), (CUDA, CPU), (TENSORRT, CUDA, CPU)]


def test_an_explicit_missing_provider_runs_on_cpu_with_a_note():
    sets, notes = resolve_providers(("cuda",), [CPU])
    assert sets == [(CUDA, CPU)]
    assert "onnxruntime-gpu" in notes[0]


def test_table_has_a_column_per_model_and_the_device(tmp_path):
    results = [
        model_result(
            _loaded(tmp_path, name, 2048), _timing([1.0, 2.0, 3.0], cpu_s=0.006), hop_s=0.25,
            graph={"macs": 1000, "int8_macs": 0, "params": 10}, graph_note=None, memory=None, peak=None,
            providers_requested=[CPU],
        )
        for name in ("teacher", "wav2tiny")
    ]
    add_ratios(results, 0)
    report = {
        "device": {
            "cpu": "Test CPU", "board": None, "machine": "x86_64", "usable_cpus": 2, "logical_cpus": 2,
            "memory_bytes": 2**30, "cpu_flags": ["avx2"], "os": "Linux", "python": "3.11",
            "onnxruntime": "1.0", "onnxruntime_providers": [CPU],
        },
        "settings": {"threads": 1, "hop_ms": 250.0, "seconds": 5.0, "windows": None, "warmup": 10},
        "peak": None, "baseline": "teacher", "models": results, "notes": ["a note"],
    }
    text = format_table(report)
    header = next(line for line in text.splitlines() if "teacher" in line and "wav2tiny" in line)
    assert header.split() == ["teacher", "wav2tiny"]
    assert "Test CPU" in text and "note: a note" in text
    assert "latency p99" in text and "models / core" in text
    assert "e2e" not in text  # no e2e rows without --e2e

    results[0]["e2e"] = {"error": "edgekd serve of teacher.onnx gave no result in 60 s: boom"}
    results[1]["e2e"] = {
        "results": 58, "results_expected": 60, "kept_up": True, "cpu_s_per_audio_s": 0.0125,
        "audio_to_subscriber_ms": {"p50": 30.0, "p99": 60.0}, "pipeline_ms": {"p50": 1.0, "p99": 2.0},
    }
    rows = {line.split("  ")[0]: line for line in format_table(report).splitlines()}
    assert rows["e2e results / expected"].split()[-3:] == ["(see", "notes)", "58/60"]
    assert rows["e2e daemon CPU / audio s"].split()[-3:] == ["-", "1.25", "%"]


def test_column_labels_name_file_and_provider_only_when_needed(tmp_path):
    from edgekd.bench.run import _labels

    a, b, c = (_loaded(tmp_path, n, 1) for n in ("m", "m", "other"))
    b.path = tmp_path / "m-int8.onnx"
    assert _labels([a, b, c], [(CPU,)], 3) == ["m (m.onnx)", "m (m-int8.onnx)", "other"]
    both = _labels([a, c, a, c], [(CPU,), (CUDA, CPU)], 2)
    assert both == ["m@cpu", "other@cpu", "m@cuda", "other@cuda"]
