"""Turn raw measurements into the figures `edgekd bench` reports, one JSON-ready dict per model.

Definitions (all per window of the model's own `window_samples`, batch 1):

- latency percentiles over the timed windows (after warm-up), in milliseconds;
- `windows_per_s` = 1 / mean latency (one stream, back to back);
- `rtf` (real-time factor) = mean latency / window duration: below 1 is faster than real time;
- `cpu_ms_per_window` = process CPU time over the timed runs / windows (all onnxruntime threads);
- `models_per_core` = hop / CPU time per window: how many such models, each classifying a new
  window every hop, one core keeps up with (= one core's second / (CPU per window x windows per
  second of audio at that hop)); at one thread CPU time is the latency;
- `achieved_gflops` = 2 x MACs / mean latency; `peak_fraction` = the time the MACs would take at
  the measured FP32 (and INT8, for integer MACs) GEMM peak / mean latency;
- ratios to the baseline: `speedup_p50` = baseline p50 / this p50 (times faster), `speedup_cpu`
  the same with CPU time per window (steadier on a shared machine: a long window is more often
  preempted, which inflates its wall time but not its CPU time), and size, MACs, params, memory
  and models-per-core as this / baseline.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from edgekd.bench.measure import Loaded, Timing
from edgekd.bench.peak import Peak

SCHEMA_VERSION = 1


def latency_stats(latencies_ns: np.ndarray) -> dict[str, float]:
    ms = latencies_ns.astype(np.float64) / 1e6
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {
        "min": float(ms.min()),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "max": float(ms.max()),
        "mean": float(ms.mean()),
        "std": float(ms.std()),
    }


def model_result(
    item: Loaded,
    timing: Timing,
    *,
    hop_s: float,
    graph: dict[str, Any] | None,
    graph_note: str | None,
    memory: dict[str, Any] | None,
    peak: Peak | None,
    providers_requested: Sequence[str],
) -> dict[str, Any]:
    meta = item.model.meta
    stats = latency_stats(timing.latencies_ns)
    mean_s = stats["mean"] / 1e3
    cpu_per_window_s = timing.cpu_s / timing.windows
    used = list(item.model.providers)
    result: dict[str, Any] = {
        "path": str(item.path),
        "name": meta.name,
        "version": meta.version,
        "task": meta.task,
        "sha256": item.model.short_hash,
        "file_bytes": item.path.stat().st_size,
        "sample_rate": meta.sample_rate,
        "window_samples": meta.window_samples,
        "window_s": meta.window_seconds,
        "providers_requested": list(providers_requested),
        "providers_used": used,
        "provider_note": _provider_note(providers_requested, used),
        "load_s": item.load_s,
        "warmup_windows": timing.warmup,
        "windows": timing.windows,
        "latency_ms": stats,
        "windows_per_s": 1.0 / mean_s,
        "rtf": mean_s / meta.window_seconds,
        "cpu_ms_per_window": cpu_per_window_s * 1e3,
        "models_per_core": hop_s / cpu_per_window_s if cpu_per_window_s > 0 else None,
        "memory": memory,
        "graph": graph,
        "graph_note": graph_note,
        "achieved_gflops": None,
        "peak_fraction": None,
    }
    if graph is not None:
        result["achieved_gflops"] = 2.0 * graph["macs"] / mean_s / 1e9
        if peak is not None:
            fp32_macs = graph["macs"] - graph["int8_macs"]
            ideal_s = 2.0 * fp32_macs / (peak.fp32_gflops * 1e9) + 2.0 * graph["int8_macs"] / (peak.int8_gops * 1e9)
            result["peak_fraction"] = ideal_s / mean_s
    return result


def _provider_note(requested: Sequence[str], used: Sequence[str]) -> str:
    missing = [p for p in requested if p not in used]
    if not missing:
        return "as requested"
    return f"{', '.join(missing)} not available here; ran on {', '.join(used)}"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def add_ratios(results: list[dict[str, Any]], baseline_index: int) -> None:
    """Ratios of every model to the baseline, in place (the baseline gets 1.0 everywhere)."""
    base = results[baseline_index]
    for r in results:
        r["ratios"] = {
            "baseline": base["name"],
            "speedup_p50": _ratio(base["latency_ms"]["p50"], r["latency_ms"]["p50"]),
            "speedup_mean": _ratio(base["latency_ms"]["mean"], r["latency_ms"]["mean"]),
            "speedup_cpu": _ratio(base["cpu_ms_per_window"], r["cpu_ms_per_window"]),
            "models_per_core": _ratio(r["models_per_core"], base["models_per_core"]),
            "file_bytes": _ratio(r["file_bytes"], base["file_bytes"]),
            "params": _ratio(_graph(r, "params"), _graph(base, "params")),
            "macs": _ratio(_graph(r, "macs"), _graph(base, "macs")),
            "session_peak_bytes": _ratio(_mem(r), _mem(base)),
        }


def _graph(r: dict[str, Any], key: str) -> float | None:
    return r["graph"][key] if r.get("graph") else None


def _mem(r: dict[str, Any]) -> float | None:
    mem = r.get("memory") or {}
    return mem.get("session_peak_bytes")
