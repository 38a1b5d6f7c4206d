"""Stream results as a markdown table, a DET curve (PNG and JSON) and an operating point in a model file."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgekd.contract import (
    CONTRACT_VERSION,
    KEY_BACKGROUND,
    KEY_CONTRACT,
    KEY_OPERATING_POINT,
    OperatingPoint,
    parse_props,
)


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _num(x: float, fmt: str = ".1f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def table_md(rows: Sequence[dict[str, Any]]) -> str:
    """One row per model: recall (95% interval), false alarms per hour, wrong labels, latency."""
    lines = [
        "| model | post-processing | events | recall (95% CI) | false alarms / h | wrong-label events | latency p50 / p95 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["figures"]
        lo, hi = s["recall_ci95"]
        lines.append(
            f"| {r['model']} | {r['post']} | {s['events']} | {_pct(s['recall'])} ({_pct(lo)}-{_pct(hi)}) | "
            f"{_num(s['false_alarms_per_hour'])} ({s['false_alarms']} in {s['non_event_hours']:.2f} h) | "
            f"{_pct(s['wrong_label_rate'])} | {_num(s['latency_s_p50'], '.2f')} / {_num(s['latency_s_p95'], '.2f')} s |"
        )
    return "\n".join(lines) + "\n"


def per_label_md(rows: Sequence[dict[str, Any]]) -> str:
    """Recall per label, and the false alarms each label raised (the words worth a threshold of their own)."""
    labels = sorted({k for r in rows for k in r["figures"]["recall_per_label"]})
    lines = ["| model | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for r in rows:
        per = r["figures"]["recall_per_label"]
        lines.append(f"| {r['model']} ({r['post']}): recall | " + " | ".join(_pct(per.get(k, float("nan"))) for k in labels) + " |")
        fa = r["figures"].get("false_alarms_per_label")
        if fa is not None:
            lines.append(f"| {r['model']} ({r['post']}): false alarms | " + " | ".join(str(fa.get(k, 0)) for k in labels) + " |")
    return "\n".join(lines) + "\n"


def write_det(points: Sequence[dict[str, Any]], path_png: Path, title: str, chosen: dict[str, Any] | None = None) -> None:
    """Miss rate against false alarms per hour, one line per smoothing; JSON beside the PNG."""
    path_png.parent.mkdir(parents=True, exist_ok=True)
    path_png.with_suffix(".json").write_text(json.dumps({"title": title, "points": list(points), "chosen": chosen},
                                                        indent=1, default=float) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for smoothing in sorted({p["smoothing"] for p in points}):
        ps = sorted((p for p in points if p["smoothing"] == smoothing), key=lambda p: p["false_alarms_per_hour"])
        ax.plot([max(p["false_alarms_per_hour"], 0.05) for p in ps], [1 - p["recall"] for p in ps], marker=".",
                label=f"smoothing {smoothing}")
    if chosen is not None:
        ax.plot([max(chosen["false_alarms_per_hour"], 0.05)], [1 - chosen["recall"]], "k*", markersize=12,
                label="chosen")
    ax.set_xscale("log")
    ax.set_xlabel("false alarms per hour (0 drawn at 0.05)")
    ax.set_ylabel("miss rate")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path_png, dpi=110)
    plt.close(fig)


def operating_point(chosen: dict[str, Any], aim_fa_per_hour: float, chosen_on: str) -> OperatingPoint:
    return OperatingPoint(
        hop_s=float(chosen["hop_s"]),
        smoothing=int(chosen["smoothing"]),
        threshold=float(chosen["threshold"]),
        thresholds={k: float(v) for k, v in chosen.get("thresholds", {}).items()},
        refractory_s=float(chosen["refractory_s"]),
        mode="events",
        aim=f"best recall at no more than {aim_fa_per_hour:g} false alarms per hour",
        chosen_on=chosen_on,
        validation={k: chosen[k] for k in ("recall", "false_alarms_per_hour", "wrong_label_rate", "events")},
    )


def write_operating_point(model: Path, out: Path, op: OperatingPoint, background: Sequence[str]) -> Path:
    """A copy of `model` whose metadata carries the operating point and background labels (contract 2);
    the graph is untouched. Checked by reading it back the way the runtime does."""
    import onnx

    from edgekd_train.export import update_props

    proto = onnx.load(str(model))
    props = update_props(proto, {KEY_CONTRACT: str(CONTRACT_VERSION), KEY_BACKGROUND: json.dumps(list(background)),
                                 KEY_OPERATING_POINT: json.dumps(op.to_dict(), sort_keys=True)})
    parse_props(out, props)  # refuse to write what the runtime would refuse to read
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(out))
    return out
