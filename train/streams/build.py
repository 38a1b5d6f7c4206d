"""Long test streams: hours of background audio with a task's events at known times.

A stream is planned first (which clip goes where, at what level), then rendered into one array and
written as 16-bit FLAC beside a JSON event list. Everything comes from a seeded generator, so the
same sources, plan and seed give the same audio and the same events.

Layout of a stream: a continuous noise bed under everything; stretches of background (speech,
the task's own non-target classes, other tasks' sounds, louder noise) one clip after another;
now and then a gap of bed alone, one event, and another gap. An event's start and end are where
its clip is audible (frames within `ACTIVE_RANGE_DB` of the clip's loudest), not the clip's edges.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd_train.data.clips import Clip

log = logging.getLogger(__name__)

FRAME_S = 0.01
ACTIVE_RANGE_DB = 30.0  # frames this far below a clip's loudest frame are not part of the event
SILENT_DBFS = -70.0  # and never frames quieter than this
STREAM_FORMAT = "edgekd-stream/1"


@dataclass(frozen=True)
class StreamPlan:
    """Timing and levels of a stream (seconds and dBFS RMS over the audible part)."""

    background_between_events_s: tuple[float, float] = (4.0, 16.0)
    gap_s: tuple[float, float] = (0.5, 1.5)  # bed alone before and after an event
    pause_s: tuple[float, float] = (0.0, 0.6)  # between background clips
    event_dbfs: tuple[float, float] = (-34.0, -14.0)
    background_dbfs: tuple[float, float] = (-38.0, -12.0)
    bed_dbfs: tuple[float, float] = (-62.0, -44.0)
    noise_burst_s: tuple[float, float] = (1.0, 5.0)
    # how often each kind of background is picked (kinds a task lacks are left out)
    kind_weights: dict[str, float] = field(
        default_factory=lambda: {"speech": 0.5, "non_target": 0.2, "distractor": 0.15, "noise": 0.15}
    )


@dataclass(frozen=True)
class StreamSources:
    """What a task's streams are made of, from one held-out part of its split."""

    task: str
    part: str
    rate: int
    events: list[Clip]  # labelled by the target they are
    background: dict[str, list[Clip]]  # kind -> clips
    noise: list[np.ndarray]  # held-out stretches of the noise recordings, at `rate`
    window_s: float = 1.0  # the task's window: what a detection of an event may lag by
    notes: dict[str, Any] = field(default_factory=dict)  # what was excluded and why


@dataclass(frozen=True)
class Event:
    start: float
    end: float
    label: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"start": round(self.start, 4), "end": round(self.end, 4), "label": self.label, "source": self.source}


@dataclass
class Stream:
    audio: np.ndarray
    rate: int
    events: list[Event]
    info: dict[str, Any]

    @property
    def seconds(self) -> float:
        return len(self.audio) / self.rate


def active_span(x: np.ndarray, rate: int) -> tuple[int, int]:
    """First and one-past-last sample of the audible part of a clip (whole clip if none stands out)."""
    hop = max(1, int(FRAME_S * rate))
    n = len(x) // hop
    if n == 0:
        return 0, len(x)
    frames = x[: n * hop].astype(np.float64).reshape(n, hop)
    db = 10.0 * np.log10(np.mean(frames * frames, axis=1) + 1e-20)
    loud = db >= max(db.max() - ACTIVE_RANGE_DB, SILENT_DBFS)
    idx = np.flatnonzero(loud)
    if len(idx) == 0:
        return 0, len(x)
    return int(idx[0] * hop), int(min(len(x), (idx[-1] + 1) * hop))


def scale_to(x: np.ndarray, dbfs: float, span: tuple[int, int] | None = None) -> np.ndarray:
    """`x` less its mean (a recording's DC offset), scaled so that its RMS over `span` (default: all) is `dbfs`."""
    x = x - np.mean(x, dtype=np.float64)
    a, b = span if span is not None else (0, len(x))
    part = x[a:b].astype(np.float64)
    rms = float(np.sqrt(np.mean(part * part))) if len(part) else 0.0
    if rms <= 0:
        return x.astype(np.float32)
    return (x * (10.0 ** (dbfs / 20.0) / rms)).astype(np.float32)


class _Cycle:
    """Clips in a seeded shuffled order; every clip is used once before any is used again."""

    def __init__(self, clips: Sequence[Clip], rng: np.random.Generator) -> None:
        self.clips = list(clips)
        self.rng = rng
        self.order: list[int] = []
        self.uses = 0

    def next(self) -> Clip:
        if not self.order:
            self.order = list(self.rng.permutation(len(self.clips)))
        self.uses += 1
        return self.clips[self.order.pop()]


