"""The consumer side: windows -> model -> post-processing -> payloads -> sink.

`Pipeline.feed(samples, start, arrival)` takes mono audio at the source rate. It resamples once per
distinct model rate and cuts each model's windows by the sample counter, so results depend only
on the samples, never on how they were chunked. `serve` (edgekd.daemon) and `classify` both use it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Protocol

import numpy as np

from edgekd.audio.health import AudioHealth
from edgekd.audio.windowing import Resampler, Windower
from edgekd.contract import ModelMetadata
from edgekd.payloads import Latency, ModelStats, ResultPayload
from edgekd.postprocess import Decision, PostConfig, PostProcessor
from edgekd.sink import ResultSink
from edgekd.split import SharedFrontEnds, SplitScorer
from edgekd.stats import ModelCounters

log = logging.getLogger(__name__)

SILENCE_DB = -200.0


class Scorer(Protocol):
    """What the pipeline needs of a model (edgekd.model.Model, or a fake in tests)."""

    meta: ModelMetadata
    short_hash: str

    def scores(self, windows: np.ndarray) -> np.ndarray: ...


def window_dbfs(window: np.ndarray) -> float:
    """RMS level of a window in dB relative to full scale (a full-scale square wave is 0 dBFS)."""
    power = float(np.dot(window, window)) / len(window)
    return 10.0 * math.log10(power) if power > 0 else SILENCE_DB


class Gate(Protocol):
    def allow(self, window_end_s: float) -> bool: ...


@dataclass(frozen=True)
class RunnerSpec:
    """How one model runs: hop, post-processing, energy gate, and an optional label gate."""

    hop_samples: int
    post: PostConfig
    gate_db: float | None
    gate: str | None = None  # "MODEL_OR_TASK:LABEL"


class ModelRunner:
    """One model on the stream: its windows, post-processing, counters and sequence numbers."""

    def __init__(self, model: Scorer, spec: RunnerSpec) -> None:
        self.model = model
        self.meta = model.meta
        self.spec = spec
        self.windower = Windower(self.meta.window_samples, spec.hop_samples)
        self.post = PostProcessor(self.meta.labels, spec.post)
        self.counters = ModelCounters()
        self.gate: Gate | None = None
        self.seq = 0
        self.last_label: str | None = None  # top label of the latest classified window
        self.last_end_s = -math.inf
        self.split: SplitScorer | None = None  # set by SharedFrontEnds where the model's split path holds

    @property
    def rate(self) -> int:
        return self.meta.sample_rate

    @property
    def hop_seconds(self) -> float:
        return self.spec.hop_samples / self.rate

    def use_hop(self, hop_samples: int) -> None:
        """Change the hop before any audio arrives (SharedFrontEnds: a whole number of frames)."""
        self.spec = replace(self.spec, hop_samples=hop_samples)
        self.windower = Windower(self.meta.window_samples, hop_samples)

    def score(self, start: int, window: np.ndarray) -> np.ndarray:
        """Scores of the window at stream sample `start`: from shared frames where possible, else whole."""
        if self.split is not None:
            scores = self.split.scores(start)
            if scores is not None:
                return scores
        return self.model.scores(window[None, :])[0]

    def names(self) -> tuple[str, ...]:
        return (self.meta.name, self.meta.task)

    def stats(self) -> ModelStats:
        c = self.counters
        return ModelStats(
            model=self.meta.name,
            task=self.meta.task,
            windows=c.windows,
            gated=c.gated,
            published=c.published,
            windows_per_s=c.windows_per_s(),
            inference_ms=c.inference.summary(),
            pipeline_ms=c.pipeline.summary(),
        )


class LabelGate:
    """Let a model run only while another model's latest top label is `label` (e.g. covid after cough)."""

    def __init__(self, source: ModelRunner, label: str, hold_s: float) -> None:
        if label not in source.meta.labels:
            raise ValueError(f"gate label {label!r} is not one of {source.meta.name}'s labels {list(source.meta.labels)}")
        self.source = source
        self.label = label
        self.hold_s = hold_s

    def allow(self, window_end_s: float) -> bool:
        return self.source.last_label == self.label and window_end_s - self.source.last_end_s <= self.hold_s


