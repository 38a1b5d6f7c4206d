"""Run records: the figures measured on one model file, gathered into `models/NAME.record.json`.

A card (edgekd_train.cards) reads what its file's metadata does not hold from this record. The
measurements come from the commands that make them, each merged into the record under its key:

    edgekd train evaluate -m models/M.onnx --split split.json --out runs/eval
    edgekd train record models/M.onnx --evaluate runs/eval             # clips.test: per class, confusions
    edgekd train run cough --score models/M.onnx --out runs/score
    edgekd train record models/M.onnx --score runs/score                # clips: the task's figures
    edgekd train streams score models/M.onnx --streams S --out runs/st
    edgekd train record models/M.onnx --streams runs/st --part test     # streams.test.operating_point

What no command measures again (the runs a card compares its file with, the settings it was trained
with) is written into the record once and kept: a merge replaces only the keys it brings. A record
of another file (its `sha256`) is refused. No torch here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from edgekd_train.card_template import CardError

TOP_CONFUSIONS = 5
STREAM_POSTS = {"file's operating point": "operating_point", "edgekd defaults": "defaults"}
STREAM_FIGURES = ("events", "found", "recall", "recall_ci95", "false_alarms", "non_event_hours",
                  "false_alarms_per_hour", "wrong_label_events", "wrong_label_rate", "latency_s_p50", "latency_s_p95")


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CardError(f"{path}: no such file ({what})") from None
    except json.JSONDecodeError as exc:
        raise CardError(f"{path}: not valid JSON ({exc})") from None


def from_evaluation(report: Path, part: str = "test") -> dict[str, Any]:
    """`clips.PART` from the report.json of `edgekd train evaluate`: accuracy, per class, the most
    frequent confusions."""
    evaluations = _read_json(report, "the report.json of `edgekd train evaluate`")["evaluations"]
    if part not in evaluations:
        raise CardError(f"{report} has no evaluation {part!r} (it has {sorted(evaluations)}): pass --part")
    e = evaluations[part]
    labels, confusion = e["labels"], e["confusion"]
    pairs = sorted((-confusion[i][j], i, j) for i in range(len(labels)) for j in range(len(labels))
                   if i != j and confusion[i][j])[:TOP_CONFUSIONS]
    return {"clips": {part: {
        "n": e["n"], "accuracy": e["accuracy"], "macro_f1": e["macro_f1"],
        "correct": sum(confusion[i][i] for i in range(len(labels))),
        "per_class": [{k: c[k] for k in ("label", "support", "precision", "recall")} for c in e["per_class"]],
        "top_confusions": [{"true": labels[i], "predicted": labels[j], "n": -n} for n, i, j in pairs]}}}


def from_score(summary: Path, model: str) -> dict[str, Any]:
    """`clips` (and `macs_per_window`) from the summary.json of `edgekd train run cough|covid --score`."""
    scored = _read_json(summary, "the summary.json of `edgekd train run cough|covid --score`")
    rows = scored.get("scored", {})
    if model not in rows:
        raise CardError(f"{summary} scored {sorted(rows)}, not {model!r}")
    row, task = rows[model], scored.get("task")
    f = row["figures"]
    out: dict[str, Any] = {"macs_per_window": row.get("macs_per_window")}
    if task == "cough":
        called = {src: round(b["called_cough"] * b["n"]) for src, b in f["test_by_source"].items()
                  if src not in ("noise", "ravdess", "tess")}  # fmt: skip
        out["clips"] = {"test": {**f["figures"]["test"], "per_class": f["per_class_test"],
                                 "confusion": [list(r) for r in f["confusion_test"]], "coughs_called_cough": called,
                                 "bandlimited_speech_called_cough": f["bandlimited_test_speech_called_cough"]},
                        "val": f["figures"]["val"]}  # fmt: skip
    elif task == "covid":
        out["clips"] = {"threshold_from_val": f["threshold_from_val"], **f["figures"]}
    else:
        raise CardError(f"{summary}: task {task!r}; `--score` records are made for cough and covid")
    return out


def from_streams(streams: Path, model: str, part: str) -> dict[str, Any]:
    """`streams.PART.operating_point` and/or `.defaults` from the streams.json of `edgekd train streams score`."""
    rows = [r for r in _read_json(streams, "the streams.json of `edgekd train streams score`") if r["model"] == model]
    if not rows:
        raise CardError(f"{streams} has no rows of model {model!r}")
    return {"streams": {part: {STREAM_POSTS[r["post"]]: {k: r["figures"][k] for k in STREAM_FIGURES} for r in rows}}}


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `update` laid over it, mapping by mapping (a list or a figure is replaced whole)."""
    out = dict(base)
    for key, value in update.items():
        out[key] = merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


def write_record(path: Path, model: str, sha256: str, *updates: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `updates` into the record at `path` (created if absent) of the model file with `sha256`."""
    record: dict[str, Any] = _read_json(path, "a run record") if path.is_file() else {}
    if record.get("sha256") not in (None, sha256):
        raise CardError(f"run record {path} describes the file with SHA-256 {record['sha256'][:12]}…, not this one "
                        f"({sha256[:12]}…): move it away to start a record of this file")
    record = merge(record, {"model": model, "sha256": sha256})
    for update in updates:
        record = merge(record, update)
    path.write_text(json.dumps(record, indent=1, sort_keys=True, ensure_ascii=False, default=float) + "\n",
                    encoding="utf-8")
    return record
