"""`edgekd classify`: the serve pipeline (same windows, same post-processing) over whole files.

Each file gets fresh windows and post-processing; its label is the top of the mean of its
windows' (smoothed) scores. Windows the energy gate skipped are counted, not averaged; so are
windows whose inference failed (`failed`, with the model's error), and the other files go on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.audio.decode import AudioError, decode_file
from edgekd.config import Settings
from edgekd.daemon import build_runners
from edgekd.failures import ModelFailures
from edgekd.pipeline import Pipeline, Scorer
from edgekd.sink import MemorySink


@dataclass(frozen=True)
class FileResult:
    file: str
    model: str
    task: str
    label: str | None  # None when no window gave a result (all gated, or all NaN/infinite)
    score: float
    scores: dict[str, float]
    windows: int
    gated: int
    failed: int = 0  # windows whose inference failed
    model_error: str | None = None  # the latest of those failures
    error: str | None = None
    nonfinite: int = 0  # windows whose scores were NaN or infinite: left out

    def to_dict(self) -> dict:
        d = {
            "file": self.file,
            "model": self.model,
            "task": self.task,
            "label": self.label,
            "score": round(self.score, 6),
            "scores": {k: round(v, 6) for k, v in self.scores.items()},
            "windows": self.windows,
            "gated": self.gated,
            "nonfinite": self.nonfinite,
        }
        if self.error:
            d["error"] = self.error
        if self.failed:
            d["failed"] = self.failed
            d["model_error"] = self.model_error
        return d

    def failure_message(self) -> str:
        """One line for stderr when windows failed: the file, the model, how many, and why."""
        return (
            f"{self.file}: model {self.model} failed on {self.failed} of {self.failed + self.windows + self.gated} "
            f"windows ({self.model_error}); check the model with `edgekd info`"
        )


def for_files(settings: Settings) -> Settings:
    """Every window counts for a file: publish mode `all` for all models."""
    models = [m.model_copy(update={"mode": None}) for m in settings.models]
    return settings.model_copy(update={"defaults": settings.defaults.model_copy(update={"mode": "all"}), "models": models})


def classify_file(path: str | Path, settings: Settings, models: Sequence[Scorer]) -> list[FileResult]:
    """One result per model for one file; raises AudioError for a file that cannot be decoded."""
    audio = decode_file(path)
    runners = build_runners(settings, models)
    for r in runners:  # every window is tried, and failures are reported per file (FileResult.failed)
        r.failures = ModelFailures(r.meta.name, limit=None, logs=False)
    sink = MemorySink()
    pipeline = Pipeline(runners, audio.rate, sink, settings.device_id, source_name=str(path))
    pipeline.feed(audio.samples)
    pipeline.finish()
    out = []
    for r in runners:
        mine = [p for p in sink.results if p.model_hash == r.model.short_hash and p.model == r.meta.name]
        if mine:
            mean = np.mean([[p.scores[l] for l in r.meta.labels] for p in mine], axis=0)
            top = int(np.argmax(mean))
            label, score = r.meta.labels[top], float(mean[top])
            scores = {l: float(v) for l, v in zip(r.meta.labels, mean)}
        else:
            label, score, scores = None, 0.0, {}
        out.append(
            FileResult(
                str(path), r.meta.name, r.meta.task, label, score, scores, len(mine), r.counters.gated,
                nonfinite=r.counters.nonfinite,
                failed=r.failures.failed, model_error=r.failures.error,
            )
        )
    return out


def classify_files(
    paths: Sequence[str | Path], settings: Settings, models: Sequence[Scorer]
) -> Iterator[FileResult]:
    """Results file by file; a file that fails yields one result with `error` and the rest go on."""
    settings = for_files(settings)
    for path in paths:
        try:
            yield from classify_file(path, settings, models)
        except AudioError as exc:
            yield FileResult(str(path), "", "", None, 0.0, {}, 0, 0, error=str(exc))
