"""The edgekd model contract: what an ONNX file must carry to be served.

This module is the seam between `train/` (which writes models) and the runtime
(which reads them). Both sides use the names defined here, so the contract is
written down exactly once. See docs/model-contract.md for the prose version.

It imports neither torch nor onnxruntime: reading metadata needs only the
ONNX protobuf, which onnxruntime exposes through `InferenceSession`, and
`metadata_from_session` takes such a session.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

CONTRACT_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)

# Keys of the ONNX `metadata_props` (all values are strings).
KEY_CONTRACT = "edgekd.contract_version"
KEY_TASK = "edgekd.task"
KEY_LABELS = "edgekd.labels"  # JSON array, in output order
KEY_SAMPLE_RATE = "edgekd.sample_rate"  # integer, Hz
KEY_WINDOW = "edgekd.window_samples"  # integer, samples at sample_rate
KEY_MULTI_LABEL = "edgekd.multi_label"  # "true" | "false"
KEY_NAME = "edgekd.model_name"
KEY_VERSION = "edgekd.model_version"
KEY_TRAINING = "edgekd.training"  # JSON object: data, split, teacher, figures...
# Version 2: detectors on streams (every key optional).
KEY_BACKGROUND = "edgekd.background_labels"  # JSON array, a subset of the labels
KEY_OPERATING_POINT = "edgekd.operating_point"  # JSON object, see OperatingPoint
KEY_FRONTEND = "edgekd.frontend"  # JSON object: the front end inside the graph
KEY_BODY = "edgekd.body"  # base64 ONNX model: log-mel frames in, logits out
KEY_STREAM = "edgekd.stream"  # JSON object: a stateful step graph and its state

# Background labels assumed for a file that does not name its own (every version-1 file).
WELL_KNOWN_BACKGROUND = ("_unknown_", "_silence_", "speech", "other", "negative", "background", "noise")

REQUIRED_KEYS = (KEY_TASK, KEY_LABELS, KEY_SAMPLE_RATE, KEY_WINDOW, KEY_NAME, KEY_VERSION)

_TASK_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MIN_RATE, MAX_RATE = 4_000, 96_000


class ModelContractError(ValueError):
    """A model file breaks the contract. The message names the file and the fix."""

    def __init__(self, path: str | Path, problem: str, fix: str = "") -> None:
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        text = f"model {self.path}: {problem}"
        if fix:
            text += f" ({fix})"
        super().__init__(text)


OPERATING_POINT_FIELDS = (
    "hop_s", "smoothing", "threshold", "thresholds", "refractory_s", "mode", "aim", "chosen_on", "validation",
)
MODES = ("all", "events")


@dataclass(frozen=True)
class OperatingPoint:
    """The post-processing a detector was tuned for, on validation streams (docs/model-contract.md)."""

    hop_s: float
    smoothing: int = 1
    threshold: float = 0.5
    thresholds: dict[str, float] = field(default_factory=dict)
    refractory_s: float = 0.0
    mode: str = "all"
    aim: str = ""
    chosen_on: str = ""
    validation: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "hop_s": self.hop_s,
            "smoothing": self.smoothing,
            "threshold": self.threshold,
            "thresholds": dict(self.thresholds),
            "refractory_s": self.refractory_s,
            "mode": self.mode,
        }
        for key in ("aim", "chosen_on", "validation"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out


@dataclass(frozen=True)
class ModelMetadata:
    """Everything the runtime needs to know about a model, read from its file."""

    task: str
    labels: tuple[str, ...]
    sample_rate: int
    window_samples: int
    multi_label: bool
    name: str
    version: str
    training: dict[str, Any] = field(default_factory=dict)
    contract_version: int = CONTRACT_VERSION
    # Version 2. None: the file does not say (background falls back to WELL_KNOWN_BACKGROUND).
    background_labels: tuple[str, ...] | None = None
    operating_point: OperatingPoint | None = None
    frontend: dict[str, Any] | None = None
    body: str | None = None  # base64 ONNX, kept as written
    stream: dict[str, Any] | None = None

    @property
    def window_seconds(self) -> float:
        return self.window_samples / self.sample_rate

    @property
    def background(self) -> tuple[str, ...]:
        """The labels that are never detections: the file's own list, or the well-known names it has."""
        if self.background_labels is not None:
            return self.background_labels
        return tuple(label for label in self.labels if label in WELL_KNOWN_BACKGROUND)

    def to_props(self) -> dict[str, str]:
        """The metadata as ONNX `metadata_props` (what the exporter writes)."""
        return {
            KEY_CONTRACT: str(self.contract_version),
            KEY_TASK: self.task,
            KEY_LABELS: json.dumps(list(self.labels)),
            KEY_SAMPLE_RATE: str(self.sample_rate),
            KEY_WINDOW: str(self.window_samples),
            KEY_MULTI_LABEL: "true" if self.multi_label else "false",
            KEY_NAME: self.name,
            KEY_VERSION: self.version,
            KEY_TRAINING: json.dumps(self.training, sort_keys=True),
            **self._v2_props(),
        }

    def _v2_props(self) -> dict[str, str]:
        props: dict[str, str] = {}
        if self.background_labels is not None:
            props[KEY_BACKGROUND] = json.dumps(list(self.background_labels))
        if self.operating_point is not None:
            props[KEY_OPERATING_POINT] = json.dumps(self.operating_point.to_dict(), sort_keys=True)
        if self.frontend is not None:
            props[KEY_FRONTEND] = json.dumps(self.frontend, sort_keys=True)
        if self.body is not None:
            props[KEY_BODY] = self.body
        if self.stream is not None:
            props[KEY_STREAM] = json.dumps(self.stream, sort_keys=True)
        return props

    def to_dict(self) -> dict[str, Any]:
        return {
            "contract_version": self.contract_version,
            "task": self.task,
            "labels": list(self.labels),
            "sample_rate": self.sample_rate,
            "window_samples": self.window_samples,
            "window_seconds": self.window_seconds,
            "multi_label": self.multi_label,
            "name": self.name,
            "version": self.version,
            "training": self.training,
            "background_labels": list(self.background),
            "background_declared": self.background_labels is not None,
            "operating_point": self.operating_point.to_dict() if self.operating_point else None,
            "frontend": self.frontend,
            "body": self.body is not None,
            "stream": {k: v for k, v in self.stream.items() if k != "graph"} if self.stream else None,
        }


