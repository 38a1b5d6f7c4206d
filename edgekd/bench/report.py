"""The human-readable benchmark report: device facts, then one column per model."""

from __future__ import annotations

from typing import Any, Callable

Row = tuple[str, Callable[[dict[str, Any]], str]]


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _si(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{prefix}{unit}"
    return f"{value:.3g}{unit}"


def _mib(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) < 2**20:
        return f"{value / 2**10:.1f} KiB"
    return f"{value / 2**20:.1f} MiB"


def _mem(r: dict[str, Any], key: str) -> str:
    mem = r.get("memory") or {}
    if "error" in mem:
        return "error"
    return _mib(mem.get(key))


def _g(r: dict[str, Any], key: str) -> float | None:
    return r["graph"][key] if r.get("graph") else None


def _e2e(r: dict[str, Any], key: str, stat: str) -> str:
    block = (r.get("e2e") or {}).get(key)
    return "-" if not block else f"{block[stat]:.2f} ms"


def _top(r: dict[str, Any]) -> str:
    graph = r.get("graph")
    if not graph or not graph.get("top_nodes") or not graph["macs"]:
        return "-"
    top = graph["top_nodes"][0]
    short = "/".join(top["node"].strip("/").split("/")[-2:])
    return f"{short} {100 * top['macs'] / graph['macs']:.0f}%"


def _e2e_count(r: dict[str, Any]) -> str:
    e2e = r.get("e2e")
    if not e2e:
        return "-"
    if "error" in e2e:
        return "failed (see notes)"
    return f"{e2e['results']}/{e2e['results_expected']}" + ("" if e2e["kept_up"] else " BEHIND")


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}x"


def _stream(r: dict[str, Any], path: str, key: str, fmt: str) -> str:
    block = r.get("stream") or {}
    if path not in block:
        return "-"
    value = block[path][key] if key != "p50" else block[path]["latency_ms"]["p50"]
    return "-" if value is None else format(value, fmt)


def _stream_hop(r: dict[str, Any]) -> str:
    block = r.get("stream") or {}
    if "hop_ms" not in block:
        return "no split path" if block else "-"
    return f"{block['hop_ms']:.4g} ms"


ROWS: list[Row] = [
    ("file", lambda r: _mib(r["file_bytes"])),
    ("sha256", lambda r: r["sha256"]),
    ("window", lambda r: f"{r['window_s']:g} s @ {r['sample_rate']} Hz"),
    ("provider", lambda r: ",".join(p.replace("ExecutionProvider", "") for p in r["providers_used"])),
    ("params", lambda r: _si(_g(r, "params"))),
    ("MACs / window", lambda r: _si(_g(r, "macs"))),
    ("costliest node", lambda r: _top(r)),
    ("load", lambda r: f"{r['load_s'] * 1e3:.1f} ms"),
    ("windows timed", lambda r: str(r["windows"])),
    ("latency p50", lambda r: f"{r['latency_ms']['p50']:.3f} ms"),
    ("latency p95", lambda r: f"{r['latency_ms']['p95']:.3f} ms"),
    ("latency p99", lambda r: f"{r['latency_ms']['p99']:.3f} ms"),
    ("latency max", lambda r: f"{r['latency_ms']['max']:.3f} ms"),
    ("latency mean", lambda r: f"{r['latency_ms']['mean']:.3f} ms"),
    ("windows / s", lambda r: _num(r["windows_per_s"], ".1f")),
    ("real-time factor", lambda r: _num(r["rtf"], ".2e")),
    ("CPU / window", lambda r: f"{r['cpu_ms_per_window']:.3f} ms"),
    ("models / core", lambda r: _num(r["models_per_core"], ".1f")),
    ("stream: hop", _stream_hop),
    ("stream: whole latency p50", lambda r: _stream(r, "whole", "p50", ".3f") + " ms"),
    ("stream: split latency p50", lambda r: _stream(r, "split", "p50", ".3f") + " ms"),
    ("stream: whole CPU / audio s", lambda r: _stream(r, "whole", "cpu_ms_per_audio_s", ".3f") + " ms"),
    ("stream: split CPU / audio s", lambda r: _stream(r, "split", "cpu_ms_per_audio_s", ".3f") + " ms"),
    ("stream: split models / core", lambda r: _stream(r, "split", "models_per_core", ".1f")),
    ("stream: split speedup (CPU)", lambda r: _times((r.get("stream") or {}).get("speedup_cpu"))),
    ("stream: stateful CPU / audio s", lambda r: _stream(r, "stateful", "cpu_ms_per_audio_s", ".3f") + " ms"),
    ("stream: stateful models / core", lambda r: _stream(r, "stateful", "models_per_core", ".1f")),
    ("stream: stateful speedup (CPU)", lambda r: _times((r.get("stream") or {}).get("stateful_speedup_cpu"))),
    ("session peak RSS", lambda r: _mem(r, "session_peak_bytes")),
    ("process peak RSS", lambda r: _mem(r, "peak_rss_bytes")),
    ("achieved GFLOP/s", lambda r: _num(r["achieved_gflops"], ".3g")),
    ("of peak", lambda r: "-" if r["peak_fraction"] is None else f"{100 * r['peak_fraction']:.1f} %"),
    ("e2e audio->sub p50", lambda r: _e2e(r, "audio_to_subscriber_ms", "p50")),
    ("e2e audio->sub p99", lambda r: _e2e(r, "audio_to_subscriber_ms", "p99")),
    ("e2e results / expected", lambda r: _e2e_count(r)),
    ("e2e daemon pipeline p50", lambda r: _e2e(r, "pipeline_ms", "p50")),
    ("e2e daemon CPU / audio s", lambda r: "-" if (r.get("e2e") or {}).get("cpu_s_per_audio_s") is None
        else f"{100 * r['e2e']['cpu_s_per_audio_s']:.2f} %"),
    ("speedup (p50)", lambda r: _times(r["ratios"]["speedup_p50"])),
    ("speedup (CPU time)", lambda r: _times(r["ratios"]["speedup_cpu"])),
    ("MACs ratio", lambda r: _times(r["ratios"]["macs"])),
    ("size ratio", lambda r: _times(r["ratios"]["file_bytes"])),
]


