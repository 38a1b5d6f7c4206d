"""How a model's operating point, the config file and flags combine into its post-processing.

Precedence, lowest first (docs/model-contract.md): edgekd's built-in defaults, the operating point
in the model file, the config's `[defaults]`, the model's `[[models]]` table (and `hops`), then
environment and flags, which arrive merged into those same tables. A value counts as set only where
someone set it (pydantic's `model_fields_set`), so a config that says nothing leaves the model's
operating point in charge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from edgekd.audio.windowing import default_hop
from edgekd.config import ModelSettings, PostSettings, Settings
from edgekd.contract import ModelMetadata
from edgekd.postprocess import PostConfig

log = logging.getLogger(__name__)

POST_KEYS = ("mode", "smoothing", "threshold", "refractory")
BUILT_IN = "built-in"
MODEL_FILE = "model file"
CONFIG_DEFAULTS = "config defaults"
CONFIG_MODEL = "config model"


@dataclass(frozen=True)
class ResolvedPost:
    """A model's post-processing and hop, and where each value came from (for `info` and logs)."""

    hop_s: float
    post: PostConfig
    origin: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict[str, object]:
        return {
            "hop_s": self.hop_s,
            "smoothing": self.post.smoothing,
            "threshold": self.post.threshold,
            "thresholds": dict(self.post.thresholds),
            "refractory_s": self.post.refractory_s,
            "mode": self.post.mode,
            "background": list(self.post.background),
            "from": dict(self.origin),
        }


def resolve(settings: Settings, ms: ModelSettings, meta: ModelMetadata, hop_override_s: float | None = None) -> ResolvedPost:
    """The post-processing of the model `meta`, configured by `ms` within `settings`."""
    op = meta.operating_point
    builtin = PostSettings()
    values: dict[str, object] = {k: getattr(builtin, k) for k in POST_KEYS}
    origin = {k: BUILT_IN for k in (*POST_KEYS, "thresholds", "hop")}
    thresholds: dict[str, float] = {}

    hop_s = ms.hop or hop_override_s
    if hop_s:
        origin["hop"] = CONFIG_MODEL
    elif op is not None:
        hop_s, origin["hop"] = op.hop_s, MODEL_FILE
    else:
        hop_s = default_hop(meta.window_samples) / meta.sample_rate

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
        for k in (*POST_KEYS, "thresholds"):
            origin[k] = MODEL_FILE

    layers: list[tuple[str, dict[str, object]]] = [
        (CONFIG_DEFAULTS, {k: getattr(settings.defaults, k) for k in POST_KEYS if k in settings.defaults.model_fields_set}),
        (CONFIG_MODEL, {k: getattr(ms, k) for k in POST_KEYS if getattr(ms, k) is not None}),
    ]
    for name, layer in layers:
        for k, v in layer.items():
            values[k] = v
            origin[k] = name
        if "threshold" in layer:  # a threshold for every label replaces the file's per-label ones
            thresholds = {}
            origin["thresholds"] = name
    if ms.thresholds:
        thresholds.update(ms.thresholds)
        origin["thresholds"] = CONFIG_MODEL

    post = PostConfig(
        smoothing=int(values["smoothing"]),  # type: ignore[call-overload]
        thresholds=thresholds,
        threshold=float(values["threshold"]),  # type: ignore[arg-type]
        refractory_s=float(values["refractory"]),  # type: ignore[arg-type]
        mode=values["mode"],  # type: ignore[arg-type]
        background=meta.background,
    )
    return ResolvedPost(hop_s=float(hop_s), post=post, origin=origin)


def gate_db(settings: Settings, ms: ModelSettings) -> float | None:
    """The model's energy gate in dBFS, or None when it is off."""
    value: PostSettings | object = ms.gate_db if ms.gate_db is not None else settings.defaults.gate_db
    return None if value == "off" else float(value)  # type: ignore[arg-type]