def build_stream(
    sources: StreamSources,
    seconds: float,
    seed: int,
    decode: Callable[[Path, int], np.ndarray],
    plan: StreamPlan | None = None,
    max_events: int | None = None,
) -> Stream:
    """One stream of about `seconds` seconds (it ends after the clip that crosses that length), or
    with `max_events`, one that ends after that many events (each clip once when it is the number
    of event clips)."""
    plan = plan or StreamPlan()
    rng = np.random.default_rng(seed)
    rate = sources.rate
    kinds = [k for k, w in plan.kind_weights.items() if w > 0 and (sources.background.get(k) or (k == "noise" and sources.noise))]
    if not kinds:
        raise ValueError(f"{sources.task} {sources.part}: no background sources to build a stream from")
    if not sources.events:
        raise ValueError(f"{sources.task} {sources.part}: no events to place")
    weights = np.array([plan.kind_weights[k] for k in kinds], dtype=np.float64)
    weights /= weights.sum()
    cycles = {k: _Cycle(v, rng) for k, v in sources.background.items() if v}
    event_cycle = _Cycle(sources.events, rng)
    cache: dict[Path, np.ndarray | None] = {}
    undecodable: list[str] = []

    def clip_audio(c: Clip) -> np.ndarray | None:
        if c.path not in cache:
            try:
                x = np.asarray(decode(c.path, rate), dtype=np.float32)
                cache[c.path] = x if len(x) and np.isfinite(x).all() else None
            except Exception as exc:  # a corpus's broken file is skipped and named, never fatal
                cache[c.path] = None
                undecodable.append(f"{c.path}: {exc}")
        return cache[c.path]

    pieces: list[tuple[int, np.ndarray]] = []
    events: list[Event] = []
    counts: dict[str, int] = {k: 0 for k in kinds}
    t = 0  # samples
    total = int(seconds * rate)
    while (t < total) if max_events is None else (len(events) < max_events):
        stretch_end = t + int(rng.uniform(*plan.background_between_events_s) * rate)
        while t < stretch_end:
            kind = kinds[int(rng.choice(len(kinds), p=weights))]
            if kind == "noise":
                rec = sources.noise[int(rng.integers(len(sources.noise)))]
                n = min(len(rec), int(rng.uniform(*plan.noise_burst_s) * rate))
                off = int(rng.integers(0, len(rec) - n + 1))
                x = scale_to(rec[off : off + n], rng.uniform(*plan.background_dbfs))
            else:
                raw = clip_audio(cycles[kind].next())
                if raw is None:
                    continue
                x = scale_to(raw, rng.uniform(*plan.background_dbfs), active_span(raw, rate))
            pieces.append((t, x))
            counts[kind] += 1
            t += len(x) + int(rng.uniform(*plan.pause_s) * rate)
        t += int(rng.uniform(*plan.gap_s) * rate)
        clip = event_cycle.next()
        raw = clip_audio(clip)
        if raw is None:
            if len(undecodable) >= len(sources.events):
                raise ValueError(f"{sources.task} {sources.part}: no event clip could be decoded ({undecodable[0]})")
            continue
        span = active_span(raw, rate)
        x = scale_to(raw, rng.uniform(*plan.event_dbfs), span)
        pieces.append((t, x))
        events.append(Event((t + span[0]) / rate, (t + span[1]) / rate, clip.label, f"{clip.corpus}:{clip.path.name}"))
        t += len(x) + int(rng.uniform(*plan.gap_s) * rate)

    audio = _bed(sources.noise, t, rng, plan, rate)
    for start, x in pieces:
        audio[start : start + len(x)] += x
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    if peak > 0.99:  # rare: loud clips over a loud bed; scale the whole stream, events keep their times
        audio *= 0.99 / peak
    info = {
        "format": STREAM_FORMAT,
        "task": sources.task,
        "part": sources.part,
        "seed": seed,
        "rate": rate,
        "seconds": round(t / rate, 3),
        "n_events": len(events),
        "background_clips": counts,
        "reused": {k: max(0, c.uses - len(c.clips)) for k, c in cycles.items()},
        "event_clips": len(sources.events),  # each stream draws from all of them; streams may share clips
        "events_reused": max(0, event_cycle.uses - len(event_cycle.clips)),
        "undecodable": undecodable,
        "plan": asdict(plan),
        "sources": sources.notes,
    }
    return Stream(audio.astype(np.float32), rate, events, info)


def _bed(noise: Sequence[np.ndarray], n: int, rng: np.random.Generator, plan: StreamPlan, rate: int) -> np.ndarray:
    """A continuous noise bed of `n` samples: held-out noise, recording after recording, at a quiet level."""
    out = np.zeros(n, dtype=np.float32)
    if not noise:
        return out
    level = rng.uniform(*plan.bed_dbfs)
    t = 0
    while t < n:
        rec = noise[int(rng.integers(len(noise)))]
        take = min(len(rec), n - t)
        off = int(rng.integers(0, len(rec) - take + 1))
        out[t : t + take] = scale_to(rec[off : off + take], level)
        t += take
    return out


def write_stream(stream: Stream, folder: Path, name: str) -> Path:
    """`name.flac` (16-bit) and `name.json` (the event list and how the stream was made)."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    audio_path = folder / f"{name}.flac"
    sf.write(audio_path, stream.audio, stream.rate, subtype="PCM_16")
    doc = {**stream.info, "audio": audio_path.name, "events": [e.to_dict() for e in stream.events]}
    (folder / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    return audio_path


def read_stream(json_path: Path) -> tuple[np.ndarray, int, list[Event], dict[str, Any]]:
    """The audio, rate, events and info of a stream written by `write_stream`."""
    import soundfile as sf

    doc = json.loads(Path(json_path).read_text())
    if doc.get("format") != STREAM_FORMAT:
        raise ValueError(f"{json_path}: not an edgekd stream (format {doc.get('format')!r}, want {STREAM_FORMAT})")
    audio, rate = sf.read(Path(json_path).parent / doc["audio"], dtype="float32", always_2d=False)
    events = [Event(e["start"], e["end"], e["label"], e.get("source", "")) for e in doc["events"]]
    return audio, int(rate), events, doc