def _int(path: str | Path, props: Mapping[str, str], key: str, lo: int, hi: int) -> int:
    raw = props[key]
    try:
        value = int(raw)
    except ValueError:
        raise ModelContractError(path, f"metadata {key}={raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise ModelContractError(path, f"metadata {key}={value} is outside {lo}..{hi}")
    return value


def parse_props(path: str | Path, props: Mapping[str, str]) -> ModelMetadata:
    """Validate ONNX metadata properties against the contract."""
    missing = [k for k in REQUIRED_KEYS if k not in props]
    if missing:
        raise ModelContractError(
            path,
            "not an edgekd model: metadata lacks " + ", ".join(missing),
            "export it with `edgekd train export`, or add the keys described in docs/model-contract.md",
        )
    version = props.get(KEY_CONTRACT, "1")
    if version not in tuple(str(v) for v in SUPPORTED_VERSIONS):
        raise ModelContractError(
            path,
            f"contract version {version!r} is not supported (this edgekd reads "
            f"{', '.join(str(v) for v in SUPPORTED_VERSIONS)})",
            "upgrade edgekd or re-export the model",
        )
    task = props[KEY_TASK]
    if not _TASK_RE.match(task):
        raise ModelContractError(path, f"metadata {KEY_TASK}={task!r} must be lowercase letters, digits, '_' or '-'")
    try:
        labels = json.loads(props[KEY_LABELS])
    except json.JSONDecodeError as exc:
        raise ModelContractError(path, f"metadata {KEY_LABELS} is not JSON: {exc}") from None
    if not (isinstance(labels, list) and labels and all(isinstance(x, str) and x for x in labels)):
        raise ModelContractError(path, f"metadata {KEY_LABELS} must be a non-empty JSON array of strings")
    if len(set(labels)) != len(labels):
        raise ModelContractError(path, f"metadata {KEY_LABELS} has duplicate labels")
    rate = _int(path, props, KEY_SAMPLE_RATE, MIN_RATE, MAX_RATE)
    window = _int(path, props, KEY_WINDOW, 64, rate * 60)
    multi = props.get(KEY_MULTI_LABEL, "false").lower()
    if multi not in ("true", "false"):
        raise ModelContractError(path, f"metadata {KEY_MULTI_LABEL}={multi!r} must be 'true' or 'false'")
    training: dict[str, Any] = {}
    if props.get(KEY_TRAINING):
        try:
            loaded = json.loads(props[KEY_TRAINING])
        except json.JSONDecodeError:
            loaded = {"text": props[KEY_TRAINING]}
        training = loaded if isinstance(loaded, dict) else {"text": loaded}
    return ModelMetadata(
        task=task,
        labels=tuple(labels),
        sample_rate=rate,
        window_samples=window,
        multi_label=multi == "true",
        name=props[KEY_NAME],
        version=props[KEY_VERSION],
        training=training,
        contract_version=int(version),
        background_labels=_background(path, props, labels),
        operating_point=_operating_point(path, props, labels, window / rate),
        frontend=_frontend(path, props, rate),
        body=props.get(KEY_BODY) or None,
        stream=_json_object(path, props, KEY_STREAM),
    )


def _json_value(path: str | Path, props: Mapping[str, str], key: str) -> Any:
    try:
        return json.loads(props[key])
    except json.JSONDecodeError as exc:
        raise ModelContractError(path, f"metadata {key} is not JSON: {exc}", "see docs/model-contract.md") from None


def _json_object(path: str | Path, props: Mapping[str, str], key: str) -> dict[str, Any] | None:
    if not props.get(key):
        return None
    value = _json_value(path, props, key)
    if not isinstance(value, dict):
        raise ModelContractError(path, f"metadata {key} must be a JSON object", "see docs/model-contract.md")
    return value


def _frontend(path: str | Path, props: Mapping[str, str], rate: int) -> dict[str, Any] | None:
    """The front-end description; a `logmel` one must be computable as written (edgekd.frontend)."""
    raw = _json_object(path, props, KEY_FRONTEND)
    if raw is None:
        if props.get(KEY_BODY):
            raise ModelContractError(path, f"metadata {KEY_BODY} without {KEY_FRONTEND}", "re-export the model")
        return None
    from edgekd.frontend import KIND_LOGMEL, FrontEndError, LogMelSpec

    if raw.get("kind") != KIND_LOGMEL:
        return raw  # another kind: kept, and the model runs whole windows
    try:
        spec = LogMelSpec.from_dict(raw)
    except FrontEndError as exc:
        raise ModelContractError(path, f"metadata {KEY_FRONTEND}: {exc}", "see docs/model-contract.md") from None
    if spec.sample_rate != rate:
        raise ModelContractError(path, f"metadata {KEY_FRONTEND}: sample_rate={spec.sample_rate} but the model "
                                       f"runs at {rate} Hz")  # fmt: skip
    return raw


def _background(path: str | Path, props: Mapping[str, str], labels: list[str]) -> tuple[str, ...] | None:
    if KEY_BACKGROUND not in props:
        return None
    value = _json_value(path, props, KEY_BACKGROUND)
    if not (isinstance(value, list) and all(isinstance(x, str) for x in value)):
        raise ModelContractError(path, f"metadata {KEY_BACKGROUND} must be a JSON array of label names")
    unknown = [x for x in value if x not in labels]
    if unknown:
        raise ModelContractError(path, f"metadata {KEY_BACKGROUND} names {unknown}, which are not labels {labels}")
    return tuple(dict.fromkeys(value))


def _number(path: str | Path, key: str, name: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ModelContractError(path, f"metadata {key}: {name}={value!r} must be a number in {lo:g}..{hi:g}")
    return float(value)


def _operating_point(
    path: str | Path, props: Mapping[str, str], labels: list[str], window_s: float
) -> OperatingPoint | None:
    key = KEY_OPERATING_POINT
    raw = _json_object(path, props, key)
    if raw is None:
        return None
    unknown = sorted(set(raw) - set(OPERATING_POINT_FIELDS))
    if unknown:
        raise ModelContractError(
            path, f"metadata {key} has unknown fields {unknown}", f"allowed: {', '.join(OPERATING_POINT_FIELDS)}"
        )
    if "hop_s" not in raw:
        raise ModelContractError(path, f"metadata {key} lacks hop_s, the hop it was chosen at")
    hop_s = _number(path, key, "hop_s", raw["hop_s"], 1e-4, window_s)
    smoothing = raw.get("smoothing", 1)
    if isinstance(smoothing, bool) or not isinstance(smoothing, int) or not 1 <= smoothing <= 1000:
        raise ModelContractError(path, f"metadata {key}: smoothing={smoothing!r} must be a whole number of windows, 1..1000")
    thresholds = raw.get("thresholds", {})
    if not isinstance(thresholds, dict):
        raise ModelContractError(path, f"metadata {key}: thresholds must be an object of label -> threshold")
    strange = sorted(set(thresholds) - set(labels))
    if strange:
        raise ModelContractError(path, f"metadata {key}: thresholds for {strange}, which are not labels {labels}")
    mode = raw.get("mode", "all")
    if mode not in MODES:
        raise ModelContractError(path, f"metadata {key}: mode={mode!r} must be one of {', '.join(MODES)}")
    validation = raw.get("validation", {})
    if not isinstance(validation, dict):
        raise ModelContractError(path, f"metadata {key}: validation must be an object of figures")
    return OperatingPoint(
        hop_s=hop_s,
        smoothing=smoothing,
        threshold=_number(path, key, "threshold", raw.get("threshold", 0.5), 0.0, 1.0),
        thresholds={k: _number(path, key, f"thresholds[{k!r}]", v, 0.0, 1.0) for k, v in thresholds.items()},
        refractory_s=_number(path, key, "refractory_s", raw.get("refractory_s", 0.0), 0.0, 3600.0),
        mode=mode,
        aim=str(raw.get("aim", "")),
        chosen_on=str(raw.get("chosen_on", "")),
        validation=validation,
    )


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