def device_lines(report: dict[str, Any]) -> list[str]:
    d = report["device"]
    s = report["settings"]
    mem = d["memory_bytes"]
    lines = [
        f"device: {d['cpu']}" + (f" ({d['board']})" if d.get("board") else "") + f", {d['machine']}",
        f"  cpus: {d['usable_cpus']} usable of {d['logical_cpus']}; memory {_mib(mem) if mem else '?'}; "
        f"flags: {' '.join(d['cpu_flags']) or '-'}",
        f"  {d['os']}; Python {d['python']}; onnxruntime {d['onnxruntime']} ({', '.join(d['onnxruntime_providers'])})",
        f"settings: threads {s['threads']}, hop {s['hop_ms']:g} ms, "
        + (f"{s['windows']} windows" if s["windows"] else f"{s['seconds']:g} s")
        + f" per model after {s['warmup']} warm-up windows, interleaved",
    ]
    peak = report.get("peak")
    if peak:
        lines.append(
            f"peak: {peak['fp32_gflops']:.1f} GFLOP/s FP32, {peak['int8_gops']:.1f} GOP/s INT8 "
            f"({peak['threads']} thread(s), measured: {peak['method']})"
        )
    return lines


def format_table(report: dict[str, Any]) -> str:
    results = report["models"]
    headers = [""] + [r["name"] for r in results]
    with_e2e = any(r.get("e2e") for r in results)
    with_stream = any(r.get("stream") for r in results)
    rows = [(label, fmt) for label, fmt in ROWS
            if (with_e2e or not label.startswith("e2e")) and (with_stream or not label.startswith("stream"))]  # fmt: skip
    body = [[label] + [fmt(r) for r in results] for label, fmt in rows]
    widths = [max(len(row[i]) for row in [headers] + body) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join([first] + rest).rstrip()

    out = device_lines(report) + [""]
    out.append(line(headers))
    out.append(line(["-" * w for w in widths]))
    out.extend(line(row) for row in body)
    out.append("")
    out.append(
        f"ratios are to {report['baseline']}: speedup = its p50 (or CPU time per window) / this one's; "
        "models / core = hop / CPU time per window"
    )
    if with_stream:
        out.append(
            "stream: at the hop (rounded to whole front-end frames), whole windows vs the split path (shared "
            "front end + body; front end included) and, for a file with a step graph, the stateful path (new "
            "frames + step graph), interleaved; CPU / audio s = CPU per window x windows per second"
        )
    out.extend(f"note: {n}" for n in report["notes"])
    return "\n".join(out)
