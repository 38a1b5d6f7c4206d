"""Per-model post-processing: smoothing, thresholds, a refractory period, and what to publish.

`PostProcessor.step(scores, t)` takes one window's scores and the time of the window's end (in
stream seconds) and returns a `Decision`, or None when nothing should be published.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Mode = Literal["all", "events"]
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class PostConfig:
    smoothing: int = 1  # windows averaged (1 = none)
    thresholds: dict[str, float] = field(default_factory=dict)  # per label; others use `threshold`
    threshold: float = DEFAULT_THRESHOLD
    refractory_s: float = 0.0  # after a detection of a label, the same label is not detected again for this long
    mode: Mode = "all"
    background: tuple[str, ...] = ()  # labels that are never detections (`_silence_`, `speech`, ...)


@dataclass(frozen=True)
class Decision:
    label: str
    score: float
    scores: dict[str, float]
    detected: bool
    event: Literal["window", "detection", "change"]


class PostProcessor:
    """One model's post-processing. Works on Python floats (float64, as numpy would): with a dozen
    labels, list arithmetic costs a fraction of numpy's per-call overhead, and this runs every window."""

    def __init__(self, labels: tuple[str, ...] | list[str], config: PostConfig) -> None:
        self.labels = tuple(labels)
        self.config = config
        unknown = sorted(set(config.thresholds) - set(self.labels))
        if unknown:
            raise ValueError(f"thresholds for unknown labels {unknown}; the model's labels are {list(self.labels)}")
        strange = sorted(set(config.background) - set(self.labels))
        if strange:
            raise ValueError(f"background labels {strange} are not among the model's labels {list(self.labels)}")
        self._detectable = [label not in config.background for label in self.labels]
        if config.smoothing < 1:
            raise ValueError(f"smoothing must be at least 1 window, got {config.smoothing}")
        self._thresholds = [float(config.thresholds.get(l, config.threshold)) for l in self.labels]
        self._refractory = float(config.refractory_s)
        self._events_only = config.mode == "events"
        n = len(self.labels)
        self._range = range(n)
        self._history = [[0.0] * n for _ in range(config.smoothing)]
        self._sum = [0.0] * n
        self._filled = 0
        self._next = 0
        self._last_detection = [-math.inf] * n
        self._top: int | None = None

    def reset(self) -> None:
        """Forget history (after a gap in the audio)."""
        n = len(self.labels)
        self._history = [[0.0] * n for _ in range(self.config.smoothing)]
        self._sum = [0.0] * n
        self._filled = 0
        self._next = 0

    def smooth(self, scores: np.ndarray | list[float]) -> list[float]:
        """The mean of the last `smoothing` windows' scores (fewer after a reset), as float64."""
        if isinstance(scores, np.ndarray):
            s = np.asarray(scores, dtype=np.float64).reshape(-1).tolist()
        else:
            s = [float(v) for v in scores]
        if len(self._history) == 1:  # no smoothing: the mean of one window is the window
            self._filled = 1
            return s
        old = self._history[self._next]
        total = self._sum
        for i in self._range:  # the running sum, updated exactly as (sum - old) + new
            total[i] = (total[i] - old[i]) + s[i]
        self._history[self._next] = s
        self._next = (self._next + 1) % len(self._history)
        self._filled = min(self._filled + 1, len(self._history))
        filled = self._filled
        return [v / filled for v in total]

    def step(self, scores: np.ndarray | list[float], t: float) -> Decision | None:
        smoothed = self.smooth(scores)
        top = argmax(smoothed)
        changed = top != self._top
        self._top = top
        detected = (
            self._detectable[top]
            and smoothed[top] >= self._thresholds[top]
            and t - self._last_detection[top] >= self._refractory
        )
        if detected:
            self._last_detection[top] = t
            event = "detection"
        elif changed:
            event = "change"
        else:
            if self._events_only:
                return None
            event = "window"
        # min(1.0, max(0.0, v)) per label: NaN -> 0.0 (max keeps its first argument), -0.0 -> 0.0 (+ 0.0)
        clipped = [min(1.0, max(0.0, v)) + 0.0 for v in smoothed]
        return Decision(
            label=self.labels[top],
            score=clipped[top],
            scores=dict(zip(self.labels, clipped)),
            detected=bool(detected),
            event=event,
        )


def argmax(values: list[float]) -> int:
    """numpy's argmax of a list: the first largest value, or the first NaN where there is one."""
    best, top = values[0], 0
    if best != best:
        return 0
    for i in range(1, len(values)):
        v = values[i]
        if v > best:
            best, top = v, i
        elif v != v:
            return i
    return top