class Pipeline:
    def __init__(
        self,
        runners: Sequence[ModelRunner],
        source_rate: int,
        sink: ResultSink,
        device: str,
        t0: datetime | None = None,
        run_id: str | None = None,
        source_name: str = "the input",
        split: bool = True,
    ) -> None:
        """`split=False` runs every model on whole windows even where its file has a checked split path."""
        self.runners = list(runners)
        self.health = AudioHealth(source_name, source_rate)  # NaN/Inf -> 0, clipping and DC counted
        self.source_rate = int(source_rate)
        self.sink = sink
        self.device = device
        self.t0 = t0 or datetime.now(timezone.utc)
        self.run_id = run_id or str(int(self.t0.timestamp()))
        # one resampler per distinct model rate, shared by the models at that rate
        self.groups: list[tuple[Resampler, list[ModelRunner]]] = []
        for r in self.runners:
            for resampler, members in self.groups:
                if resampler.out_rate == r.rate:
                    members.append(r)
                    break
            else:
                self.groups.append((Resampler(self.source_rate, r.rate), [r]))
        # one set of shared front ends per group, in the same order
        self.front_ends = [SharedFrontEnds(members if split else []) for _, members in self.groups]
        self._arrival = 0.0

    def feed(self, samples: np.ndarray, arrival: float | None = None) -> None:
        """Mono float32 at the source rate, contiguous with what came before."""
        self._arrival = time.monotonic() if arrival is None else arrival
        samples = self.health.check(samples)
        for (resampler, members), front_ends in zip(self.groups, self.front_ends):
            self._push(resampler.process(samples), members, front_ends)

    def gap(self, source_index: int) -> None:
        """Audio was lost: restart resampling, windows and smoothing at `source_index`."""
        for (resampler, members), front_ends in zip(self.groups, self.front_ends):
            resampler.reset()
            position = resampler.position_for(source_index)
            front_ends.reset(position)
            for r in members:
                r.windower.reset(position)
                r.post.reset()

    def finish(self) -> None:
        """End of stream: drain the resamplers; a stream shorter than a window gets one padded window."""
        for (resampler, members), front_ends in zip(self.groups, self.front_ends):
            if not resampler.passthrough:
                self._push(resampler.process(np.zeros(0, dtype=np.float32), last=True), members, front_ends)
            for r in members:
                for start, window in r.windower.flush_short():
                    self._handle(r, start, window)

    def _push(self, samples: np.ndarray, members: list[ModelRunner], front_ends: SharedFrontEnds) -> None:
        if not len(samples):
            return
        front_ends.push(samples)  # before the windows: they read the frames these samples complete
        for r in members:
            for start, window in r.windower.push(samples):
                self._handle(r, start, window)

    def _handle(self, r: ModelRunner, start: int, window: np.ndarray) -> None:
        end_s = (start + len(window)) / r.rate
        gate_db = r.spec.gate_db
        if (gate_db is not None and window_dbfs(window) < gate_db) or (r.gate is not None and not r.gate.allow(end_s)):
            r.counters.gated += 1
            return
        t = time.perf_counter()
        scores = r.score(start, window)
        inference_ms = (time.perf_counter() - t) * 1000.0
        r.counters.windows += 1
        r.counters.inference.add(inference_ms)
        decision = r.post.step(scores, end_s)
        r.last_label = r.meta.labels[int(np.argmax(scores))] if decision is None else decision.label
        r.last_end_s = end_s
        if decision is None:
            r.counters.pipeline.add((time.monotonic() - self._arrival) * 1000.0)
            return
        payload = self.result(r, start, len(window), decision, inference_ms)
        self.sink.publish_result(payload)
        r.counters.published += 1
        r.counters.pipeline.add(payload.latency_ms.pipeline)

    def result(self, r: ModelRunner, start: int, length: int, d: Decision, inference_ms: float) -> ResultPayload:
        seq = r.seq
        r.seq += 1
        pipeline_ms = max(0.0, (time.monotonic() - self._arrival) * 1000.0)
        return ResultPayload(
            id=f"{self.device}/{r.model.short_hash}/{self.run_id}-{seq}",
            device=self.device,
            model=r.meta.name,
            model_version=r.meta.version,
            model_hash=r.model.short_hash,
            task=r.meta.task,
            label=d.label,
            score=d.score,
            scores=d.scores,
            detected=d.detected,
            event=d.event,
            seq=seq,
            window_start=self.t0 + timedelta(seconds=start / r.rate),
            window_end=self.t0 + timedelta(seconds=(start + length - 1) / r.rate),
            latency_ms=Latency(inference=round(inference_ms, 3), pipeline=round(pipeline_ms, 3)),
        )


def find_runner(runners: Sequence[ModelRunner], key: str) -> ModelRunner | None:
    for r in runners:
        if key in r.names():
            return r
    return None


def attach_gates(runners: Sequence[ModelRunner]) -> None:
    """Resolve each runner's "MODEL_OR_TASK:LABEL" gate against the other runners."""
    for r in runners:
        if not r.spec.gate:
            continue
        key, label = r.spec.gate.split(":", 1)
        source = find_runner([x for x in runners if x is not r], key)
        if source is None:
            names = sorted({n for x in runners if x is not r for n in x.names()})
            raise ValueError(f"gate {r.spec.gate!r} of model {r.meta.name}: no other model is named {key!r} (have {names})")
        r.gate = LabelGate(source, label, hold_s=max(r.meta.window_seconds, source.hop_seconds * 2))
