"""Models by name: where edgekd looks for a model given by name, and what `edgekd models` lists.

A `--model` value (and a config's `[[models]] path`) is taken, in this order, as
1. a path, when a file (or anything) exists there: `models/wav2tiny-keyword.onnx`, `/opt/m.onnx`;
2. a name, when it has no directory part: `wav2tiny-keyword` (".onnx" may follow) is the file
   NAME.onnx in the first of these places that has one:
   a. the directories in $EDGEKD_MODELS (separated by os.pathsep, ':'), in order; an entry may
      also be one .onnx file, which then has its own stem as its name;
   b. the models shipped with edgekd (package data, edgekd/models).
A value that is neither is refused with the places looked in and the names known there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.contract import ModelContractError, ModelMetadata

MODELS_ENV = "EDGEKD_MODELS"
SHIPPED_DIR = Path(__file__).resolve().parent / "models"
SHIPPED = "shipped with edgekd"
SUFFIX = ".onnx"


class ModelNotFoundError(ModelContractError):
    """A --model value names no file and no known model; the message says where edgekd looked."""


@dataclass(frozen=True)
class Place:
    """A directory (or one file) where named models are looked for, and why it is looked in."""

    path: Path
    origin: str  # "$EDGEKD_MODELS" or SHIPPED

    def files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path] if self.path.name.endswith(SUFFIX) else []
        return sorted(self.path.glob(f"*{SUFFIX}")) if self.path.is_dir() else []


@dataclass(frozen=True)
class Known:
    """A model file found by name."""

    name: str
    path: Path
    origin: str


def places(environ: Mapping[str, str] | None = None) -> list[Place]:
    """Where names are looked up, in order: $EDGEKD_MODELS, then the shipped models."""
    environ = os.environ if environ is None else environ
    listed = [Place(Path(p), f"${MODELS_ENV}") for p in environ.get(MODELS_ENV, "").split(os.pathsep) if p]
    return [*listed, Place(SHIPPED_DIR, SHIPPED)]


def known_models(environ: Mapping[str, str] | None = None) -> dict[str, Known]:
    """Every model that a name finds, by name (the file's stem); the first place holding a name wins."""
    out: dict[str, Known] = {}
    for place in places(environ):
        for f in place.files():
            out.setdefault(f.name.removesuffix(SUFFIX), Known(f.name.removesuffix(SUFFIX), f, place.origin))
    return out


def describe_places(environ: Mapping[str, str] | None = None) -> str:
    """The places in words, for messages: `$EDGEKD_MODELS (unset), then shipped with edgekd (/...)`."""
    environ = os.environ if environ is None else environ
    shown = [f"{p.origin} ({p.path})" for p in places(environ)]
    if not environ.get(MODELS_ENV):
        shown.insert(0, f"${MODELS_ENV} (unset)")
    return ", then ".join(shown)


def locate(value: str | Path, environ: Mapping[str, str] | None = None) -> Path:
    """The file a --model value stands for (the module's docstring gives the order)."""
    path = Path(value)
    if os.path.lexists(path):
        return path  # whatever is there: Model says what is wrong with it, if anything
    text = str(value)
    name = path.name.removesuffix(SUFFIX)
    known = known_models(environ)
    if os.sep in text or "/" in text or not name:
        hint = f"; edgekd knows a model named {name}: --model {name}" if name in known else ""
        raise ModelNotFoundError(text, f"no such file{hint}", "check the --model path, or give a model's name")
    if name in known:
        return known[name].path
    names = ", ".join(sorted(known)) or "none"
    raise ModelNotFoundError(
        text,
        f"no such file, and no model named {name!r} in {describe_places(environ)}",
        f"known names: {names}; `edgekd models` lists them; or give the path of an .onnx file",
    )


# -- what `edgekd models` shows -------------------------------------------------------------------

_TEST = "test"


def _figure(entry: Any) -> dict[str, float] | None:
    """{"accuracy"|"roc_auc": value, "n": clips} from one figures entry (or its "overall"), or None."""
    if not isinstance(entry, dict):
        return None
    if not any(k in entry for k in ("accuracy", "roc_auc")) and isinstance(entry.get("overall"), dict):
        entry = entry["overall"]
    out = {k: entry[k] for k in ("roc_auc", "accuracy", "n") if isinstance(entry.get(k), (int, float))}
    return out if "accuracy" in out or "roc_auc" in out else None


def clip_figures(meta: ModelMetadata) -> dict[str, dict[str, float]]:
    """The test-set figures the file's training record carries: each `test_*` set that has one
    (e.g. tess, ravdess), else the `test` set; {} when the record has none."""
    figures = meta.training.get("figures")
    if not isinstance(figures, dict):
        return {}
    parts = {k.removeprefix(f"{_TEST}_"): f for k, v in figures.items() if k.startswith(f"{_TEST}_") and (f := _figure(v))}
    if parts:
        return parts
    whole = _figure(figures.get(_TEST))
    return {_TEST: whole} if whole else {}


def stream_figures(meta: ModelMetadata) -> dict[str, Any] | None:
    """The figures on validation streams that the file's operating point was chosen with, or None."""
    op = meta.operating_point
    if op is None or not op.validation:
        return None
    return dict(op.validation)


def format_clips(figures: dict[str, dict[str, float]]) -> str:
    if not figures:
        return "-"
    shown = []
    for part, f in figures.items():
        value = f"ROC-AUC {f['roc_auc']:.2f}" if "roc_auc" in f else f"{f['accuracy']:.1%}"
        n = f" n={int(f['n'])}" if "n" in f else ""
        shown.append(f"{part} {value}{n}")
    return ", ".join(shown)


def format_streams(figures: dict[str, Any] | None) -> str:
    if not figures or not isinstance(figures.get("recall"), (int, float)):
        return "-"
    text = f"recall {figures['recall']:.1%}"
    if isinstance(figures.get("false_alarms_per_hour"), (int, float)):
        text += f" at {figures['false_alarms_per_hour']:.1f} FA/h"
    if isinstance(figures.get("events"), int):
        text += f" ({figures['events']} events)"
    return text


def format_size(n_bytes: int) -> str:
    return f"{n_bytes / 1024:.0f} KiB" if n_bytes < 1024 * 1024 else f"{n_bytes / (1024 * 1024):.1f} MiB"
