"""Score a detector on streams through the runtime's own path, and match detections to events.

Detections come from `edgekd.pipeline.Pipeline` built by `edgekd.daemon.build_runners` from
settings loaded by `edgekd.config.load_settings`: the windows, hop, smoothing, thresholds,
refractory period and background labels are those `serve` uses, with the model's operating point
beneath whatever is passed in `config`. Nothing here re-implements them.

Sweeping post-processing (a DET curve) runs each stream through the pipeline once, keeping every
classified window's end time and scores; each point of the sweep then steps the runtime's own
`PostProcessor`, configured through the same settings path, over those windows in order. Windows
and energy gating do not depend on post-processing, so this gives what a full pass would.

Matching, with `W` the model's window and `tolerance_s` the allowance for smoothing:
- a detection at time `t` (the end of its window) belongs to an event when its window `[t - W, t]`
  overlaps `[start, end + tolerance_s]`; with several such events, the one it overlaps most;
- an event is **found** when a detection of its label belongs to it (more detections of it count
  once, never as false alarms); the latency is the first such `t` minus the event's `end`;
- a detection of another target label that belongs to an event is a **wrong-label** detection,
  and the event counts as wrong-label when it has one;
- a detection that belongs to no event is a **false alarm**; false alarms per hour divide by the
  hours outside every event's span `[start, end + W + tolerance_s]`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.audio.windowing import default_hop
from edgekd.config import load_settings
from edgekd.daemon import build_runners
from edgekd.model import Model
from edgekd.pipeline import Pipeline
from edgekd.sink import MemorySink
from edgekd_train.streams.build import Event

DEFAULT_TOLERANCE_S = 0.5
FEED_SECONDS = 1.0  # chunk size fed to the pipeline (results do not depend on it)


@dataclass(frozen=True)
class Detection:
    t: float  # end of the window, stream seconds
    label: str
    score: float


def _runners(scorer: Any, config: dict[str, Any] | None) -> list:
    """The runners `serve` builds for this one model under `config` (settings keys: `defaults`,
    `hops`, ...; the model's own `[[models]]` table is `model`)."""
    config = dict(config or {})
    model_table = {"path": str(scorer.path), **config.pop("model", {})}
    settings = load_settings(overrides={"models": [model_table], **config}, environ={})
    return build_runners(settings, [scorer])


def _published(scorer: Any, audio: np.ndarray, rate: int, config: dict[str, Any] | None) -> tuple[list, list[float]]:
    """Run `audio` through serve's pipeline; the payloads it published and each one's end time (s)."""
    runners = _runners(scorer, config)
    sink = MemorySink()
    pipeline = Pipeline(runners, rate, sink, "streams", source_name="stream")
    step = int(FEED_SECONDS * rate)
    for i in range(0, len(audio), step):
        pipeline.feed(audio[i : i + step])
    pipeline.finish()
    ends = [(p.window_end - pipeline.t0).total_seconds() + 1.0 / runners[0].rate for p in sink.results]
    return sink.results, ends


def detections(scorer: Any, audio: np.ndarray, rate: int, config: dict[str, Any] | None = None) -> list[Detection]:
    """The detections `serve` would publish for `audio` with this model and `config`. `scorer` is an
    `edgekd.model.Model` or a wrapper of one with the same `path`, `meta`, `short_hash`, `scores`."""
    results, ends = _published(scorer, audio, rate, config)
    return [Detection(t, p.label, p.score) for p, t in zip(results, ends) if p.detected]


@dataclass
class Matched:
    events: int = 0
    found: int = 0
    wrong_label_events: int = 0
    wrong_label_detections: int = 0
    false_alarms: int = 0
    non_event_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    per_label: dict[str, list[int]] = field(default_factory=dict)  # label -> [found, events]
    false_alarms_per_label: dict[str, int] = field(default_factory=dict)  # detection label -> false alarms

    def add(self, other: "Matched") -> "Matched":
        out = Matched(
            self.events + other.events, self.found + other.found,
            self.wrong_label_events + other.wrong_label_events,
            self.wrong_label_detections + other.wrong_label_detections,
            self.false_alarms + other.false_alarms, self.non_event_s + other.non_event_s,
            self.latencies + other.latencies, {k: list(v) for k, v in self.per_label.items()},
            dict(self.false_alarms_per_label),
        )
        for label, n in other.false_alarms_per_label.items():
            out.false_alarms_per_label[label] = out.false_alarms_per_label.get(label, 0) + n
        for label, (f, n) in other.per_label.items():
            cur = out.per_label.setdefault(label, [0, 0])
            cur[0] += f
            cur[1] += n
        return out

    @property
    def recall(self) -> float:
        return self.found / self.events if self.events else float("nan")

    @property
    def false_alarms_per_hour(self) -> float:
        return self.false_alarms / (self.non_event_s / 3600.0) if self.non_event_s > 0 else float("nan")

    @property
    def wrong_label_rate(self) -> float:
        return self.wrong_label_events / self.events if self.events else float("nan")

    def summary(self) -> dict[str, Any]:
        lat = np.array(self.latencies, dtype=np.float64)
        return {
            "events": self.events,
            "found": self.found,
            "recall": self.recall,
            "recall_ci95": wilson(self.found, self.events),
            "false_alarms": self.false_alarms,
            "non_event_hours": self.non_event_s / 3600.0,
            "false_alarms_per_hour": self.false_alarms_per_hour,
            "wrong_label_events": self.wrong_label_events,
            "wrong_label_rate": self.wrong_label_rate,
            "wrong_label_detections": self.wrong_label_detections,
            "latency_s_p50": float(np.percentile(lat, 50)) if self.latencies else float("nan"),
            "latency_s_p95": float(np.percentile(lat, 95)) if self.latencies else float("nan"),
            "recall_per_label": {k: (f / n if n else float("nan")) for k, (f, n) in sorted(self.per_label.items())},
            "false_alarms_per_label": dict(sorted(self.false_alarms_per_label.items())),
        }


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (float(c - h), float(c + h))


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def non_event_seconds(events: Sequence[Event], total_s: float, window_s: float, tolerance_s: float) -> float:
    """Seconds of the stream outside every event's span `[start, end + window + tolerance]`."""
    spans = sorted((e.start, min(total_s, e.end + window_s + tolerance_s)) for e in events)
    covered, cur0, cur1 = 0.0, None, None
    for a, b in spans:
        if cur1 is None or a > cur1:
            if cur1 is not None:
                covered += cur1 - cur0
            cur0, cur1 = a, b
        else:
            cur1 = max(cur1, b)
    if cur1 is not None:
        covered += cur1 - cur0
    return max(0.0, total_s - covered)


def match(
    events: Sequence[Event],
    found: Iterable[Detection],
    window_s: float,
    total_s: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    background: Iterable[str] = (),
) -> Matched:
    """Events found, wrong labels and false alarms of one stream (rules in the module docstring)."""
    background = set(background)
    events = sorted(events, key=lambda e: e.start)
    starts = np.array([e.start for e in events])
    first_hit: dict[int, float] = {}
    wrong: set[int] = set()
    m = Matched(events=len(events), non_event_s=non_event_seconds(events, total_s, window_s, tolerance_s))
    for d in sorted(found, key=lambda d: d.t):
        if d.label in background:
            continue
        lo, hi = d.t - window_s, d.t
        # events that start before the window ends and whose span reaches into it
        stop = int(np.searchsorted(starts, hi, side="left"))
        best, best_ov = None, 0.0
        for i in range(stop - 1, -1, -1):
            e = events[i]
            if e.end + tolerance_s + window_s < lo:  # far behind: nothing earlier can overlap (spans are short)
                break
            ov = _overlap(lo, hi, e.start, e.end + tolerance_s)
            if ov > best_ov:
                best, best_ov = i, ov
        if best is None:
            m.false_alarms += 1
            m.false_alarms_per_label[d.label] = m.false_alarms_per_label.get(d.label, 0) + 1
        elif events[best].label == d.label:
            first_hit.setdefault(best, d.t)
        else:
            m.wrong_label_detections += 1
            wrong.add(best)
    m.found = len(first_hit)
    m.wrong_label_events = len(wrong - set(first_hit))
    m.latencies = [first_hit[i] - events[i].end for i in sorted(first_hit)]
    for i, e in enumerate(events):
        cur = m.per_label.setdefault(e.label, [0, 0])
        cur[1] += 1
        cur[0] += int(i in first_hit)
    return m


@dataclass(frozen=True)
class StreamSet:
    """Streams read from a folder: audio, events and total length of each."""

    items: list[tuple[str, np.ndarray, int, list[Event]]]

    @classmethod
    def read(cls, folder: Path) -> "StreamSet":
        from edgekd_train.streams.build import read_stream

        paths = sorted(Path(folder).glob("*.json"))
        if not paths:
            raise FileNotFoundError(f"{folder}: no streams (*.json beside *.flac); build them with `edgekd train streams build`")
        items = []
        for p in paths:
            audio, rate, events, _ = read_stream(p)
            items.append((p.stem, audio, rate, events))
        return cls(items)

    @property
    def hours(self) -> float:
        return sum(len(a) / r for _, a, r, _ in self.items) / 3600.0


def score_model(
    model: Model,
    streams: StreamSet,
    config: dict[str, Any] | None = None,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> Matched:
    """One model with one configuration over every stream."""
    total = Matched()
    for _, audio, rate, events in streams.items:
        found = detections(model, audio, rate, config)
        total = total.add(match(events, found, model.meta.window_seconds, len(audio) / rate, tolerance_s,
                                model.meta.background))
    return total


def window_scores(model: Model, audio: np.ndarray, rate: int, hop_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """End times and scores of every window the pipeline classifies (gated windows excluded)."""
    config: dict[str, Any] = {"defaults": {"mode": "all", "smoothing": 1, "threshold": 1.0}}
    if hop_s:
        config["model"] = {"hop": hop_s}
    results, ends = _published(model, audio, rate, config)
    labels = model.meta.labels
    scores = np.array([[p.scores[label] for label in labels] for p in results], dtype=np.float64)
    return np.array(ends), scores.reshape(len(ends), len(labels))


def replay(model: Model, times: np.ndarray, scores: np.ndarray, config: dict[str, Any]) -> list[Detection]:
    """Detections of the runtime's post-processing, configured as `serve` would be, over recorded windows."""
    post = _runners(model, config)[0].post
    out = []
    for t, s in zip(times, scores):
        d = post.step(s, float(t))
        if d is not None and d.detected:
            out.append(Detection(float(t), d.label, d.score))
    return out


def sweep(
    model: Model,
    streams: StreamSet,
    thresholds: Sequence[float],
    smoothings: Sequence[int],
    refractory_s: float,
    hop_s: float | None = None,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    recorded: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
) -> list[dict[str, Any]]:
    """Recall, false alarms per hour and wrong labels over a grid of thresholds and smoothings. Each
    point records the hop asked for, or the model's default (its operating point's, else a quarter
    window) when none was."""
    op = model.meta.operating_point
    hop_used = hop_s or (op.hop_s if op is not None else default_hop(model.meta.window_samples) / model.meta.sample_rate)
    if recorded is None:
        recorded = record_windows(model, streams, hop_s)
    targets = [label for label in model.meta.labels if label not in model.meta.background]
    points = []
    for smoothing in smoothings:
        for threshold in thresholds:
            cfg: dict[str, Any] = {"defaults": {"threshold": float(threshold), "smoothing": int(smoothing),
                                                "refractory": float(refractory_s), "mode": "events"}}
            if hop_s:
                cfg["model"] = {"hop": hop_s}
            total = replay_streams(model, streams, recorded, cfg, tolerance_s)
            s = total.summary()
            points.append({"smoothing": int(smoothing), "threshold": float(threshold), "refractory_s": refractory_s,
                           "hop_s": hop_used, **{k: s[k] for k in ("recall", "false_alarms_per_hour", "wrong_label_rate",
                                                                 "events", "false_alarms", "non_event_hours")},
                           # each label's own detections: events of it found, false alarms raised by it
                           "per_label": {label: [total.per_label.get(label, [0, 0])[0],
                                                 total.per_label.get(label, [0, 0])[1],
                                                 total.false_alarms_per_label.get(label, 0)] for label in targets}})
    return points


def record_windows(model: Model, streams: StreamSet, hop_s: float | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every stream's classified windows (end times, scores), for replaying post-processing over them."""
    return [window_scores(model, audio, rate, hop_s) for _, audio, rate, _ in streams.items]


def replay_streams(model: Model, streams: StreamSet, recorded: Sequence[tuple[np.ndarray, np.ndarray]],
                   config: dict[str, Any], tolerance_s: float = DEFAULT_TOLERANCE_S) -> Matched:
    """The runtime's post-processing under `config` over recorded windows, matched to every stream's events."""
    total = Matched()
    for (times, scores), (_, audio, rate, events) in zip(recorded, streams.items):
        found = replay(model, times, scores, config)
        total = total.add(match(events, found, model.meta.window_seconds, len(audio) / rate, tolerance_s,
                                model.meta.background))
    return total


def choose_per_label(points: Sequence[dict[str, Any]], max_false_alarms_per_hour: float) -> dict[str, Any] | None:
    """One threshold per label, within the false-alarm aim, for the most events found.

    The runtime detects a label only when it is the top label after smoothing (which no threshold
    changes) and its smoothed score passes that label's threshold, with a refractory period per
    label. So the detections under per-label thresholds are, label by label, exactly those of a
    sweep point whose single threshold is that label's; the events found and the false alarms are
    their sums (each point's `per_label`). For each smoothing, a knapsack over false alarms (at most
    the aim times the non-event hours, whole alarms) picks the thresholds that find the most events;
    ties go to fewer false alarms, then to higher thresholds. Returns the best smoothing's choice,
    to be checked by a replay with those thresholds (`choose` in the streams CLI does), or None
    when no choice meets the aim."""
    best: dict[str, Any] | None = None
    for smoothing in sorted({p["smoothing"] for p in points}):
        group = [p for p in points if p["smoothing"] == smoothing]
        hours = group[0]["non_event_hours"]
        budget = int(np.floor(max_false_alarms_per_hour * hours + 1e-9))
        # reachable false alarms -> (found, sum of thresholds, {label: threshold})
        states: dict[int, tuple[int, float, dict[str, float]]] = {0: (0, 0.0, {})}
        for label in group[0]["per_label"]:
            options = sorted({(p["threshold"], p["per_label"][label][0], p["per_label"][label][2]) for p in group})
            nxt: dict[int, tuple[int, float, dict[str, float]]] = {}
            for fa_used, (found, tsum, chosen) in states.items():
                for threshold, f, fa in options:
                    total = fa_used + fa
                    if total > budget:
                        continue
                    cand = (found + f, tsum + threshold, {**chosen, label: threshold})
                    if total not in nxt or cand[:2] > nxt[total][:2]:
                        nxt[total] = cand
            states = nxt
        if not states:
            continue
        fa, (found, tsum, thresholds) = max(states.items(), key=lambda kv: (kv[1][0], -kv[0], kv[1][1]))
        events = group[0]["events"]
        cand = {"smoothing": smoothing, "thresholds": thresholds, "threshold": max(thresholds.values(), default=max(p["threshold"] for p in group)),
                "refractory_s": group[0]["refractory_s"], "hop_s": group[0]["hop_s"], "events": events,
                "found": found, "false_alarms": fa, "recall": found / events if events else float("nan"),
                "false_alarms_per_hour": fa / hours if hours else float("nan")}
        if best is None or (cand["recall"], -cand["false_alarms_per_hour"]) > (best["recall"], -best["false_alarms_per_hour"]):
            best = cand
    return best


def choose(points: Sequence[dict[str, Any]], max_false_alarms_per_hour: float) -> dict[str, Any] | None:
    """The point with the best recall at no more than the given false alarms per hour (ties: fewer
    false alarms, then the higher threshold). None when no point meets the aim."""
    ok = [p for p in points if p["false_alarms_per_hour"] <= max_false_alarms_per_hour]
    if not ok:
        return None
    return max(ok, key=lambda p: (p["recall"], -p["false_alarms_per_hour"], p["threshold"], -p["smoothing"]))


def default_thresholds() -> list[float]:
    """Every 0.05 from 0.5 to 0.9, then a grid dense near 1, where detectors of rare events operate."""
    return sorted({round(float(x), 6) for x in np.concatenate([np.linspace(0.5, 0.9, 9), 1 - np.logspace(-1, -5, 25)])})


def utterance_labels(events: Sequence[Event], times: np.ndarray, scores: np.ndarray, window_s: float,
                     labels: Sequence[str]) -> list[str | None]:
    """Each utterance's label: the top of the mean scores of the windows centred inside it (else the
    window that overlaps it most); None when no classified window touches it."""
    centres = times - window_s / 2
    out: list[str | None] = []
    for e in events:
        inside = (centres >= e.start) & (centres <= e.end)
        if not inside.any():
            overlap = np.minimum(times, e.end) - np.maximum(times - window_s, e.start)
            if len(overlap) == 0 or overlap.max() <= 0:
                out.append(None)
                continue
            inside = overlap == overlap.max()
        out.append(labels[int(np.argmax(scores[inside].mean(axis=0)))])
    return out


def utterance_accuracy(model: Model, streams: StreamSet, hop_s: float | None = None) -> dict[str, Any]:
    """Utterance-level accuracy on streams of whole utterances, overall and per corpus of the events'
    sources (`corpus:file`), with 95% Wilson intervals."""
    right: dict[str, list[int]] = {}
    for _, audio, rate, events in streams.items:
        times, scores = window_scores(model, audio, rate, hop_s)
        for e, got in zip(events, utterance_labels(events, times, scores, model.meta.window_seconds, model.meta.labels)):
            for key in ("all", e.source.split(":", 1)[0]):
                r = right.setdefault(key, [0, 0])
                r[0] += int(got == e.label)
                r[1] += 1
    return {k: {"accuracy": k_n[0] / k_n[1], "n": k_n[1], "ci95": wilson(k_n[0], k_n[1])} for k, k_n in sorted(right.items())}
