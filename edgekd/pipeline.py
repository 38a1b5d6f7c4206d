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
from edgekd.failures import ModelFailures
from edgekd.model import ModelRunError, RunCancelled
from edgekd.payloads import Latency, ModelStats, ResultPayload
from edgekd.postprocess import Decision, PostConfig, PostProcessor, argmax
from edgekd.result_ids import new_instances, result_id
from edgekd.sink import ResultSink
from edgekd.split import SharedFrontEnds, SplitScorer
from edgekd.stateful import StatefulScorer
from edgekd.stats import ModelCounters

log = logging.getLogger(__name__)

SILENCE_DB = -200.0
NONFINITE_LOG_INTERVAL_S = 60.0  # rate limit for "NaN or infinite scores" errors, per model


class Scorer(Protocol):
    """What the pipeline needs of a model (edgekd.model.Model, or a fake in tests)."""

    meta: ModelMetadata
    short_hash: str

    def scores(self, windows: np.ndarray) -> np.ndarray:
        """Scores `[batch, n_labels]`; raises ModelRunError for a failed window, RunCancelled after a cancel."""
        ...


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
        self.failures = ModelFailures(self.meta.name)
        self.gate: Gate | None = None
        self.seq = 0
        self.instance = ""  # set by the Pipeline: the random part of this model's result ids
        self.last_label: str | None = None  # top label of the latest classified window
        self.last_end_s = -math.inf
        self.last_nonfinite_log = -math.inf
        # set by SharedFrontEnds where the model's split (or stateful) path holds
        self.split: SplitScorer | StatefulScorer | None = None

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
            nonfinite=c.nonfinite,
            windows_per_s=c.windows_per_s(),
            inference_ms=c.inference.summary(),
            pipeline_ms=c.pipeline.summary(),
            failed=self.failures.failed,
            abandoned=c.abandoned,
            state=self.failures.state,
            error=self.failures.error,
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
        # one random instance per model: the same model twice, or two daemons on one device id,
        # never give the same result id
        for r, instance in zip(self.runners, new_instances(len(self.runners))):
            r.instance = instance
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
        # models with the same window and hop (after the front ends' rounding) share one Windower:
        # the samples are copied into one buffer, and each window is handed to those models in turn
        self.windowers: list[list[tuple[Windower, list[ModelRunner]]]] = []
        for _, members in self.groups:
            shared: dict[tuple[int, int], tuple[Windower, list[ModelRunner]]] = {}
            for r in members:
                key = (r.windower.window, r.windower.hop)
                if key in shared:
                    r.windower = shared[key][0]
                    shared[key][1].append(r)
                else:
                    shared[key] = (r.windower, [r])
            self.windowers.append(list(shared.values()))
        self._arrival = 0.0
        self.abandoned = False  # set by abandon(): windows from now on are counted, not classified

    @property
    def all_failed(self) -> bool:
        """Every model was stopped for failing (ModelFailures): nothing is left to classify."""
        return all(r.failures.stopped for r in self.runners)

    def all_failed_error(self) -> ModelRunError:
        """What to say when every model was stopped for failing (serve ends with it)."""
        paths = ", ".join(str(getattr(r.model, "path", r.meta.name)) for r in self.runners)
        why = "; ".join(f"{r.meta.name}: {r.failures.error}" for r in self.runners)
        return ModelRunError(
            paths,
            f"stopped after failing {self.runners[0].failures.limit} windows in a row, and no model is left to run "
            f"({why}); fix the model (check it with `edgekd info`) or remove it from the config",
        )

    def abandon(self) -> None:
        """A stop that cannot wait: cancel the inferences in progress and count, not classify, every later window.

        Safe from another thread; the consumer notices at its next window."""
        self.abandoned = True
        for r in self.runners:
            cancel = getattr(r.model, "cancel", None)
            if cancel is not None:
                cancel()

    def samples_until_window(self) -> int:
        """Source samples still to come before any model's next window ends (at least 1): a reader can
        sleep until then, since feeding fewer completes no window. 1 where a model's audio is
        resampled (the resampler's delay makes the count inexact)."""
        need = None
        for (resampler, _), windowers in zip(self.groups, self.windowers):
            if not resampler.passthrough:
                return 1
            for windower, _ in windowers:
                left = windower.samples_until_window()
                need = left if need is None else min(need, left)
        return max(1, need or 1)

    def feed(self, samples: np.ndarray, arrival: float | None = None) -> None:
        """Mono float32 at the source rate, contiguous with what came before."""
        self._arrival = time.monotonic() if arrival is None else arrival
        samples = self.health.check(samples)
        for (resampler, _), front_ends, windowers in zip(self.groups, self.front_ends, self.windowers):
            self._push(resampler.process(samples), windowers, front_ends)

    def gap(self, source_index: int) -> None:
        """Audio was lost: restart resampling, windows and smoothing at `source_index`."""
        for (resampler, members), front_ends, windowers in zip(self.groups, self.front_ends, self.windowers):
            resampler.reset()
            position = resampler.position_for(source_index)
            front_ends.reset(position)
            for windower, _ in windowers:
                windower.reset(position)
            for r in members:
                r.post.reset()

    def finish(self) -> None:
        """End of stream: drain the resamplers; a stream shorter than a window gets one padded window."""
        for (resampler, _), front_ends, windowers in zip(self.groups, self.front_ends, self.windowers):
            if not resampler.passthrough:
                self._push(resampler.process(np.zeros(0, dtype=np.float32), last=True), windowers, front_ends)
            for windower, runners in windowers:
                for start, window in windower.flush_short():
                    for r in runners:
                        self._handle(r, start, window)

    def _push(self, samples: np.ndarray, windowers: list[tuple[Windower, list[ModelRunner]]],
              front_ends: SharedFrontEnds) -> None:  # fmt: skip
        if not len(samples):
            return
        front_ends.push(samples)  # before the windows: they read the frames these samples complete
        for windower, runners in windowers:
            for start, window in windower.push(samples):
                for r in runners:
                    self._handle(r, start, window)

    def _infer(self, r: ModelRunner, start: int, window: np.ndarray) -> np.ndarray | None:
        """The window's scores (split path where the model has one); None for a window that failed
        (counted in r.failures) or was cancelled."""
        try:
            scores = r.score(start, window)
        except RunCancelled:
            r.counters.abandoned += 1
            return None
        except ModelRunError as exc:
            r.failures.record(exc.problem)
            return None
        if self.abandoned:  # finished after the stop bound ran out: the sink may be closing
            r.counters.abandoned += 1
            return None
        r.failures.succeeded()
        return scores

    def _handle(self, r: ModelRunner, start: int, window: np.ndarray) -> None:
        if r.failures.stopped:
            return
        if self.abandoned:
            r.counters.abandoned += 1
            return
        end_s = (start + len(window)) / r.rate
        gate_db = r.spec.gate_db
        if (gate_db is not None and window_dbfs(window) < gate_db) or (r.gate is not None and not r.gate.allow(end_s)):
            r.counters.gated += 1
            return
        t = time.perf_counter()
        scores = self._infer(r, start, window)
        if scores is None:
            return
        inference_ms = (time.perf_counter() - t) * 1000.0
        r.counters.windows += 1
        r.counters.inference.add(inference_ms)
        values = scores.tolist()  # Python floats: a dozen labels cost less as a list than as numpy calls
        total = sum(values)
        if total - total != 0.0:  # a NaN or an infinity among the scores
            self._nonfinite(r, start)
            return
        decision = r.post.step(values, end_s)
        r.last_label = r.meta.labels[argmax(values)] if decision is None else decision.label
        r.last_end_s = end_s
        if decision is None:
            r.counters.pipeline.add((time.monotonic() - self._arrival) * 1000.0)
            return
        payload = self.result(r, start, len(window), decision, inference_ms)
        self.sink.publish_result(payload)
        r.counters.published += 1
        r.counters.pipeline.add(payload.latency_ms.pipeline)

    def _nonfinite(self, r: ModelRunner, start: int) -> None:
        """A window whose scores are NaN or infinite: counted, logged (rate limited), never published,
        and kept out of the smoothing history."""
        r.counters.nonfinite += 1
        now = time.monotonic()
        if now - r.last_nonfinite_log < NONFINITE_LOG_INTERVAL_S:
            return
        r.last_nonfinite_log = now
        log.error(
            "model %s (%s): the window at %.2f s gave NaN or infinite scores; not published (%d such windows so "
            "far, counted as nonfinite in the stats). The model is broken for this input: re-export it from a "
            "checkpoint whose outputs are finite (`edgekd classify FILE` shows which audio triggers it)",
            r.meta.name, r.model.short_hash, start / r.rate, r.counters.nonfinite,
        )

    def result(self, r: ModelRunner, start: int, length: int, d: Decision, inference_ms: float) -> ResultPayload:
        seq = r.seq
        r.seq += 1
        pipeline_ms = max(0.0, (time.monotonic() - self._arrival) * 1000.0)
        return ResultPayload(
            id=result_id(self.device, r.model.short_hash, r.instance, self.run_id, seq),
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
        key, colon, label = r.spec.gate.partition(":")
        if not colon or not key or not label:
            raise ValueError(f'gate {r.spec.gate!r} of model {r.meta.name}: expected "MODEL_OR_TASK:LABEL", e.g. "cough:cough"')
        source = find_runner([x for x in runners if x is not r], key)
        if source is None:
            names = sorted({n for x in runners if x is not r for n in x.names()})
            raise ValueError(f"gate {r.spec.gate!r} of model {r.meta.name}: no other model is named {key!r} (have {names})")
        r.gate = LabelGate(source, label, hold_s=max(r.meta.window_seconds, source.hop_seconds * 2))
    for r in runners:  # a model that waits, through other models, on itself would never run
        chain, current = [r.meta.name], r
        while isinstance(current.gate, LabelGate):
            current = current.gate.source
            chain.append(current.meta.name)
            if current is r:
                raise ValueError(
                    f"gates form a loop ({' -> '.join(chain)}): none of these models would ever run; "
                    "remove the gate from one of them"
                )
            if len(chain) > len(runners):
                break
