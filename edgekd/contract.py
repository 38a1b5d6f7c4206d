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

CONTRACT_VERSION = 1

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

    @property
    def window_seconds(self) -> float:
        return self.window_samples / self.sample_rate

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
        }

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
    version = props.get(KEY_CONTRACT, str(CONTRACT_VERSION))
    if version != str(CONTRACT_VERSION):
        raise ModelContractError(
            path,
            f"contract version {version!r} is not supported (this edgekd reads {CONTRACT_VERSION})",
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
    )


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
