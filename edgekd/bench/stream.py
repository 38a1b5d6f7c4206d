"""The paths of a model on a stream at one hop, side by side: whole windows, the split path, and the
stateful path where the file has one.

Whole: every hop, the whole graph runs on the latest window. Split (a file with `edgekd.frontend`
and `edgekd.body`, checked as `serve` checks it): every hop, the shared front end computes the
frames of the hop's new samples and the body runs on the window's frames. Stateful (a file with
`edgekd.stream`, checked as `serve` checks it): every hop, the front end computes the new frames
and the step graph runs on those alone, with the model's state. Each window's time
covers all of that (front end included); CPU time is the process's over the same runs. The two
paths run in interleaved slices on the same seeded noise, so a shared machine's drift hits both.
`cpu_ms_per_audio_s` = CPU per window x windows per audio second at the hop.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from edgekd.bench.measure import SLICE_S, Budget, Loaded
from edgekd.bench.results import latency_stats
from edgekd.frontend import LogMelStream
from edgekd.model import logits_to_scores
from edgekd.split import SplitModel, load_split, shared_hop
from edgekd.stateful import BoundState, StepModel, load_stream

NOISE_RMS = 0.1
NOISE_SECONDS = 10  # the noise loops; its content does not change the cost


class _Paths:
    def __init__(self, item: Loaded, split: SplitModel, hop: int, step: StepModel | None = None) -> None:
        meta = item.model.meta
        self.model = item.model
        self.split = split
        self.hop = hop
        self.window = meta.window_samples
        n = max(NOISE_SECONDS * meta.sample_rate, 2 * self.window)
        self.audio = (NOISE_RMS * np.random.default_rng(0).standard_normal(n)).astype(np.float32)
        self.stream = LogMelStream(split.spec, keep=split.frames_per_window)
        self.stream.push(self.audio[: self.window])
        self.pos = self.window
        self.feed = {item.model.input_name: self.audio[None, : self.window].copy()}
        self.out = [item.model.output_name]
        self.paths = ("whole", "split") if step is None else ("whole", "split", "stateful")
        self.lat: dict[str, list[int]] = {p: [] for p in self.paths}
        self.cpu: dict[str, float] = {p: 0.0 for p in self.paths}
        self.step = step
        if step is not None:  # its own stream and position: each path's time covers its own front end
            self.step_stream = LogMelStream(split.spec, keep=split.frames_per_window)
            self.step_state = BoundState(step)  # as serve keeps it
            self.step_pos = self.window
            self.step_stream.push(self.audio[: self.window])
            self.step_state.advance(self.step_stream.frames(0, split.frames_per_window))

    def _chunk(self) -> np.ndarray:
        if self.pos + self.hop > len(self.audio):
            self.pos = 0
            self.stream.reset(0)  # a loop is a gap: start the frames afresh
            self.stream.push(self.audio[: self.window])
            self.pos = self.window
        chunk = self.audio[self.pos : self.pos + self.hop]
        self.pos += self.hop
        return chunk

    def whole_window(self) -> None:
        self.model.session.run(self.out, self.feed)

    def split_window(self) -> None:
        self.stream.push(self._chunk())
        frames = self.stream.frames(self.stream.available - self.split.frames_per_window, self.split.frames_per_window)
        logits_to_scores(self.split.window_logits(frames), self.split.multi_label)  # as serve runs a window

    def stateful_window(self) -> None:
        assert self.step is not None
        if self.step_pos + self.hop > len(self.audio):  # a loop is a gap: frames and state afresh
            self.step_pos = self.window
            self.step_stream.reset(0)
            self.step_stream.push(self.audio[: self.window])
            self.step_state.zero()
            self.step_state.advance(self.step_stream.frames(0, self.split.frames_per_window))
        self.step_stream.push(self.audio[self.step_pos : self.step_pos + self.hop])
        self.step_pos += self.hop
        n = self.hop // self.split.spec.hop
        logits = self.step_state.advance(self.step_stream.frames(self.step_stream.available - n, n))
        self.step.scores(logits)

    def run_slice(self, path: str, limit: int | None) -> None:
        step: Callable[[], None] = {"whole": self.whole_window, "split": self.split_window,
                                    "stateful": self.stateful_window}[path]  # fmt: skip
        perf = time.perf_counter_ns
        cpu0 = time.process_time()
        end_by = perf() + int(SLICE_S * 1e9)
        taken = 0
        while True:
            t0 = perf()
            step()
            t1 = perf()
            self.lat[path].append(t1 - t0)
            taken += 1
            if (limit is not None and taken >= limit) or t1 >= end_by:
                break
        self.cpu[path] += time.process_time() - cpu0

    def result(self, requested_hop: int) -> dict[str, Any]:
        rate = self.model.meta.sample_rate
        per_audio_s = rate / self.hop  # windows per audio second
        out: dict[str, Any] = {"hop_ms": 1e3 * self.hop / rate, "requested_hop_ms": 1e3 * requested_hop / rate,
                               "frontend": self.split.spec.to_dict()}  # fmt: skip
        for path in self.paths:
            cpu_ms = 1e3 * self.cpu[path] / len(self.lat[path])
            out[path] = {
                "windows": len(self.lat[path]),
                "latency_ms": latency_stats(np.asarray(self.lat[path], dtype=np.int64)),
                "cpu_ms_per_window": cpu_ms,
                "cpu_ms_per_audio_s": cpu_ms * per_audio_s,
                "models_per_core": 1e3 / (cpu_ms * per_audio_s) if cpu_ms > 0 else None,
            }
        split_cpu = out["split"]["cpu_ms_per_window"]
        out["speedup_cpu"] = out["whole"]["cpu_ms_per_window"] / split_cpu if split_cpu > 0 else None
        if "stateful" in out:
            step_cpu = out["stateful"]["cpu_ms_per_window"]
            out["stateful_speedup_cpu"] = out["whole"]["cpu_ms_per_window"] / step_cpu if step_cpu > 0 else None
        return out


def time_both_paths(
    models: list[Loaded], hop_ms: float, budget: Budget, progress: Callable[[float, str], None] | None = None
) -> dict[int, dict[str, Any]]:
    """By index into `models`: both paths' figures, or `{"unavailable": why}` for a model without a split path."""
    out: dict[int, dict[str, Any]] = {}
    runs: list[tuple[int, _Paths, int]] = []
    for i, item in enumerate(models):
        split = load_split(item.model)
        if split is None:
            out[i] = {"unavailable": "no checked front end and body in the file (add them with `edgekd train "
                                     "stream-parts`, or see the log)"}  # fmt: skip
            continue
        meta = item.model.meta
        requested = max(1, int(round(hop_ms * meta.sample_rate / 1e3)))
        hop = shared_hop(requested, split.spec.hop, meta.window_samples)
        paths = _Paths(item, split, hop, load_stream(item.model))
        for _ in range(budget.warmup):
            paths.whole_window()
            paths.split_window()
            if paths.step is not None:
                paths.stateful_window()
        runs.append((i, paths, requested))
    round_no = 0
    while runs:
        pending = [(i, p) for i, p, _ in runs if not _done(p, budget)]
        if not pending:
            break
        for k in range(len(pending)):
            _, p = pending[(round_no + k) % len(pending)]
            for path in p.paths if round_no % 2 == 0 else p.paths[::-1]:
                limit = None if budget.windows is None else budget.windows - len(p.lat[path])
                if limit is None or limit > 0:
                    p.run_slice(path, limit)
        round_no += 1
        if progress is not None:
            progress(min(_fraction(p, budget) for _, p, _ in runs), f"round {round_no}")
    for i, p, requested in runs:
        out[i] = p.result(requested)
    return out


def _wall_s(p: _Paths, path: str) -> float:
    return sum(p.lat[path]) / 1e9


def _done(p: _Paths, budget: Budget) -> bool:
    if budget.windows is not None:
        return all(len(p.lat[path]) >= budget.windows for path in p.lat)
    return all(_wall_s(p, path) >= budget.seconds / 2 and p.lat[path] for path in p.lat)


def _fraction(p: _Paths, budget: Budget) -> float:
    if budget.windows is not None:
        return min(1.0, min(len(v) for v in p.lat.values()) / budget.windows)
    return min(1.0, min(_wall_s(p, path) for path in p.lat) / (budget.seconds / 2)) if budget.seconds > 0 else 1.0
