"""Per-model post-processing: smoothing, thresholds, a refractory period, and what to publish.

`PostProcessor.step(scores, t)` takes one window's scores and the time of the window's end (in
stream seconds) and returns a `Decision`, or None when nothing should be published.
"""

from __future__ import annotations

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
    def __init__(self, labels: tuple[str, ...] | list[str], config: PostConfig) -> None:
        self.labels = tuple(labels)
        self.config = config
        unknown = sorted(set(config.thresholds) - set(self.labels))
        if unknown:
            raise ValueError(f"thresholds for unknown labels {unknown}; the model's labels are {list(self.labels)}")
        strange = sorted(set(config.background) - set(self.labels))
        if strange:
            raise ValueError(f"background labels {strange} are not among the model's labels {list(self.labels)}")
        self._detectable = np.array([label not in config.background for label in self.labels])
        if config.smoothing < 1:
            raise ValueError(f"smoothing must be at least 1 window, got {config.smoothing}")
        self._thresholds = np.array([config.thresholds.get(l, config.threshold) for l in self.labels], dtype=np.float64)
        n = len(self.labels)
        self._history = np.zeros((config.smoothing, n), dtype=np.float64)
        self._sum = np.zeros(n, dtype=np.float64)
        self._filled = 0
        self._next = 0
        self._last_detection = np.full(n, -np.inf)
        self._top: int | None = None

    def reset(self) -> None:
        """Forget history (after a gap in the audio)."""
        self._history.fill(0.0)
        self._sum.fill(0.0)
        self._filled = 0
        self._next = 0

    def smooth(self, scores: np.ndarray) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        self._sum -= self._history[self._next]
        self._history[self._next] = s
        self._sum += s
        self._next = (self._next + 1) % len(self._history)
        self._filled = min(self._filled + 1, len(self._history))
        return self._sum / self._filled

    def step(self, scores: np.ndarray, t: float) -> Decision | None:
        smoothed = self.smooth(scores)
        top = int(np.argmax(smoothed))
        changed = top != self._top
        self._top = top
        detected = bool(
            self._detectable[top]
            and smoothed[top] >= self._thresholds[top]
            and t - self._last_detection[top] >= self.config.refractory_s
        )
        if detected:
            self._last_detection[top] = t
        if detected:
            event = "detection"
        elif changed:
            event = "change"
        else:
            event = "window"
        if self.config.mode == "events" and event == "window":
            return None
        # as min(1.0, max(0.0, v)) per label: NaN -> 0.0, -0.0 -> 0.0 (the + 0.0), in one pass
        clipped = (np.fmin(np.fmax(smoothed, 0.0), 1.0) + 0.0).tolist()
        return Decision(
            label=self.labels[top],
            score=clipped[top],
            scores=dict(zip(self.labels, clipped)),
            detected=detected,
            event=event,
        )
