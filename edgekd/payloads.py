"""The JSON messages edgekd publishes. Each is a pydantic model: one way in, one way out.

`edgekd schema` prints their JSON Schemas for subscribers. Bump SCHEMA_VERSION when a field
changes meaning or disappears; adding an optional field keeps the version.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = Field(SCHEMA_VERSION, description="version of this payload's schema")

    def to_json(self) -> bytes:
        """The JSON bytes of model_dump_json(), without a round trip through str."""
        return self.__pydantic_serializer__.to_json(self)


class Latency(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    inference: float = Field(..., ge=0, description="ms spent in onnxruntime for this window")
    pipeline: float = Field(
        ..., ge=0, description="ms from the end of the window's audio to hand-off to the MQTT client"
    )


class ResultPayload(_Payload):
    """One classification of one window, published on <prefix>/<device>/<task>."""

    id: str = Field(
        ...,
        description="unique id of this result, DEVICE/MODEL-HASH/INSTANCE/RUN-SEQ (INSTANCE: 8 random hex "
        "digits per model and start; RUN: Unix seconds, grows across restarts of the daemon); QoS 1 may deliver "
        "a result twice: drop duplicates by id",
    )
    device: str
    model: str = Field(..., description="model name from its metadata")
    model_version: str
    model_hash: str = Field(..., description="first 12 hex digits of the model file's SHA-256")
    task: str
    label: str = Field(..., description="top label after smoothing")
    score: float = Field(..., ge=0, le=1)
    scores: dict[str, float] = Field(..., description="smoothed score of every label")
    detected: bool = Field(..., description="the label passed its threshold and refractory period")
    event: Literal["window", "detection", "change"] = Field(
        ..., description="why this was published: every window, a detection, or a change of top label"
    )
    seq: int = Field(..., ge=0, description="monotonic per model, from 0 at start")
    window_start: datetime = Field(..., description="UTC time of the window's first sample")
    window_end: datetime = Field(..., description="UTC time of the window's last sample")
    latency_ms: Latency


class ModelStats(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    task: str
    windows: int = Field(..., ge=0, description="windows classified")
    gated: int = Field(..., ge=0, description="windows skipped by the energy gate or another model's gate")
    published: int = Field(..., ge=0)
    nonfinite: int = Field(
        0, ge=0, description="windows whose scores were NaN or infinite (a broken model): counted, never published"
    )
    windows_per_s: float = Field(..., ge=0)
    inference_ms: dict[str, float] = Field(..., description="p50, p95, p99, max over the recent windows")
    pipeline_ms: dict[str, float] = Field(..., description="p50, p95, p99, max over the recent windows")
    failed: int = Field(0, ge=0, description="windows whose inference failed (skipped, not published)")
    abandoned: int = Field(0, ge=0, description="windows not classified because the stop bound (stop_timeout) ran out")
    state: Literal["running", "failed"] = Field(
        "running", description="failed: stopped after failing many windows in a row (see error); the others go on"
    )
    error: str | None = Field(None, description="the latest inference failure, if any")


class StatsPayload(_Payload):
    """Health of the daemon, published on <prefix>/<device>/stats every few seconds."""

    device: str
    time: datetime
    uptime_s: float = Field(..., ge=0)
    source: str = Field(..., description="the audio source and its state")
    source_state: Literal["running", "failed", "ended"]
    audio_seconds: float = Field(..., ge=0, description="audio captured since start")
    dropped_audio_samples: int = Field(..., ge=0, description="samples lost because the consumer fell behind")
    results_dropped: int = Field(
        ...,
        ge=0,
        description="results lost: the outbox full or expired, over the memory bound while its disk failed, "
        "refused by the broker, or left in memory at exit",
    )
    queue_depth: int = Field(..., ge=0, description="results waiting for the broker")
    broker_connected: bool
    cpu_percent: float = Field(..., ge=0, description="process CPU, percent of one core, since the last stats")
    rss_mb: float = Field(..., ge=0, description="resident memory of the process")
    dropped_at_stop_samples: int = Field(
        0, ge=0, description="captured samples not classified because the stop bound (stop_timeout) ran out"
    )
    audio_nonfinite: int = Field(0, ge=0, description="NaN or infinite input samples, replaced by silence")
    audio_clipped: int = Field(0, ge=0, description="input samples at full scale (clipping)")
    audio_dc_offset: float = Field(0.0, description="mean of the last second of input (full scale 1.0)")
    mqtt_protocol: Literal["5", "3.1.1"] | None = Field(
        None, description="MQTT version of the connection to the broker; null when results do not go to MQTT"
    )
    acl_denials_visible: bool | None = Field(
        None,
        description="whether the broker can tell this device that its ACL denied a result: true over MQTT 5 (a "
        "denied result counts in results_dropped); false over MQTT 3.1.1, which has no way to say so, so a denied "
        "result counts as published and only the broker's log shows it; null when results do not go to MQTT",
    )
    models: list[ModelStats]


class StatusPayload(BaseModel):
    """The retained <prefix>/<device>/status payload is the bare string `online` or `offline`."""

    state: Literal["online", "offline"]


ALL_PAYLOADS: dict[str, type[BaseModel]] = {
    "result": ResultPayload,
    "stats": StatsPayload,
}
