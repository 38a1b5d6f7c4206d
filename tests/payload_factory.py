"""ResultPayloads for tests that publish without running a model."""

from __future__ import annotations

from datetime import datetime, timezone

from edgekd.payloads import Latency, ResultPayload


def make_result(
    seq: int,
    *,
    device: str = "d",
    model: str = "m",
    model_version: str = "1",
    model_hash: str = "h",
    run: str = "",
    task: str = "keyword",
    label: str = "left",
    score: float = 0.6,
    other: str = "right",
    detected: bool = False,
    event: str = "window",
    inference: float = 1.0,
    pipeline: float = 1.0,
) -> ResultPayload:
    """A result with id `device/model_hash/[run-]seq` and two scores, `label` and `other`, summing to 1."""
    now = datetime.now(timezone.utc)
    return ResultPayload(
        id=f"{device}/{model_hash}/{run + '-' if run else ''}{seq}", device=device, model=model,
        model_version=model_version, model_hash=model_hash, task=task, label=label, score=score,
        scores={label: score, other: round(1.0 - score, 6)}, detected=detected, event=event, seq=seq,
        window_start=now, window_end=now, latency_ms=Latency(inference=inference, pipeline=pipeline),
    )
