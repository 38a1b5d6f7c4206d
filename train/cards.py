"""Model cards rendered from a model file and its run record by a template.

The card of `NAME.onnx` is `train/cards/TASK.md.tmpl` filled from two sources:

- the file itself: name, labels, rate, window, size, SHA-256, its `edgekd.training` record
  (student, T, alpha, seed, parameters, MACs, the test figures measured on it) and its
  operating point;
- its run record, `NAME.record.json` beside it: measured figures that do not belong in the file a
  device loads (recipe settings, teachers, ablation tables, the INT8 attempt, the split's groups,
  per-class and per-source figures, stream figures, the runs it was chosen among).

The prose is in the template and the targets in `train/cards/TASK.toml`; this module only
formats figures and picks blocks. Two kinds of template: the emotion one (its spec lists
`test_sets`) gets flat values prepared by `Card`; the others name figures by path
(`${record.streams.test.operating_point.recall|pct}`, edgekd_train.card_fill) and hold targets
as requirements on such paths. A record may replace a template block with its own text
(`"blocks": {NAME: TEXT}`): notes written by hand about one file stay in its record.

    edgekd train card models/wav2small-emotion.onnx          # uses models/wav2small-emotion.record.json
    edgekd train card MODEL.onnx --record run.json -o MODEL.md

No torch here: a card renders wherever the runtime is installed.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from edgekd_train.card_fill import BlockFiller, resolve
from edgekd_train.card_template import CardError, CardTemplate

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

log = logging.getLogger(__name__)

CARDS_DIR = Path(__file__).resolve().parent / "cards"
RECORD_SUFFIX = ".record.json"


@dataclass(frozen=True)
class CardSpec:
    """`train/cards/TASK.toml`: the test sets the card lists and the targets per student."""

    test_sets: tuple[tuple[str, str], ...]
    targets_title: str
    targets: dict[str, dict[str, float]]
    ablation_teachers: tuple[str, ...]

    @classmethod
    def read(cls, path: Path) -> CardSpec:
        raw = read_spec(path)
        targets = dict(raw.get("targets", {}))
        title = str(targets.pop("title", "Targets"))
        return cls(tuple((t["key"], t["label"]) for t in raw.get("test_sets", ())), title,
                   {student: dict(t) for student, t in targets.items()},
                   tuple(raw.get("ablations", {}).get("teachers", ())))


def pct(x: float | None) -> str:
    return f"{100 * (math.nan if x is None else x):.1f}%"


def _text(value: Any) -> str:
    return "?" if value is None else str(value)


def _accuracy(figures: Mapping[str, Any], key: str) -> float | None:
    value = figures.get(key)
    return value.get("accuracy") if isinstance(value, Mapping) else value


def record_path_for(model: Path) -> Path:
    return model.with_name(model.name.removesuffix(".onnx") + RECORD_SUFFIX)


def load_record(path: Path, sha256: str) -> dict[str, Any]:
    """A run record, checked to describe the model file with this SHA-256."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CardError(f"run record {path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise CardError(f"run record {path}: not valid JSON ({exc})") from None
    if record.get("sha256") not in (None, sha256):
        raise CardError(f"run record {path} describes the file with SHA-256 {record['sha256'][:12]}…, not this one "
                        f"({sha256[:12]}…): pass the record written with this file (--record)")
    return record


@dataclass(frozen=True)
class ModelFacts:
    """What the card needs of the ONNX file, read through the runtime."""

    name: str
    task: str
    labels: tuple[str, ...]
    sample_rate: int
    window_samples: int
    size: int
    sha256: str
    training: dict[str, Any]
    operating_point: dict[str, Any] | None = None

    @classmethod
    def read(cls, path: Path) -> ModelFacts:
        from edgekd.model import Model

        model = Model(path)
        m = model.meta
        op = m.operating_point.to_dict() if m.operating_point is not None else None
        return cls(m.name, m.task, tuple(m.labels), m.sample_rate, m.window_samples, path.stat().st_size,
                   model.sha256, dict(m.training or {}), op)

    def as_values(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.task, "labels": list(self.labels), "n_labels": len(self.labels),
                "rate_khz": f"{self.sample_rate / 1000:g}", "window_seconds": f"{self.window_samples / self.sample_rate:g}",
                "size": self.size, "sha12": self.sha256[:12], "sha256": self.sha256}


def render_card(model: Path, record: Path | None = None, cards_dir: Path = CARDS_DIR) -> str:
    """The card of the ONNX file `model`, with its run record (default: NAME.record.json beside it, if there)."""
    facts = ModelFacts.read(model)
    if record is None and record_path_for(model).is_file():
        record = record_path_for(model)
    run = load_record(record, facts.sha256) if record is not None else {}
    template_path = cards_dir / f"{facts.task}.md.tmpl"
    if not template_path.is_file():
        known = sorted(p.name.removesuffix(".md.tmpl") for p in cards_dir.glob("*.md.tmpl"))
        raise CardError(f"no card template for task {facts.task!r}: write {template_path} (templates here: {known})")
    template = CardTemplate.read(template_path).with_blocks(run.get("blocks", {}))
    spec_path = template_path.with_name(f"{facts.task}.toml")
    raw = read_spec(spec_path)
    if "test_sets" in raw:
        return Card(facts, run, template, CardSpec.read(spec_path)).render()
    return figures_card(facts, run, template, raw)


def read_spec(path: Path) -> dict[str, Any]:
    """`train/cards/TASK.toml`: what belongs to the data and the task, not the code (targets, test sets)."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise CardError(f"no card spec {path}: it names the targets of the card beside it") from None
    except tomllib.TOMLDecodeError as exc:
        raise CardError(f"card spec {path}: not valid TOML ({exc})") from None


def figures_card(facts: ModelFacts, run: Mapping[str, Any], template: CardTemplate, spec: Mapping[str, Any]) -> str:
    """A card whose template reads its figures by path (edgekd_train.card_fill): the file (`file`, its
    `training` record and operating point `op`), the run record (`record`), the spec (`spec`) and the
    verdict of each of the spec's targets (`targets.NAME.verdict`: met or missed)."""
    values: dict[str, Any] = {"file": facts.as_values(), "training": facts.training, "op": facts.operating_point,
                              "record": dict(run), "spec": dict(spec)}
    values["targets"] = {name: _verdict(name, target, values) for name, target in spec.get("targets", {}).items()}
    text = BlockFiller(template, values).fill("card")
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"


def _verdict(name: str, target: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """Whether every requirement of target `name` holds: each names a figure by path and a bound."""
    met = True
    for req in target.get("require", ()):
        try:
            figure = float(resolve(values, req["figure"]))
        except KeyError:
            raise CardError(f"target {name!r}: no figure {req.get('figure')!r} in the model's metadata or record") from None
        if "at_least" in req:
            met &= figure >= req["at_least"]
        if "at_most" in req:
            met &= figure <= req["at_most"]
    return {**target, "verdict": "met" if met else "missed"}


@dataclass(frozen=True)
class Card:
    facts: ModelFacts
    run: dict[str, Any]
    template: CardTemplate
    spec: CardSpec

    def render(self) -> str:
        f, t = self.facts, self.facts.training
        values: dict[str, Any] = {
            "name": f.name,
            "student": t.get("student", "?"),
            "rate_khz": f"{f.sample_rate / 1000:g}",
            "window_seconds": f"{f.window_samples / f.sample_rate:g}",
            "n_labels": len(f.labels),
            "labels": ", ".join(f.labels),
            "size": f"{f.size:,}",
            "sha12": f.sha256[:12],
            "params": f"{t['params']:,}" if "params" in t else "?",
            "macs_m": f"{t['macs_per_second'] / 1e6:.1f}" if "macs_per_second" in t else "?",
            "seed": _text(t.get("seed")),
            "T": f"{t['T']:g}" if "T" in t else "?",
            "alpha": f"{t['alpha']:g}" if "alpha" in t else "?",
        }
        values["intro"] = self.block("intro", values)
        values["figure_rows"] = "\n".join(self.figure_rows())
        values["targets"] = self.targets(values)
        values["training"] = self.training(values)
        values["recipe"] = self.optional("settings", "recipe", values, self.settings)
        values["teachers"] = self.optional("teachers", "teachers", values, self.teachers)
        values["selection_rule"] = self.block("selection_rule", values)
        values["data_and_split"] = self.block("data_and_split", {**values, "split_groups": self.split_groups(),
                                                                 "training_data": self.block("training_data", values)})
        values["ablations"] = self.optional("ablations", "ablations", values,
                                            lambda: {"tables": "\n\n".join(self.ablations(values))})
        values["after_ablation"] = self.block("after_ablation", values)
        values["int8"] = self.optional("int8", "int8", values, lambda: self.int8(values))
        values["export_check"] = self.export_check(values)
        text = self.block("card", values)
        return re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"

    def block(self, name: str, values: Mapping[str, Any]) -> str:
        return self.template.render(name, values)

    def optional(self, key: str, block: str, values: Mapping[str, Any], more: Callable[[], Mapping[str, Any]]) -> str:
        """A section from the record's `key`; without it, only when the record wrote the block itself."""
        if self.run.get(key) is not None:
            return self.block(block, {**values, **more()})
        return self.block(block, values) if block in self.run.get("blocks", {}) else ""

    def figures(self) -> dict[str, Any]:
        figures = self.facts.training.get("figures")
        if not isinstance(figures, Mapping):
            raise CardError(f"model {self.facts.name}: its edgekd.training metadata has no figures to report")
        return dict(figures)

    def figure_rows(self) -> list[str]:
        figures = self.figures()
        rows = []
        for key, label in self.spec.test_sets:
            e = figures.get(key)
            if e is None:
                raise CardError(f"model {self.facts.name}: no {key!r} in its figures ({sorted(figures)})")
            rows.append(self.block("figure_row", {"label": label, "n": e["n"], "accuracy": pct(e["accuracy"]),
                                                  "macro_f1": f"{e['macro_f1']:.3f}"}))
        return rows

    def targets(self, values: Mapping[str, Any]) -> str:
        student = self.facts.training.get("student", "?")
        targets = self.spec.targets.get(student)
        if targets is None:
            return ""
        figures = self.figures()
        out: dict[str, Any] = {}
        met_all = True
        for key, target in targets.items():
            accuracy = _accuracy(figures, key)
            met = accuracy is not None and accuracy >= target
            met_all &= met
            n = figures.get(key, {}).get("n")
            out |= {f"{key}_target": pct(target), f"{key}_accuracy": pct(accuracy), f"{key}_met": "met" if met else "missed",
                    f"{key}_n": _text(n), f"{key}_correct": _text(None if n is None or accuracy is None else round(accuracy * n))}
        torch = self.facts.training.get("figures_gpu") or self.facts.training.get("figures_packed_torch") or {}
        out |= {f"torch_{k}": pct(_accuracy(torch, k)) for k in ("tess", "ravdess")}
        return self.block("targets", {**values, **out, "targets_title": self.spec.targets_title,
                                      "targets_verdict": "met" if met_all else "NOT met"})

    def training(self, values: Mapping[str, Any]) -> str:
        t = self.facts.training
        if t.get("alpha", 1) >= 1:
            return self.block("training_labels_only", values)
        kind = "ensemble" if t.get("teacher_kind") == "ensemble" else "wav2vec2"
        return self.block("training_distilled", {**values, "teacher_who": self.block(f"teacher_who_{kind}", values)})

    def settings(self) -> dict[str, str]:
        s = self.run.get("settings", {})
        return {k: _text(s.get(k)) for k in ("epochs", "lr", "weight_decay", "batch_size")} | {
            "train_window_seconds": _text(s.get("train_window_seconds", 3))}

    def teachers(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for kind, teacher in self.run["teachers"].items():
            train = teacher.get("train", {})
            values |= {
                f"{kind}_parameters": f"{teacher.get('parameters', 0):,}",
                f"{kind}_learning_rate": _text(train.get("learning_rate")),
                f"{kind}_max_minutes": _text(train.get("max_minutes")),
                f"{kind}_epochs_run": f"{teacher.get('epochs_run', 0):.0f}",
                f"{kind}_best_val": pct(teacher.get("best_val_accuracy")),
            }
            values |= {f"{kind}_{k}": pct(_accuracy(teacher.get("figures", {}), k))
                       for k in ("val", "test_tess", "test_ravdess")}
        return values

    def split_groups(self) -> str:
        groups = self.run.get("split_groups")
        if not groups:
            return ""
        return " " + self.block("split_groups", {
            "test_words_n": len(groups["test"]["tess"]), "test_words": ", ".join(groups["test"]["tess"]),
            "val_words": ", ".join(groups["val"]["tess"]), "val_actors": ", ".join(groups["val"]["ravdess"])})

    def ablations(self, values: Mapping[str, Any]) -> list[str]:
        student = self.facts.training.get("student")
        sections = []
        for kind in self.spec.ablation_teachers:
            abl = self.run.get("ablations", {}).get(kind)
            if not abl:
                continue
            effect = abl["teacher_effect"].get(student, {})
            mine = [r for r in abl["rows"] if r["student"] == student]
            rows = [self.block("ablation_row", {"T": f"{r['T']:g}", "alpha": f"{r['alpha']:g}", "n": r["n"],
                                                **{m: _cell(r[m]) for m in ("val_acc", "tess", "ravdess")}})
                    for r in mine]
            most = max(r["n"] for r in mine)
            short = [self.block("ablation_short_cell", {"T": f"{r['T']:g}", "alpha": f"{r['alpha']:g}",
                                                        "seeds": ", ".join(map(str, r["seeds"]))})
                     for r in mine if r["n"] < most]
            sections.append(self.block("ablation", {
                **values, "title": self.block(f"ablation_title_{kind}", values),
                "verdict": effect.get("verdict", "not measured"), "best_cell": str(effect.get("best_cell")),
                "rows": "\n".join(rows),
                "short_cells": self.block("ablation_short_cells", {"most": most, "cells": "; ".join(short)})
                if short else ""}))
        return sections

    def int8(self, values: Mapping[str, Any]) -> dict[str, str]:
        q = self.run["int8"]
        f = q.get("figures", {})
        why = str(q.get("why"))
        outcome = ("int8_shipped" if q.get("shipped") else "int8_not_shipped")
        out = {**values, "int8_bytes": f"{q.get('int8_bytes', 0):,}", "size_ratio": f"{q.get('size_ratio', 0):.2f}",
               "int8_ms": f"{q.get('int8_ms', 0):.2f}", "fp32_ms": f"{q.get('fp32_ms', 0):.2f}",
               "int8_test_tess": pct(f.get("test_tess")), "int8_test_ravdess": pct(f.get("test_ravdess")),
               "why": why, "why_capitalised": why.capitalize()}
        return {**out, "int8_outcome": self.block(outcome, out)}

    def export_check(self, values: Mapping[str, Any]) -> str:
        diff = self.facts.training.get("onnx_vs_torch_max_abs")
        if diff is None and "export_check" not in self.run.get("blocks", {}):
            return ""
        return self.block("export_check", {**values, "onnx_vs_torch_max_abs": f"{diff:.1e}" if diff is not None else "?"})


def _cell(mean_std: Any) -> str:
    mean, std = mean_std
    return f"{pct(mean)} (one run)" if std is None or std != std else f"{pct(mean)} ± {pct(std)}"


def write_card(model: Path, out: Path | None = None, record: Path | None = None, cards_dir: Path = CARDS_DIR) -> str:
    """Render the card of `model`; write it to `out` when given. Returns the text."""
    text = render_card(model, record, cards_dir)
    if out is not None:
        out.write_text(text, encoding="utf-8")
        log.info("card of %s written to %s", model.name, out)
    return text
