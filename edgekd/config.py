"""Configuration: a TOML file, then EDGEKD_* environment variables, then command-line flags.

Loaded and validated once at start (pydantic), then passed down. Unknown keys are refused, and
every error names the key and what it accepts:

    device_id = "kitchen"            # EDGEKD_DEVICE_ID; default: the hostname, sanitised
    log_level = "info"
    stats_interval = 10              # seconds between stats messages
    threads = 1                      # onnxruntime threads per model
    ha_discovery = false             # Home Assistant MQTT discovery (docs/integrations.md)
    ha_discovery_prefix = "homeassistant"
    metrics_port = 9108              # Prometheus endpoint (needs the metrics extra); unset: none
    metrics_host = "127.0.0.1"       # 0.0.0.0 to let another machine scrape it
    [audio]                          # source = "mic" | "mic:NAME-OR-INDEX" | "-" | a file path
    source = "mic"
    rate = 16000                     # capture rate (default: the first model's rate)
    [defaults]                       # post-processing for every model unless a model overrides it
    mode = "all"                     # "all" windows or "events" only
    smoothing = 1
    threshold = 0.5
    refractory = 0.0
    gate_db = -60.0                  # windows quieter than this (dBFS) are skipped; "off" disables
    [[models]]
    path = "models/wav2tiny-emotion.onnx"
    hop = 0.25                       # seconds; default a quarter of the model's window
    thresholds = { angry = 0.7 }
    [mqtt]                           # see edgekd.mqtt.settings; EDGEKD_MQTT__PASSWORD=...
    url = "mqtt://localhost:1883"
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgekd.mqtt.topics import check_part, check_prefix, default_device_id

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

ENV_PREFIX = "EDGEKD_"
ENV_NESTING = "__"
DEFAULT_GATE_DB = -60.0
DEFAULT_STATS_INTERVAL_S = 10.0
DEFAULT_RING_SECONDS = 10.0


class ConfigError(ValueError):
    """Configuration that cannot be used; the message names the key."""


GateDb = float | Literal["off"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AudioSettings(_Strict):
    source: str = Field("mic", description='"mic", "mic:NAME-OR-INDEX", "-" (raw S16_LE on stdin) or a file path')
    rate: int | None = Field(None, gt=0, le=384_000, description="capture rate in Hz (default: the first model's)")
    channels: int = Field(1, ge=1, le=32)
    realtime: bool = Field(False, description="pace a file like a live stream")
    loop: bool = Field(False, description="repeat a file source")
    buffer_seconds: float = Field(DEFAULT_RING_SECONDS, gt=0, le=600, description="ring buffer length")


class PostSettings(_Strict):
    mode: Literal["all", "events"] = "all"
    smoothing: int = Field(1, ge=1, le=1000, description="windows averaged")
    threshold: float = Field(0.5, ge=0, le=1)
    refractory: float = Field(0.0, ge=0, description="seconds after a detection before the same label counts again")
    gate_db: GateDb = Field(DEFAULT_GATE_DB, description='energy gate in dBFS, or "off"')

    @field_validator("gate_db")
    @classmethod
    def _gate_range(cls, v: GateDb) -> GateDb:
        if v != "off" and not -200.0 <= v <= 0.0:
            raise ValueError("must be between -200 and 0 dBFS, or \"off\"")
        return v


class ModelSettings(_Strict):
    path: str
    hop: float | None = Field(None, gt=0, le=60, description="seconds between windows")
    mode: Literal["all", "events"] | None = None
    smoothing: int | None = Field(None, ge=1, le=1000)
    threshold: float | None = Field(None, ge=0, le=1)
    thresholds: dict[str, float] = Field(default_factory=dict)
    refractory: float | None = Field(None, ge=0)
    gate_db: GateDb | None = None
    gate: str | None = Field(None, description='"MODEL_OR_TASK:LABEL": run only while that model detects LABEL')

    @field_validator("thresholds")
    @classmethod
    def _threshold_range(cls, v: dict[str, float]) -> dict[str, float]:
        for label, t in v.items():
            if not 0.0 <= t <= 1.0:
                raise ValueError(f"threshold for {label!r} must be between 0 and 1, got {t}")
        return v

    @field_validator("gate")
    @classmethod
    def _gate_form(cls, v: str | None) -> str | None:
        if v is not None and (v.count(":") != 1 or not all(v.split(":"))):
            raise ValueError('must look like "MODEL_OR_TASK:LABEL", e.g. "cough:cough"')
        return v


class Settings(_Strict):
    device_id: str = Field(default_factory=default_device_id)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    stats_interval: float = Field(DEFAULT_STATS_INTERVAL_S, gt=0, le=3600, description="seconds")
    threads: int = Field(1, ge=1, le=64)
    provider: Literal["cpu", "cuda", "tensorrt"] = Field(
        "cpu", description="onnxruntime execution provider; cuda/tensorrt need onnxruntime-gpu and fall back to the CPU"
    )
    audio: AudioSettings = Field(default_factory=AudioSettings)
    defaults: PostSettings = Field(default_factory=PostSettings)
    models: list[ModelSettings] = Field(default_factory=list)
    hops: dict[str, float] = Field(default_factory=dict, description="MODEL_OR_TASK -> hop seconds")
    gates: dict[str, str] = Field(default_factory=dict, description='MODEL_OR_TASK -> "MODEL_OR_TASK:LABEL"')
    mqtt: dict[str, Any] = Field(default_factory=dict, description="validated by edgekd.mqtt.settings.MqttSettings")
    ha_discovery: bool = Field(False, description="announce sensors to Home Assistant (MQTT discovery)")
    ha_discovery_prefix: str = Field("homeassistant", description="Home Assistant's discovery prefix")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="serve Prometheus metrics on this port (0: any free port)")
    metrics_host: str = Field("127.0.0.1", description="address the metrics endpoint binds (0.0.0.0: every interface)")

    @field_validator("device_id")
    @classmethod
    def _device(cls, v: str) -> str:
        return check_part(v, "device_id")

    @field_validator("ha_discovery_prefix")
    @classmethod
    def _ha_prefix(cls, v: str) -> str:
        return check_prefix(v)

    @field_validator("hops")
    @classmethod
    def _hops(cls, v: dict[str, float]) -> dict[str, float]:
        for k, s in v.items():
            if not 0 < s <= 60:
                raise ValueError(f"hop for {k!r} must be between 0 and 60 seconds, got {s}")
        return v


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(str(part)):
            out += ("." if out else "") + str(part)
        else:  # a key with dots, spaces or control characters: quoted, so the message stays one line
            out += f"[{str(part)!r}]"
    return out or "(top level)"


def _model_at(cls: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that holds the last key of `loc`."""
    current: Any = cls
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        current = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if current is None:
            return None
    return current


