"""How a model's operating point, the config file and flags combine into its post-processing.

Precedence, lowest first (docs/model-contract.md): edgekd's built-in defaults, the operating point
in the model file, the config's `[defaults]`, the model's `[[models]]` table (and `hops`), then
environment and flags, which arrive merged into those same tables. A value counts as set only where
someone set it (pydantic's `model_fields_set`), so a config that says nothing leaves the model's
operating point in charge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from edgekd.audio.windowing import default_hop
from edgekd.config import ModelSettings, PostSettings, Settings
from edgekd.contract import ModelMetadata
from edgekd.postprocess import PostConfig

log = logging.getLogger(__name__)

POST_KEYS = ("mode", "smoothing", "threshold", "refractory")


@dataclass(frozen=True)
class ResolvedPost:
    """A model's post-processing and the hop it runs at."""

    hop_s: float
    post: PostConfig


def resolve(settings: Settings, ms: ModelSettings, meta: ModelMetadata, hop_override_s: float | None = None) -> ResolvedPost:
    """The post-processing of the model `meta`, configured by `ms` within `settings`."""
    op = meta.operating_point
    builtin = PostSettings()
    values: dict[str, object] = {k: getattr(builtin, k) for k in POST_KEYS}
    thresholds: dict[str, float] = {}

    hop_s = ms.hop or hop_override_s or (op.hop_s if op is not None else default_hop(meta.window_samples) / meta.sample_rate)

    if op is not None:
        smoothing = op.smoothing
        if abs(hop_s - op.hop_s) > 1e-9 and smoothing > 1:
            smoothing = max(1, round(op.smoothing * op.hop_s / hop_s))
            log.info(
                "model %s: its operating point was chosen at a %.3g s hop, this one runs at %.3g s: smoothing %d "
                "windows instead of %d (same duration)", meta.name, op.hop_s, hop_s, smoothing, op.smoothing,
            )
        values.update(mode=op.mode, smoothing=smoothing, threshold=op.threshold, refractory=op.refractory_s)
        thresholds = dict(op.thresholds)

    for layer in (
        {k: getattr(settings.defaults, k) for k in POST_KEYS if k in settings.defaults.model_fields_set},
        {k: getattr(ms, k) for k in POST_KEYS if getattr(ms, k) is not None},
    ):
        values.update(layer)
        if "threshold" in layer:  # a threshold for every label replaces the file's per-label ones
            thresholds = {}
    thresholds.update(ms.thresholds)

    post = PostConfig(
        smoothing=int(values["smoothing"]),  # type: ignore[call-overload]
        thresholds=thresholds,
        threshold=float(values["threshold"]),  # type: ignore[arg-type]
        refractory_s=float(values["refractory"]),  # type: ignore[arg-type]
        mode=values["mode"],  # type: ignore[arg-type]
        background=meta.background,
    )
    return ResolvedPost(hop_s=float(hop_s), post=post)


def gate_db(settings: Settings, ms: ModelSettings) -> float | None:
    """The model's energy gate in dBFS, or None when it is off."""
    value = ms.gate_db if ms.gate_db is not None else settings.defaults.gate_db
    return None if value == "off" else float(value)
