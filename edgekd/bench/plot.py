"""`--plot FILE.png`: latency distributions and a side-by-side comparison chart.

matplotlib is not a runtime dependency (it is heavy on a Pi); it comes with the `bench` extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

MATPLOTLIB_MISSING = 'plotting needs matplotlib, which is not installed: pip install "edgekd[bench]"'


class PlotUnavailable(RuntimeError):
    pass


def plot_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_plot(path: Path, report: dict[str, Any], latencies_ns: Sequence[np.ndarray]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable(MATPLOTLIB_MISSING) from None
    results = report["models"]
    names = [r["name"] for r in results]
    fig, (ax_lat, ax_cmp) = plt.subplots(1, 2, figsize=(12, 4.8))
    data = [np.asarray(lat, dtype=np.float64) / 1e6 for lat in latencies_ns]
    ax_lat.boxplot(data, whis=(1, 99), showfliers=False)
    ax_lat.set_xticks(range(1, len(names) + 1), names, rotation=20, ha="right")
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency per window (ms, log)")
    ax_lat.set_title("latency: box p25-p75, whiskers p1-p99")
    for i, r in enumerate(results, start=1):
        ax_lat.annotate(f"p50 {r['latency_ms']['p50']:.3g}", (i, r["latency_ms"]["p50"]), fontsize=8,
                        xytext=(8, 0), textcoords="offset points")

    per_core = [r["models_per_core"] or 0.0 for r in results]
    bars = ax_cmp.bar(names, per_core, color="tab:blue")
    ax_cmp.set_yscale("log")
    ax_cmp.set_ylim(top=max(max(per_core), 1.0) * 4)  # room for the labels above the bars
    ax_cmp.set_ylabel(f"models per core at a {report['settings']['hop_ms']:g} ms hop (log)")
    ax_cmp.set_title(f"speedup (p50) vs {report['baseline']}")
    ax_cmp.tick_params(axis="x", rotation=20)
    for bar, r in zip(bars, results):
        speed = r["ratios"]["speedup_p50"]
        label = f"{bar.get_height():.3g}/core\n{speed:.3g}x" if speed else f"{bar.get_height():.3g}/core"
        ax_cmp.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                        va="bottom", fontsize=8)
    device = report["device"]
    fig.suptitle(f"edgekd bench on {device['cpu']}, {report['settings']['threads']} thread(s), "
                 f"onnxruntime {device['onnxruntime']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