def format_validation_error(exc: ValidationError, cls: type[BaseModel], prefix: str = "") -> str:
    lines = []
    hide = bool(cls.model_config.get("hide_input_in_errors"))  # e.g. MqttSettings: never echo secrets
    for err in exc.errors():
        loc = tuple(err["loc"])
        # union members show up as extra loc parts ("float", "literal['off']"): keep the key
        loc = tuple(p for p in loc if not (isinstance(p, str) and (p in ("float", "int", "str") or "[" in p)))
        key = prefix + _loc(loc)
        if err["type"] == "extra_forbidden":
            holder = _model_at(cls, loc)
            allowed = ", ".join(holder.model_fields) if holder else "see the docs"
            lines.append(f"{key}: unknown key (allowed: {allowed})")
        else:
            got = err.get("input")  # absent where the model hides inputs (secrets)
            got_text = "" if hide or "input" not in err or isinstance(got, dict) else f" (got {got!r})"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{key}: {msg}{got_text}")
    seen: list[str] = []
    for line in lines:
        if line not in seen:
            seen.append(line)
    return "config: " + "; ".join(seen)


def env_overrides(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """EDGEKD_DEVICE_ID=x -> {"device_id": "x"}; EDGEKD_MQTT__PASSWORD=y -> {"mqtt": {"password": "y"}}.

    Variables whose first part is not a settings key (EDGEKD_DATA, EDGEKD_MODELS) are not config.
    """
    environ = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split(ENV_NESTING)]
        if parts[0] not in Settings.model_fields or parts[0] == "models" or not all(parts):
            continue
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                break
        else:
            node[parts[-1]] = value
    return out


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; anything else in `top` replaces what `base` had."""
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config {p}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {p}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"config {p}: cannot read it ({exc.strerror})") from None


def load_settings(
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """File, then environment, then `overrides` (from the command line), validated once."""
    data: dict[str, Any] = read_toml(config_file) if config_file else {}
    data = merge(data, env_overrides(environ))
    data = merge(data, overrides or {})
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, Settings)) from None
    return settings


def mqtt_settings(settings: Settings):
    """The [mqtt] table as edgekd.mqtt.settings.MqttSettings, with the device id filled in."""
    from edgekd.mqtt.settings import MqttSettings

    data = dict(settings.mqtt)
    data.setdefault("device_id", settings.device_id)
    try:
        return MqttSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, MqttSettings, prefix="mqtt.")) from None


def model_post_settings(settings: Settings, model: ModelSettings) -> PostSettings:
    """The model's post-processing: its own keys over [defaults]."""
    own = {k: getattr(model, k) for k in ("mode", "smoothing", "threshold", "refractory", "gate_db")}
    return settings.defaults.model_copy(update={k: v for k, v in own.items() if v is not None})
