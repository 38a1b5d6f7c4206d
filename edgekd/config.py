"""Configuration: a TOML file, then EDGEKD_* environment variables, then command-line flags.

Loaded and validated once at start (pydantic), then passed down. Unknown keys are refused, and
every error names the key and what it accepts:

    device_id = "kitchen"            # EDGEKD_DEVICE_ID; default: the hostname, sanitised
    log_level = "info"
    stats_interval = 10              # seconds between stats messages (0.1 to 3600)
    threads = 1                      # onnxruntime threads per model
    ha_discovery = false             # Home Assistant MQTT discovery (docs/integrations.md)
    ha_discovery_prefix = "homeassistant"
    metrics_port = 9108              # Prometheus endpoint (needs the metrics extra); unset: none
    metrics_host = "127.0.0.1"       # 0.0.0.0 to let another machine scrape it
    stop_timeout = 5                 # seconds from SIGTERM/SIGINT/SIGHUP to exit; unfinished audio is dropped
    [audio]                          # source = "mic" | "mic:NAME-OR-INDEX" | "-" | a file path
    source = "mic"
    rate = 16000                     # capture rate, 4000 to 384000 Hz (default: the first model's rate)
    [defaults]                       # post-processing for every model unless a model overrides it
    mode = "all"                     # "all" windows or "events" only
    smoothing = 1
    threshold = 0.5
    refractory = 0.0
    gate_db = -60.0                  # windows quieter than this (dBFS) are skipped; "off" disables
    [[models]]
    path = "models/wav2tiny-emotion.onnx"
    hop = 0.25                       # seconds, 0.01 up to the model's window; default a quarter of it
    thresholds = { angry = 0.7 }
    [mqtt]                           # see edgekd.mqtt.settings; EDGEKD_MQTT__PASSWORD=...
    url = "mqtt://localhost:1883"
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgekd.audio.decode import MIN_RATE
from edgekd.inputfile import file_problem
from edgekd.mqtt.topics import check_part, check_prefix, default_device_id
from edgekd.mqtt.url import redact_url

log = logging.getLogger(__name__)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

ENV_PREFIX = "EDGEKD_"
ENV_NESTING = "__"
ENV_NOT_SETTINGS = ("EDGEKD_DATA", "EDGEKD_MODELS")  # the corpora (training side); where model names are looked up (edgekd.catalog)
DEFAULT_GATE_DB = -60.0
DEFAULT_STOP_TIMEOUT_S = 5.0  # from a stop signal to exit (edgekd.stopping)
DEFAULT_STATS_INTERVAL_S = 10.0
MIN_STATS_INTERVAL_S = 0.1  # below this, stats would crowd out results on the broker
MAX_STATS_INTERVAL_S = 3600.0
DEFAULT_RING_SECONDS = 10.0
MIN_RING_SECONDS = 0.5  # the ring must hold several capture writes (each about 0.1 s)
MAX_CAPTURE_RATE = 384_000
MIN_HOP_S = 0.01  # 100 windows a second at most: a shorter hop floods the broker with results
MAX_HOP_S = 60.0
MAX_REFRACTORY_S = 86_400.0


class ConfigError(ValueError):
    """Configuration that cannot be used; the message names the key."""


GateDb = float | Literal["off"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AudioSettings(_Strict):
    source: str = Field("mic", description='"mic", "mic:NAME-OR-INDEX", "-" (raw S16_LE on stdin) or a file path')
    rate: int | None = Field(None, description=f"capture rate in Hz, {MIN_RATE} to {MAX_CAPTURE_RATE} (default: the first model's)")
    channels: int = Field(1, ge=1, le=32)
    realtime: bool = Field(False, description="pace a file like a live stream")
    loop: bool = Field(False, description="repeat a file source")
    buffer_seconds: float = Field(
        DEFAULT_RING_SECONDS, ge=MIN_RING_SECONDS, le=600, description="ring buffer length in seconds"
    )

    @field_validator("rate")
    @classmethod
    def _rate_range(cls, v: int | None) -> int | None:
        if v is not None and not MIN_RATE <= v <= MAX_CAPTURE_RATE:
            raise ValueError(
                f"not a capture rate: use {MIN_RATE} to {MAX_CAPTURE_RATE} Hz, e.g. --rate 16000 "
                "(or leave it out to capture at the first model's rate)"
            )
        return v


class PostSettings(_Strict):
    mode: Literal["all", "events"] = "all"
    smoothing: int = Field(1, ge=1, le=1000, description="windows averaged")
    threshold: float = Field(0.5, ge=0, le=1)
    refractory: float = Field(
        0.0, ge=0, le=MAX_REFRACTORY_S, description="seconds after a detection before the same label counts again"
    )
    gate_db: GateDb = Field(DEFAULT_GATE_DB, description='energy gate in dBFS, or "off"')

    @field_validator("gate_db")
    @classmethod
    def _gate_range(cls, v: GateDb) -> GateDb:
        if v != "off" and not -200.0 <= v <= 0.0:
            raise ValueError("must be between -200 and 0 dBFS, or \"off\"")
        return v


class ModelSettings(_Strict):
    path: str
    hop: float | None = Field(None, description=f"seconds between windows, {MIN_HOP_S} up to the model's window")
    mode: Literal["all", "events"] | None = None
    smoothing: int | None = Field(None, ge=1, le=1000)
    threshold: float | None = Field(None, ge=0, le=1)
    thresholds: dict[str, float] = Field(default_factory=dict)
    refractory: float | None = Field(None, ge=0, le=MAX_REFRACTORY_S)
    gate_db: GateDb | None = None
    gate: str | None = Field(None, description='"MODEL_OR_TASK:LABEL": run only while that model detects LABEL')

    @field_validator("thresholds")
    @classmethod
    def _threshold_range(cls, v: dict[str, float]) -> dict[str, float]:
        for label, t in v.items():
            if not 0.0 <= t <= 1.0:
                raise ValueError(f"threshold for {label!r} must be between 0 and 1, got {t}")
        return v

    @field_validator("hop")
    @classmethod
    def _hop_range(cls, v: float | None) -> float | None:
        return None if v is None else check_hop(v)

    @field_validator("gate")
    @classmethod
    def _gate_form(cls, v: str | None) -> str | None:
        return None if v is None else check_gate(v)


def check_hop(seconds: float) -> float:
    """A hop in seconds within the bounds every model shares (the window bound is per model)."""
    if not MIN_HOP_S <= seconds <= MAX_HOP_S:  # also refuses NaN
        raise ValueError(
            f"hop must be between {MIN_HOP_S:g} and {MAX_HOP_S:g} seconds: a shorter hop runs the "
            "model more than 100 times a second; a typical hop is a quarter of the model's window"
        )
    return seconds


def check_gate(value: str) -> str:
    if value.count(":") != 1 or not all(part.strip() for part in value.split(":")):
        raise ValueError('gate must look like "MODEL_OR_TASK:LABEL", e.g. "cough:cough"')
    return value


class Settings(_Strict):
    device_id: str = Field(default_factory=default_device_id)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    stats_interval: float = Field(DEFAULT_STATS_INTERVAL_S, description="seconds between stats messages")
    threads: int = Field(1, ge=1, le=64)
    provider: Literal["cpu", "cuda", "tensorrt"] = Field(
        "cpu", description="onnxruntime execution provider; cuda/tensorrt need onnxruntime-gpu and fall back to the CPU"
    )
    stop_timeout: float = Field(
        DEFAULT_STOP_TIMEOUT_S, ge=1, le=600,
        description="seconds from a stop signal to exit; buffered audio not classified by then is dropped and counted "
        "(keep it under the service's TimeoutStopSec)",
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

    @field_validator("stats_interval")
    @classmethod
    def _stats_interval(cls, v: float) -> float:
        if not MIN_STATS_INTERVAL_S <= v <= MAX_STATS_INTERVAL_S:  # also refuses NaN
            raise ValueError(
                f"must be between {MIN_STATS_INTERVAL_S:g} and {MAX_STATS_INTERVAL_S:g} seconds "
                f"(e.g. --stats-interval {DEFAULT_STATS_INTERVAL_S:g})"
            )
        return v

    @field_validator("hops")
    @classmethod
    def _hops(cls, v: dict[str, float]) -> dict[str, float]:
        for k, s in v.items():
            try:
                check_hop(s)
            except ValueError as exc:
                raise ValueError(f"{k}: {exc} (got {s!r})") from None
        return v

    @field_validator("gates")
    @classmethod
    def _gates(cls, v: dict[str, str]) -> dict[str, str]:
        for k, g in v.items():
            try:
                check_gate(g)
            except ValueError as exc:
                raise ValueError(f"{k}: {exc} (got {g!r})") from None
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


def model_at(cls: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that holds the last key of `loc` (a validation error's location), looking
    through a field's type arguments two levels deep (`list[X]`, `Optional[list[X]]`)."""
    current: Any = cls
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return None
        ann = field.annotation
        candidates = (ann, *getattr(ann, "__args__", ()))
        for a in list(candidates):
            candidates += getattr(a, "__args__", ())
        current = next((a for a in candidates if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if current is None:
            return None
    return current


def _shown(value: Any) -> str:
    """A rejected value as an error may quote it: a URL's credentials never, control characters escaped."""
    return repr(redact_url(value)) if isinstance(value, str) else repr(value)


def format_validation_error(exc: ValidationError, cls: type[BaseModel], prefix: str = "") -> str:
    lines = []
    hide = bool(cls.model_config.get("hide_input_in_errors"))  # e.g. MqttSettings: never echo secrets
    for err in exc.errors():
        loc = tuple(err["loc"])
        # union members show up as extra loc parts ("float", "literal['off']"): keep the key
        loc = tuple(p for p in loc if not (isinstance(p, str) and (p in ("float", "int", "str") or "[" in p)))
        key = prefix + _loc(loc) if loc or not prefix else prefix.rstrip(".")
        if err["type"] == "extra_forbidden":
            holder = model_at(cls, loc)
            allowed = ", ".join(holder.model_fields) if holder else "see the docs"
            lines.append(f"{key}: unknown key (allowed: {allowed})")
        else:
            got = err.get("input")  # absent where the model hides inputs (secrets)
            secret = hide or (loc[:1] == ("mqtt",) and cls is Settings)  # the [mqtt] table holds the password
            got_text = "" if secret or "input" not in err or isinstance(got, dict) else f" (got {_shown(got)})"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{key}: {msg}{got_text}")
    seen: list[str] = []
    for line in lines:
        if line not in seen:
            seen.append(line)
    return "config: " + "; ".join(seen)


def env_names() -> list[str]:
    """Every EDGEKD_* variable edgekd reads (a table's own keys under it, e.g. EDGEKD_MQTT__URL)."""
    from edgekd.mqtt.settings import MqttSettings

    tables: dict[str, type[BaseModel]] = {"audio": AudioSettings, "defaults": PostSettings, "mqtt": MqttSettings}
    names = list(ENV_NOT_SETTINGS)
    for field in Settings.model_fields:
        if field == "models":
            continue
        inner = tables.get(field)
        if field in ("hops", "gates"):  # keyed by a model's name, task or file stem
            names.append(f"{ENV_PREFIX}{field.upper()}{ENV_NESTING}NAME")
        elif inner is None:
            names.append(ENV_PREFIX + field.upper())
        else:
            names += [f"{ENV_PREFIX}{field.upper()}{ENV_NESTING}{key.upper()}" for key in inner.model_fields]
    return names


def _env_is_setting(name: str) -> bool:
    parts = [p.lower() for p in name[len(ENV_PREFIX) :].split(ENV_NESTING)]
    return parts[0] in Settings.model_fields and parts[0] != "models" and all(parts)


def unknown_env_warnings(environ: dict[str, str] | None = None) -> list[str]:
    """A line for each EDGEKD_*-like variable that edgekd does not read, naming the closest one."""
    environ = os.environ if environ is None else environ
    known = env_names()
    out = []
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX) or name in ENV_NOT_SETTINGS:
            continue
        if name.startswith(ENV_PREFIX) and _env_is_setting(name):
            continue
        close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "see docs/configuration.md for the variables edgekd reads"
        out.append(f"environment variable {name} is not an edgekd setting and is ignored; {hint}")
    return out


def env_overrides(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """EDGEKD_DEVICE_ID=x -> {"device_id": "x"}; EDGEKD_MQTT__PASSWORD=y -> {"mqtt": {"password": "y"}}.

    Variables whose first part is not a settings key (EDGEKD_DATA, EDGEKD_MODELS) are not config;
    `unknown_env_warnings` names the ones that look like a misspelt setting.
    """
    environ = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or not _env_is_setting(name):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split(ENV_NESTING)]
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
    problem = file_problem(p, "pass the TOML file with --config")
    if problem is not None:
        raise ConfigError(f"config {p}: {problem}")
    try:
        with open(p, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config {p}: no such file; pass the TOML file with --config") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {p}: not valid TOML ({exc})") from None
    except UnicodeDecodeError as exc:  # the byte itself is not quoted: it may be part of a secret
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"config {p}: not UTF-8 text (line {line}, byte offset {exc.start}); TOML files must be UTF-8: "
            f"save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8 {p.name} > fixed.toml`)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"config {p}: cannot read it ({exc.strerror}); check the path and that this user may read it") from None


def load_settings(
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """File, then environment, then `overrides` (from the command line), validated once."""
    data: dict[str, Any] = read_toml(config_file) if config_file else {}
    for warning in unknown_env_warnings(environ):
        log.warning("%s", warning)
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
