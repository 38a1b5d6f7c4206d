"""Time models window by window, interleaved so that a shared machine's drift hits all alike.

Every model is loaded through `edgekd.model.Model` (so the contract is checked, exactly as the
daemon would), warmed up, and then run in rounds: in each round every model gets one slice of
wall time (at least one window), in an order that rotates from round to round. A round ends when
all models had their slice, and rounds go on until each model has its time budget or its window
count. Latency is the wall time of one `session.run` on one window; CPU time is the process's CPU
time over the same runs (it counts every onnxruntime thread, spinning included).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgekd.model import Model, ModelRunError, ModelRuntimeOptions, onnxruntime_message

log = logging.getLogger(__name__)

SLICE_S = 0.1  # wall time each model gets per round
NOISE_AMPLITUDE = 0.1  # the timed window: seeded noise at -20 dBFS, not silence

Progress = Callable[[float, str], None]  # fraction done in [0, 1], what is happening


@dataclass(frozen=True)
class Budget:
    """How long to measure each model: a time budget, or an exact window count if `windows` is set."""

    seconds: float = 5.0
    windows: int | None = None
    warmup: int = 10


@dataclass
class Loaded:
    path: Path
    model: Model
    load_s: float


@dataclass
class Timing:
    latencies_ns: np.ndarray
    cpu_s: float
    wall_s: float
    warmup: int

    @property
    def windows(self) -> int:
        return int(self.latencies_ns.size)


@dataclass
class _Acc:
    lat: list[int] = field(default_factory=list)
    cpu_s: float = 0.0
    wall_s: float = 0.0


def load(paths: Sequence[Path], options: ModelRuntimeOptions) -> list[Loaded]:
    """Load each model, timing `Model(path)`: session creation, contract checks, the load probe (edgekd.probe)."""
    loaded = []
    for path in paths:
        t0 = time.perf_counter()
        model = Model(path, options)
        loaded.append(Loaded(path=Path(path), model=model, load_s=time.perf_counter() - t0))
        log.info("loaded %s in %.3f s with %s", path, loaded[-1].load_s, ",".join(model.providers))
    return loaded


def noise_window(window_samples: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (NOISE_AMPLITUDE * rng.standard_normal((1, window_samples))).astype(np.float32)


def time_interleaved(models: Sequence[Loaded], budget: Budget, progress: Progress | None = None) -> list[Timing]:
    """Per-window latencies for every model, measured in interleaved rounds."""
    runs = []
    for item in models:
        session = item.model.session
        feed = {item.model.input_name: noise_window(item.model.meta.window_samples)}
        out = [item.model.output_name]
        with _naming_failures(item.path):
            for _ in range(budget.warmup):
                session.run(out, feed)
        runs.append((item.path, session, out, feed))
    accs = [_Acc() for _ in models]
    n = len(models)
    round_no = 0
    while True:
        pending = [i for i in range(n) if not _done(accs[i], budget)]
        if not pending:
            break
        for k in range(n):
            i = (round_no + k) % n
            if i in pending:
                _slice(runs[i], accs[i], budget)
        round_no += 1
        if progress is not None:
            progress(min(_fraction(a, budget) for a in accs), f"round {round_no}")
    return [
        Timing(latencies_ns=np.asarray(a.lat, dtype=np.int64), cpu_s=a.cpu_s, wall_s=a.wall_s, warmup=budget.warmup)
        for a in accs
    ]


def _done(acc: _Acc, budget: Budget) -> bool:
    if budget.windows is not None:
        return len(acc.lat) >= budget.windows
    return acc.wall_s >= budget.seconds and len(acc.lat) >= 1


def _fraction(acc: _Acc, budget: Budget) -> float:
    if budget.windows is not None:
        return min(1.0, len(acc.lat) / budget.windows)
    return min(1.0, acc.wall_s / budget.seconds) if budget.seconds > 0 else 1.0


@contextlib.contextmanager
def _naming_failures(path: Path) -> Iterator[None]:
    """A failed `session.run` becomes a ModelRunError naming the model (bench stops with its message)."""
    try:
        yield
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument/RuntimeException types
        raise ModelRunError(path, f"inference failed on the timed noise window: {onnxruntime_message(exc)}") from None


def _slice(run: tuple, acc: _Acc, budget: Budget) -> None:
    path, session, out, feed = run
    with _naming_failures(path):
        _timed_runs(session, out, feed, acc, budget)


def _timed_runs(session, out: list[str], feed: dict, acc: _Acc, budget: Budget) -> None:
    perf = time.perf_counter_ns
    cpu0 = time.process_time()
    start = perf()
    end_by = start + int(SLICE_S * 1e9)
    limit = budget.windows - len(acc.lat) if budget.windows is not None else None
    taken = 0
    while True:
        t0 = perf()
        session.run(out, feed)
        t1 = perf()
        acc.lat.append(t1 - t0)
        taken += 1
        if limit is not None and taken >= limit:
            break
        if t1 >= end_by:
            break
    acc.wall_s += (perf() - start) / 1e9
    acc.cpu_s += time.process_time() - cpu0
