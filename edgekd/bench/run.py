"""One benchmark run: memory probes, load, interleaved timing, graph counts, peak, the report."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.bench import graphcount, memory
from edgekd.bench.device import device_facts
from edgekd.bench.e2e import DaemonFailed, E2EConfig, run_e2e
from edgekd.bench.measure import Budget, Loaded, load, time_interleaved
from edgekd.bench.peak import Peak, best_peak, measure_peak
from edgekd.bench.progress import ProgressLine
from edgekd.bench.results import SCHEMA_VERSION, add_ratios, model_result
from edgekd.bench.stream import time_both_paths
from edgekd.model import PROVIDER_CHOICES, ModelRuntimeOptions

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class BenchConfig:
    models: tuple[Path, ...]
    baseline: Path | None = None
    threads: int = 1
    hop_ms: float = 250.0
    budget: Budget = field(default_factory=Budget)
    providers: tuple[str, ...] = ("auto",)
    memory: bool = True
    peak: bool = True
    e2e: E2EConfig | None = None
    stream: bool = True  # also time whole windows vs the split path at the hop


@dataclass
class BenchRun:
    report: dict[str, Any]
    latencies_ns: list[np.ndarray]


def resolve_providers(choices: tuple[str, ...], available: list[str]) -> tuple[list[tuple[str, ...]], list[str]]:
    """The provider lists to benchmark, one column set each, and notes on what was not available.

    `auto` means CPU always, plus CUDA and TensorRT when this onnxruntime has them (onnxruntime-gpu).
    An explicitly requested provider that is missing still runs, on the CPU fallback, with a note.
    """
    notes: list[str] = []
    wanted: list[str] = []
    for choice in choices:
        if choice == "auto":
            wanted.append("cpu")
            wanted.extend(c for c, eps in PROVIDER_CHOICES.items() if c != "cpu" and eps[0] in available)
        else:
            wanted.append(choice)
            head = PROVIDER_CHOICES[choice][0]
            if head not in available:
                notes.append(
                    f"{choice}: onnxruntime here has no {head} (install onnxruntime-gpu on a CUDA device); "
                    "those columns fall back to the CPU"
                )
    unique = list(dict.fromkeys(wanted))
    return [PROVIDER_CHOICES[c] for c in unique], notes


def _ordered_paths(cfg: BenchConfig) -> tuple[list[Path], int]:
    paths = list(dict.fromkeys(Path(p) for p in cfg.models))
    if cfg.baseline is None:
        return paths, 0
    base = Path(cfg.baseline)
    for i, p in enumerate(paths):
        if p.resolve() == base.resolve():
            return paths, i
    return [base] + paths, 0


def _labels(loaded: list[Loaded], provider_sets: list[tuple[str, ...]], per_model: int) -> list[str]:
    """Column names: the model's name, its file name where two share a name, and the provider where
    more than one provider list is benched."""
    names = [item.model.meta.name for item in loaded[:per_model]]
    base = [
        name if names.count(name) == 1 else f"{name} ({item.path.name})"
        for item, name in zip(loaded[:per_model], names)
    ]
    if len(provider_sets) == 1:
        return base
    return [
        f"{label}@{eps[0].replace('ExecutionProvider', '').lower()}" for eps in provider_sets for label in base
    ]


Key = tuple[Path, tuple[str, ...]]  # a model file under one provider list


def _memory(paths: list[Path], provider_sets: list[tuple[str, ...]], threads: int, progress: ProgressLine,
            notes: list[str]) -> dict[Key, dict[str, Any]]:  # fmt: skip
    out: dict[Key, dict[str, Any]] = {}
    for eps in provider_sets:
        for path in paths:
            progress.phase(f"memory of {path.name} in a fresh process ({eps[0]})")
            out[(path, eps)] = memory.measure_in_subprocess(path, threads, list(eps))
            if "error" in out[(path, eps)]:
                notes.append(str(out[(path, eps)]["error"]))
    return out


def _graphs(loaded: list[Loaded], progress: ProgressLine, notes: list[str]) -> dict[Path, tuple[dict | None, str | None]]:
    graphs: dict[Path, tuple[dict | None, str | None]] = {}
    if not graphcount.onnx_available():
        notes.append(graphcount.ONNX_MISSING)
        return graphs
    for item in loaded:
        if item.path in graphs:
            continue
        progress.phase(f"counting params and MACs of {item.path.name}")
        try:
            counted = graphcount.count_graph(item.path, item.model.meta.window_samples)
            graphs[item.path] = (counted.to_dict(), "; ".join(counted.notes) or None)
        except Exception as exc:  # an op or graph the counter cannot handle: report it, keep the timings
            log.debug("graph count failed", exc_info=True)
            graphs[item.path] = (None, f"could not count the graph: {exc}")
            notes.append(f"{item.path.name}: could not count the graph: {exc}")
    return graphs


def _e2e(models: list[Loaded], e2e: E2EConfig, progress: ProgressLine, notes: list[str]) -> dict[Path, dict[str, Any]]:
    out: dict[Path, dict[str, Any]] = {}
    for item in models:
        progress.phase(
            f"e2e: edgekd serve of {item.path.name} -> {e2e.broker} broker -> subscriber, "
            f"{e2e.seconds:g} s of {e2e.clip.name}"
        )
        try:
            out[item.path] = run_e2e(item.path, item.model.meta.name, e2e)
        except DaemonFailed as exc:  # this model's daemon failed: say so, keep everything else
            out[item.path] = {"error": str(exc)}
            notes.append(f"e2e: {exc}")
    return out


def _settings(cfg: BenchConfig) -> dict[str, Any]:
    e2e = cfg.e2e
    return {
        "threads": cfg.threads,
        "hop_ms": cfg.hop_ms,
        "seconds": cfg.budget.seconds,
        "windows": cfg.budget.windows,
        "warmup": cfg.budget.warmup,
        "providers": list(cfg.providers),
        "interleaved": True,
        "stream": cfg.stream,
        "e2e": None if e2e is None else {"clip": str(e2e.clip), "seconds": e2e.seconds, "broker": e2e.broker,
                                         "hop_s": e2e.hop_s},  # fmt: skip
    }


def run_bench(cfg: BenchConfig, progress: ProgressLine) -> BenchRun:
    """Load (refusing bad models first), memory, peak, interleaved timing, counts, peak again, e2e."""
    import onnxruntime as ort

    paths, baseline_index = _ordered_paths(cfg)
    provider_sets, notes = resolve_providers(cfg.providers, list(ort.get_available_providers()))

    progress.phase(f"loading {len(paths) * len(provider_sets)} session(s)")
    loaded: list[Loaded] = []
    requested: list[tuple[str, ...]] = []
    for eps in provider_sets:
        loaded.extend(load(paths, ModelRuntimeOptions(threads=cfg.threads, providers=eps)))
        requested.extend([eps] * len(paths))

    mem = _memory(paths, provider_sets, cfg.threads, progress, notes) if cfg.memory else {}

    # The peak is measured before and after the timing and the better one kept: on a shared machine a
    # single measurement can land in a busy moment and make the models look better than the core.
    peaks: list[Peak] = []
    can_peak = cfg.peak and graphcount.onnx_available()
    if can_peak:
        progress.phase(f"measuring the core's GEMM peak at {cfg.threads} thread(s) (1 of 2)")
        peaks.append(measure_peak(cfg.threads))
    elif cfg.peak:
        notes.append('GEMM peak not measured: it needs the `onnx` package (pip install "edgekd[bench]")')

    what = f"{cfg.budget.windows} windows" if cfg.budget.windows else f"{cfg.budget.seconds:g} s"
    progress.phase(f"timing {len(loaded)} session(s) interleaved, {what} each")
    timings = time_interleaved(loaded, cfg.budget, progress.update)

    streams: dict[int, dict[str, Any]] = {}
    if cfg.stream:
        progress.phase(f"timing whole windows and the split path at a {cfg.hop_ms:g} ms hop, interleaved")
        streams = time_both_paths(loaded, cfg.hop_ms, cfg.budget, progress.update)

    graphs = _graphs(loaded, progress, notes)
    if can_peak:
        progress.phase(f"measuring the core's GEMM peak at {cfg.threads} thread(s) (2 of 2)")
        peaks.append(measure_peak(cfg.threads))
    peak = best_peak(peaks) if peaks else None
    e2e = _e2e(loaded[: len(paths)], cfg.e2e, progress, notes) if cfg.e2e is not None else {}

    results = []
    for i, (item, timing, eps, label) in enumerate(zip(loaded, timings, requested, _labels(loaded, provider_sets, len(paths)))):
        graph, graph_note = graphs.get(item.path, (None, None))
        r = model_result(item, timing, hop_s=cfg.hop_ms / 1e3, graph=graph, graph_note=graph_note,
                         memory=mem.get((item.path, eps)), peak=peak, providers_requested=eps)  # fmt: skip
        r["name"] = label
        r["e2e"] = e2e.get(item.path) if eps == provider_sets[0] else None
        r["stream"] = streams.get(i)
        results.append(r)
    add_ratios(results, baseline_index)
    progress.close()
    report = {
        "schema": SCHEMA_VERSION,
        "tool": "edgekd bench",
        "device": device_facts(),
        "settings": _settings(cfg),
        "peak": peak.to_dict() if peak else None,
        "baseline": results[baseline_index]["name"],
        "models": results,
        "notes": notes,
    }
    return BenchRun(report=report, latencies_ns=[t.latencies_ns for t in timings])
