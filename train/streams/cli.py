"""`edgekd train streams build | score | choose`: detectors measured on long streams.

    edgekd train streams build keyword --part test --hours 2 --out runs/streams/keyword-test
    edgekd train streams score models/wav2tiny-keyword.onnx --streams runs/streams/keyword-test --out runs/streams/score
    edgekd train streams choose models/wav2tiny-keyword.onnx --streams runs/streams/keyword-val \\
        --max-fa-per-hour 1 --write runs/streams/wav2tiny-keyword.onnx

`score` runs each model with its own defaults (the operating point in its file, else edgekd's),
then sweeps thresholds and smoothing for the DET curve. `choose` picks, on validation streams
only, the point with the best recall within the false-alarm aim and writes it into a copy of the
model. Scoring goes through the runtime's pipeline (edgekd_train.streams.score).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgekd_train.cli_common import USER_ERROR, command_group, setup_logging
from edgekd_train.tasks import DEFAULT_DATA

log = logging.getLogger(__name__)

app = command_group("streams", "Build long test streams from held-out audio, score detectors on them, choose operating points.")

DEFAULT_SMOOTHINGS = (1, 2, 3, 4, 5)


def _fail(message: str) -> None:
    print(f"edgekd train streams: {message}", file=sys.stderr)
    raise typer.Exit(USER_ERROR)


@app.command()
def build(
    task: Annotated[str, typer.Argument(help="keyword, cough or emotion.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the streams (FLAC + JSON each).")],
    part: Annotated[str, typer.Option(help="val (choose operating points), test (report) or train (mine hard negatives).")] = "test",
    hours: Annotated[float, typer.Option(help="Hours of non-event audio at least, over all streams.")] = 2.0,
    minutes: Annotated[float, typer.Option(help="Length of each stream file.")] = 10.0,
    seed: Annotated[int, typer.Option(help="Seed of the first stream; stream i uses seed + i.")] = 0,
    data: Annotated[Path, typer.Option(help="Folder with the corpora ($EDGEKD_DATA).")] = Path(DEFAULT_DATA),
) -> None:
    """Write streams until they hold HOURS of non-event audio."""
    setup_logging()
    from edgekd_train.data.audio import load_audio
    from edgekd_train.streams.build import build_stream, write_stream
    from edgekd_train.streams.score import DEFAULT_TOLERANCE_S, non_event_seconds
    from edgekd_train.streams.sources import task_sources

    if hours <= 0 or minutes <= 0:
        _fail(f"--hours ({hours}) and --minutes ({minutes}) must be positive")
    try:
        sources = task_sources(task, data, part)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    log.info("%s %s: %d events, background %s", task, part, len(sources.events),
             {k: len(v) for k, v in sources.background.items()})
    if task == "emotion":  # one stream with every held-out utterance once, pauses of quiet noise between
        from edgekd_train.streams.build import StreamPlan

        plan = StreamPlan(background_between_events_s=(0.0, 0.0), gap_s=(0.4, 1.2), event_dbfs=(-32.0, -14.0),
                          bed_dbfs=(-62.0, -50.0), kind_weights={"noise": 1.0})
        stream = build_stream(sources, 0.0, seed, load_audio, plan=plan, max_events=len(sources.events))
        write_stream(stream, out, f"{task}-{part}-{seed:03d}")
        print(f"1 stream in {out}: {len(stream.events)} utterances, {stream.seconds / 60:.1f} min")
        return
    window_s = sources.window_s
    non_event, i, total_events = 0.0, 0, 0
    while non_event < hours * 3600.0:
        stream = build_stream(sources, minutes * 60.0, seed + i, load_audio)
        write_stream(stream, out, f"{task}-{part}-{seed + i:03d}")
        non_event += non_event_seconds(stream.events, stream.seconds, window_s, DEFAULT_TOLERANCE_S)
        total_events += len(stream.events)
        log.info("stream %d: %.1f min, %d events; %.2f h of non-event audio so far", i, stream.seconds / 60,
                 len(stream.events), non_event / 3600)
        i += 1
    print(f"{i} streams in {out}: {total_events} events, {non_event / 3600:.2f} h of non-event audio")


def _rows(models: list[Path], streams_dir: Path, smoothings: tuple[int, ...], refractory: float | None,
          hop: float | None, sweep_grid: bool, out: Path) -> list[dict]:
    from edgekd.model import Model
    from edgekd_train.streams.report import write_det
    from edgekd_train.streams.score import StreamSet, default_thresholds, score_model, sweep

    streams = StreamSet.read(streams_dir)
    rows = []
    for path in models:
        model = Model(path)
        op = model.meta.operating_point
        config = {"model": {"hop": hop}} if hop else {}
        figures = score_model(model, streams, config).summary()
        post = "file's operating point" if op else "edgekd defaults"
        rows.append({"model": model.meta.name, "path": str(path), "post": post, "figures": figures})
        log.info("%s (%s): %s", model.meta.name, post, json.dumps(figures, default=float))
        if sweep_grid:
            refr = refractory if refractory is not None else (op.refractory_s if op else model.meta.window_seconds)
            points = sweep(model, streams, default_thresholds(), smoothings, refr, hop_s=hop)
            write_det(points, out / f"det-{model.meta.name}.png",
                      f"{model.meta.name} on {streams_dir.name} ({streams.hours:.2f} h), refractory {refr:g} s")
            rows[-1]["sweep"] = points
    return rows


@app.command()
def score(
    models: Annotated[list[Path], typer.Argument(help="ONNX models to score.")],
    streams: Annotated[Path, typer.Option("--streams", help="Folder written by `streams build`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the table, DET curves and JSON.")],
    hop: Annotated[Optional[float], typer.Option(help="Seconds between windows (default: the model's).")] = None,
    refractory: Annotated[Optional[float], typer.Option(help="Refractory period of the sweep (default: the model's "
                                                        "operating point, else one window).")] = None,
    no_sweep: Annotated[bool, typer.Option("--no-sweep", help="Only each model's own defaults, no DET curve.")] = False,
) -> None:
    """Recall, false alarms per hour, wrong labels and latency of each model with its defaults; DET curves."""
    setup_logging()
    from edgekd_train.streams.report import per_label_md, table_md

    out.mkdir(parents=True, exist_ok=True)
    try:
        rows = _rows(list(models), streams, DEFAULT_SMOOTHINGS, refractory, hop, not no_sweep, out)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    md = table_md(rows) + "\n" + per_label_md(rows)
    (out / "streams.md").write_text(md)
    (out / "streams.json").write_text(json.dumps(rows, indent=1, default=float) + "\n")
    print(md)


@app.command()
def choose(
    model: Annotated[Path, typer.Argument(help="ONNX model.")],
    streams: Annotated[Path, typer.Option("--streams", help="VALIDATION streams (built with --part val).")],
    write: Annotated[Path, typer.Option("--write", help="Where to write the model with its operating point.")],
    max_fa_per_hour: Annotated[float, typer.Option("--max-fa-per-hour", help="The aim: false alarms per hour.")] = 1.0,
    hop: Annotated[Optional[float], typer.Option(help="Seconds between windows (default: a quarter window).")] = None,
    refractory: Annotated[Optional[float], typer.Option(help="Refractory period (default: one window).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for the DET curve and JSON.")] = None,
    per_label: Annotated[bool, typer.Option("--per-label", help="A threshold per label (one smoothing for all), "
                                            "for the most events found within the aim.")] = False,
) -> None:
    """Choose the operating point on validation streams and write it into a copy of the model."""
    setup_logging()
    from edgekd.model import Model
    from edgekd_train.streams.report import operating_point, write_det, write_operating_point
    from edgekd_train.streams.score import (
        StreamSet,
        choose as pick,
        choose_per_label,
        default_thresholds,
        record_windows,
        replay_streams,
        sweep,
    )

    try:
        stream_set = StreamSet.read(streams)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    parts = {doc.get("part") for doc in (json.loads(p.read_text()) for p in sorted(streams.glob("*.json")))}
    if parts != {"val"}:
        _fail(f"{streams} holds {sorted(map(str, parts))} streams: operating points are chosen on validation "
              "streams only (build them with --part val)")
    m = Model(model)
    hop_s = hop or m.meta.window_seconds / 4
    refr = refractory if refractory is not None else m.meta.window_seconds
    recorded = record_windows(m, stream_set, hop_s)
    points = sweep(m, stream_set, default_thresholds(), DEFAULT_SMOOTHINGS, refr, hop_s=hop_s, recorded=recorded)
    best = pick(points, max_fa_per_hour)
    if per_label:
        labelled = choose_per_label(points, max_fa_per_hour)
        if labelled is not None:  # never worse: one threshold for every label is among its choices
            # the sums of the sweep's per-label figures, checked by the runtime's post-processing itself
            cfg = {"defaults": {"threshold": labelled["threshold"], "smoothing": labelled["smoothing"],
                                "refractory": refr, "mode": "events"},
                   "model": {"hop": hop_s, "thresholds": labelled["thresholds"]}}
            check = replay_streams(m, stream_set, recorded, cfg)
            if (check.found, check.false_alarms) != (labelled["found"], labelled["false_alarms"]):
                _fail(f"per-label thresholds {labelled['thresholds']}: a replay found {check.found} events with "
                      f"{check.false_alarms} false alarms where the sweep's sums gave {labelled['found']} and "
                      f"{labelled['false_alarms']}; not written (a bug: please report it)")
            s = check.summary()
            best = {**labelled, **{k: s[k] for k in ("recall", "false_alarms_per_hour", "wrong_label_rate", "events")}}
    if out is not None:
        write_det(points, out / f"det-{m.meta.name}-val.png",
                  f"{m.meta.name} on validation streams ({stream_set.hours:.2f} h)", best)
    if best is None:
        _fail(f"no threshold and smoothing keep {m.meta.name} within {max_fa_per_hour:g} false alarms per hour "
              f"on {streams}; the lowest was {min(p['false_alarms_per_hour'] for p in points):.1f}")
    op = operating_point(best, max_fa_per_hour, f"{streams.name}: {len(stream_set.items)} validation streams, "
                         f"{stream_set.hours:.2f} h, {best['events']} events")
    write_operating_point(model, write, op, m.meta.background)
    per = (", thresholds " + ", ".join(f"{k} {v:g}" for k, v in op.thresholds.items())) if op.thresholds else ""
    print(f"{m.meta.name}: smoothing {op.smoothing}, threshold {op.threshold:g}{per}, refractory {op.refractory_s:g} s, "
          f"hop {op.hop_s:g} s -> validation recall {best['recall']:.3f} at {best['false_alarms_per_hour']:.2f} "
          f"false alarms per hour; written to {write}")


@app.command()
def utterances(
    models: Annotated[list[Path], typer.Argument(help="ONNX models (single-label classifiers, e.g. emotion).")],
    streams: Annotated[Path, typer.Option("--streams", help="Folder written by `streams build emotion`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the table and JSON.")],
    part: Annotated[str, typer.Option(help="The part the streams were built from (for the clip figures).")] = "test",
    data: Annotated[Path, typer.Option(help="Folder with the corpora ($EDGEKD_DATA).")] = Path(DEFAULT_DATA),
) -> None:
    """Utterance-level accuracy on streams of whole utterances, next to clip accuracy on the same clips."""
    setup_logging()
    from edgekd.classify import classify_files
    from edgekd.config import load_settings
    from edgekd.model import Model
    from edgekd_train.streams.score import StreamSet, utterance_accuracy, wilson
    from edgekd_train.streams.sources import task_sources

    stream_set = StreamSet.read(streams)
    task = json.loads(sorted(streams.glob("*.json"))[0].read_text())["task"]
    clips = task_sources(task, data, part).events
    rows = []
    for path in models:
        model = Model(path)
        utt = utterance_accuracy(model, stream_set)
        settings = load_settings(overrides={"models": [{"path": str(path)}]}, environ={})
        right: dict[str, list[int]] = {}
        for clip, res in zip(clips, classify_files([c.path for c in clips], settings, [model])):
            for key in ("all", clip.corpus):
                r = right.setdefault(key, [0, 0])
                r[0] += int(res.label == clip.label)
                r[1] += 1
        clip_fig = {k: {"accuracy": a / n, "n": n, "ci95": wilson(a, n)} for k, (a, n) in sorted(right.items())}
        rows.append({"model": model.meta.name, "utterances_on_streams": utt, "clips": clip_fig})
    out.mkdir(parents=True, exist_ok=True)
    lines = ["| model | part of the test set | clips (classify) | utterances on streams |", "|---|---|---|---|"]
    for r in rows:
        for key in r["clips"]:
            c, u = r["clips"][key], r["utterances_on_streams"].get(key)
            fmt = lambda f: f"{100 * f['accuracy']:.1f}% ({100 * f['ci95'][0]:.1f}-{100 * f['ci95'][1]:.1f}, n {f['n']})"  # noqa: E731
            lines.append(f"| {r['model']} | {key} | {fmt(c)} | {fmt(u) if u else 'n/a'} |")
    md = "\n".join(lines) + "\n"
    (out / "utterances.md").write_text(md)
    (out / "utterances.json").write_text(json.dumps(rows, indent=1, default=float) + "\n")
    print(md)
