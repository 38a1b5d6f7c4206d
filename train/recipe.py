"""Recipes: the TOML files under train/recipes/, loaded once into typed objects and checked.

A recipe names the task (labels, rate, window), the corpora, the split, the teacher, the
distillation settings, the ablation grid and the export version. `load_recipe("emotion")` finds
`train/recipes/emotion.toml`; any other path to a `.toml` file works too.

Every table is a pydantic model that refuses unknown keys, so a typo fails at load with a
message that names the file, the table and the key ("recipe keyword.toml: [distill] epochs: ...").
A recipe is the single source of a run's settings: command-line options only override its keys.

No torch here: the command line reads recipes before it imports the training stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
import inspect
import re
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgekd.config import model_at

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


class RecipeError(ValueError):
    """A recipe file is missing, malformed or has an unknown key. The message names the key."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"recipe {path}: {problem}")


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskSpec(_Table):
    """[task]: what the model predicts, and from how much audio."""

    name: str
    labels: tuple[str, ...] = Field(min_length=1)
    sample_rate: int = Field(16000, ge=4000, le=96000)
    window_seconds: float = Field(3.0, gt=0)
    multi_label: bool = False

    @field_validator("labels")
    @classmethod
    def _unique(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        repeated = sorted({x for x in v if v.count(x) > 1})
        if repeated:
            raise ValueError(f"labels must be unique; repeated: {repeated}")
        return v

    @property
    def window_samples(self) -> int:
        return int(round(self.window_seconds * self.sample_rate))


class CorpusSpec(_Table):
    """One [[data.corpora]] entry: a corpus layout (`edgekd_train.data.corpora.CORPORA`) under a root."""

    name: str
    root: str  # relative to --data; left out: the corpus name
    options: dict[str, Any] = Field(default_factory=dict)  # keyword arguments of the corpus loader
    label: str | None = None  # every clip of this corpus gets this label (e.g. RAVDESS speech -> "speech")
    thin: int = Field(1, ge=1)  # keep every thin-th clip (before the split)

    @model_validator(mode="before")
    @classmethod
    def _root_defaults_to_the_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and "root" not in data and "name" in data:
            return {**data, "root": data["name"]}
        return data

    @model_validator(mode="after")
    def _loader_knows_the_options(self) -> "CorpusSpec":
        from edgekd_train.data.corpora import CORPORA

        key = self.name.lower().replace("-", "_")
        if key not in CORPORA:
            raise ValueError(f"unknown corpus {self.name!r}; known: {', '.join(sorted(CORPORA))}")
        params = list(inspect.signature(CORPORA[key]).parameters)[1:]  # after root
        unknown = sorted(set(self.options) - set(params))
        if unknown:
            raise ValueError(f"corpus {self.name} has no option(s) {unknown}; its options: {params or 'none'}")
        return self


class DataSpec(_Table):
    """[data]: the corpora, and the background-noise recordings some tasks mix in."""

    corpora: tuple[CorpusSpec, ...] = Field(min_length=1)
    noise: str | None = None  # folder of noise recordings, relative to --data


class SplitSpec(_Table):
    """Group-disjoint split per corpus: a holdout (meta key -> values) is that corpus's test part."""

    seed: int = 0
    val: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.2, ge=0, lt=1)
    holdout: dict[str, dict[str, tuple[Any, ...]]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fractions(self) -> "SplitSpec":
        if self.val + self.test >= 1:
            raise ValueError(f"val={self.val} and test={self.test} must sum below 1 (the rest trains)")
        for corpus, rule in self.holdout.items():
            if not rule or not all(rule.values()):
                raise ValueError(f"holdout.{corpus} must map a meta key to a non-empty list, e.g. actor = [15, 16]")
        return self


class ScratchTeacherSpec(_Table):
    """[teacher.scratch]: fields of `edgekd_train.teacher.ScratchTeacherConfig` (a wav2vec2 from random weights)."""

    hidden_size: int | None = None
    num_hidden_layers: int | None = None
    num_attention_heads: int | None = None
    intermediate_size: int | None = None
    conv_dim: int | None = None
    feat_extract_norm: Literal["layer", "group"] | None = None
    num_conv_pos_embeddings: int | None = None
    num_conv_pos_embedding_groups: int | None = None
    classifier_proj_size: int | None = None
    hidden_dropout: float | None = None
    attention_dropout: float | None = None
    activation_dropout: float | None = None
    feat_proj_dropout: float | None = None
    final_dropout: float | None = None
    mask_time_prob: float | None = None
    mask_time_length: int | None = None
    layerdrop: float | None = None


class TeacherTrainSpec(_Table):
    """[teacher.train]: fields of `edgekd_train.teacher.TeacherTrainConfig` (transformers' Trainer names)."""

    epochs: int | float | None = Field(None, gt=0)
    batch_size: int | None = Field(None, ge=1)
    learning_rate: float | None = Field(None, gt=0)
    weight_decay: float | None = Field(None, ge=0)
    warmup_ratio: float | None = Field(None, ge=0, lt=1)
    freeze_feature_encoder: bool | None = None
    max_grad_norm: float | None = Field(None, gt=0)
    bf16: bool | None = None
    seed: int | None = None
    shift_s: float | None = Field(None, ge=0)
    gain_db: float | None = Field(None, ge=0)
    noise_snr_db: float | None = None
    num_workers: int | None = Field(None, ge=0)
    max_minutes: float | None = Field(None, gt=0)
    extra: dict[str, Any] | None = None


class TeacherSpec(_Table):
    """[teacher]: "scratch" (the [teacher.scratch] wav2vec2), a hub name or a save_pretrained folder."""

    source: str = "scratch"
    scratch: ScratchTeacherSpec = Field(default_factory=ScratchTeacherSpec)
    train: TeacherTrainSpec = Field(default_factory=TeacherTrainSpec)


class AugmentSpec(_Table):
    """[distill.augment]: fields of `edgekd_train.distill.tensor_augment.TensorAugmentConfig`."""

    shift_s: float | None = Field(None, ge=0)
    gain_db: tuple[float, float] | None = None
    snr_db: tuple[float, float] | None = None
    p_noise: float | None = Field(None, ge=0, le=1)
    crop_samples: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _ranges(self) -> "AugmentSpec":
        for name in ("gain_db", "snr_db"):
            lo_hi = getattr(self, name)
            if lo_hi is not None and lo_hi[0] > lo_hi[1]:
                raise ValueError(f"{name}={list(lo_hi)} must be [low, high]")
        return self


class DistillSpec(_Table):
    """[distill]: the student to build and fields of `edgekd_train.distill.loop.DistillConfig`.

    Keys left out keep DistillConfig's defaults; `fields()` holds only the keys the recipe sets.
    """

    student: str = "wav2small"
    T: float | None = Field(None, gt=0)
    alpha: float | None = Field(None, ge=0, le=1)  # 1: labels only, no teacher
    epochs: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=2)
    lr: float | None = Field(None, gt=0)
    weight_decay: float | None = Field(None, ge=0)
    warmup_frac: float | None = Field(None, ge=0, lt=1)
    warmup_epochs: float | None = Field(None, ge=0)  # the warm-up in epochs instead of warmup_frac
    weight_decay_all: bool | None = None  # decay every parameter, not only conv/linear weights
    cache_teacher: bool | None = None
    time_limit_s: float | None = Field(None, gt=0)
    seed: int | None = None
    grad_clip: float | None = Field(None, gt=0)
    eval_batch_size: int | None = Field(None, ge=1)
    keep_best: bool | None = None
    max_steps: int | None = Field(None, ge=1)
    balance: Literal["none", "group"] | None = None
    ema: float | None = Field(None, ge=0, lt=1)
    ckpt_every: int | None = Field(None, ge=1)
    resume: bool | None = None
    device: str | None = None
    train_window_seconds: float | None = Field(None, gt=0)  # longer training windows; the augmentation crops
    augment: AugmentSpec | None = None

    @model_validator(mode="after")
    def _longer_windows_need_a_crop(self) -> "DistillSpec":
        if self.train_window_seconds is not None and self.augment is None:
            raise ValueError("train_window_seconds needs a [distill.augment] table: the augmentation crops the "
                             "task's window from the longer training windows")
        return self

    def fields(self) -> dict[str, Any]:
        """The keys the recipe sets (and `--set` overrides), as plain values."""
        return self.model_dump(exclude_unset=True)


class AblationSpec(_Table):
    """[ablation]: the student x T x alpha x seed grid of `edgekd train ablate`."""

    students: tuple[str, ...] = ("wav2small", "wav2tiny")
    temperatures: tuple[float, ...] = (1.0, 2.0, 3.0)
    alphas: tuple[float, ...] = (0.0, 0.5, 1.0)
    seeds: tuple[int, ...] = (0, 1, 2)

    @model_validator(mode="after")
    def _ranges(self) -> "AblationSpec":
        if any(not 0 <= a <= 1 for a in self.alphas):
            raise ValueError(f"alphas {list(self.alphas)} must be in [0, 1] (1: labels only)")
        if any(t <= 0 for t in self.temperatures):
            raise ValueError(f"temperatures {list(self.temperatures)} must be positive")
        return self


class StudySpec(_Table):
    """[study]: the students of `edgekd train study` (the temporal-distillation study), unless the command names them."""

    students: tuple[str, ...] = ()


class ExportSpec(_Table):
    """[export]: the model version written into the ONNX metadata, the opset and the parity tolerance."""

    version: str = "0.1.0"
    opset: int = Field(17, ge=7)
    parity_atol: float = Field(1e-4, gt=0)


STREAM_KINDS = ("speech", "distractor", "noise")


class StreamWindowsSpec(_Table):
    """[streams]: extra training windows for a detector that lives on streams
    (`edgekd_train.streams.negatives`), cut from training audio only. Left out (or zero counts): none.

    `background` windows of speech, other tasks' sounds (`distractor`) and the noise recordings,
    drawn by `weights` and labelled by `labels`; `partial` windows per training event that hold only
    its start or end, labelled `partial_label`. Which corpora give the speech and the distractors is
    the task's (the training half of corpora it never trained on, edgekd_train.streams.sources).
    `soft_targets = false`: a teacher's soft targets (Hinton's term) apply to the task's clips only,
    and these windows learn from their labels alone (as with alpha = 1); true: every window hears it.
    """

    background: int = Field(0, ge=0)
    partial: int = Field(0, ge=0)  # windows per training event
    seed: int = 0
    weights: dict[str, float] = Field(default_factory=lambda: {"speech": 0.65, "distractor": 0.15, "noise": 0.2})
    labels: dict[str, str] = Field(default_factory=dict)  # kind -> the task's label
    partial_label: str | None = None
    soft_targets: bool = True  # false: no teacher soft targets on these windows

    @model_validator(mode="after")
    def _kinds(self) -> "StreamWindowsSpec":
        for table in ("weights", "labels"):
            unknown = sorted(set(getattr(self, table)) - set(STREAM_KINDS))
            if unknown:
                raise ValueError(f"{table}: unknown kind(s) {unknown}; kinds: {', '.join(STREAM_KINDS)}")
        negative = sorted(k for k, w in self.weights.items() if w < 0)
        if negative:
            raise ValueError(f"weights of {negative} are negative; give each kind a share >= 0")
        if self.background:
            if not any(w > 0 for w in self.weights.values()):
                raise ValueError(f"background = {self.background} needs a positive weight for some kind "
                                 f"({', '.join(STREAM_KINDS)})")
            unlabelled = sorted(k for k, w in self.weights.items() if w > 0 and k not in self.labels)
            if unlabelled:
                raise ValueError(f"labels: no label for {unlabelled} (e.g. labels = {{ speech = \"_unknown_\" }})")
        if self.partial and self.partial_label is None:
            raise ValueError(f"partial = {self.partial} needs partial_label (the label of a window holding only "
                             "an edge of an event, e.g. \"_unknown_\")")
        return self


class Recipe(_Table):
    path: Path
    task: TaskSpec
    data: DataSpec
    split: SplitSpec = Field(default_factory=SplitSpec)
    teacher: TeacherSpec = Field(default_factory=TeacherSpec)
    distill: DistillSpec = Field(default_factory=DistillSpec)
    ablation: AblationSpec = Field(default_factory=AblationSpec)
    study: StudySpec = Field(default_factory=StudySpec)
    export: ExportSpec = Field(default_factory=ExportSpec)
    streams: StreamWindowsSpec = Field(default_factory=StreamWindowsSpec)

    @model_validator(mode="after")
    def _consistent(self) -> "Recipe":
        names = {c.name for c in self.data.corpora}
        unknown = sorted(set(self.split.holdout) - names)
        if unknown:
            raise ValueError(f"split.holdout names corpora {unknown} that [[data.corpora]] does not list")
        for c in self.data.corpora:
            if c.label is not None and c.label not in self.task.labels:
                raise ValueError(f"corpus {c.name}: label {c.label!r} is not one of the task's labels {list(self.task.labels)}")
            extra = sorted(set(c.options.get("keywords") or ()) - set(self.task.labels))
            if extra:
                raise ValueError(f"corpus {c.name}: keywords {extra} are not among the task's labels")
        named = {f"labels.{k}": v for k, v in self.streams.labels.items()}
        if self.streams.partial_label is not None:
            named["partial_label"] = self.streams.partial_label
        for key, label in named.items():
            if label not in self.task.labels:
                raise ValueError(f"[streams] {key} = {label!r} is not one of the task's labels {list(self.task.labels)}")
        longer = self.distill.train_window_seconds
        if longer is not None and longer < self.task.window_seconds:
            raise ValueError(f"distill.train_window_seconds={longer} is shorter than the task's window "
                             f"({self.task.window_seconds} s): the augmentation crops the window from it")
        return self

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def corpora(self) -> tuple[CorpusSpec, ...]:
        return self.data.corpora

    @property
    def teacher_source(self) -> str:
        return self.teacher.source

    @property
    def teacher_scratch(self) -> dict[str, Any]:
        """[teacher.scratch] as ScratchTeacherConfig fields (only the keys the recipe sets)."""
        return self.teacher.scratch.model_dump(exclude_unset=True)

    @property
    def teacher_train(self) -> dict[str, Any]:
        """[teacher.train] as TeacherTrainConfig fields (only the keys the recipe sets)."""
        return self.teacher.train.model_dump(exclude_unset=True)

    def reading_packed(self, packed: str | Path) -> "Recipe":
        """This recipe reading every corpus from a packed copy (`edgekd_train.data.pack`) instead."""
        root = str(Path(packed).resolve())
        corpora = tuple(CorpusSpec(name="packed", root=root, options={"corpus": c.name}, label=c.label, thin=c.thin)
                        for c in self.data.corpora)
        return self.model_copy(update={"data": self.data.model_copy(update={"corpora": corpora})})


def recipe_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        return p
    return RECIPES_DIR / f"{name_or_path}.toml"


def available_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


_PLAIN = re.compile(r"^[A-Za-z0-9_]+$")
_SECTIONS = {"task", "data", "split", "teacher", "distill", "ablation", "study", "export", "streams"}


def _where(loc: tuple[Any, ...]) -> str:
    """("distill", "augment", "p_noise") -> "[distill.augment] p_noise"; ("data", "corpora", 0, "name")
    -> "[[data.corpora]] 0: name"."""
    parts = [p for p in loc if not (isinstance(p, str) and not _PLAIN.match(p))]
    if not parts:
        return "(top level)"
    if len(parts) == 1:
        return f"[{parts[0]}]" if parts[0] in _SECTIONS else str(parts[0])
    if len(parts) >= 3 and parts[:2] == ["data", "corpora"] and isinstance(parts[2], int):
        rest = ".".join(str(p) for p in parts[3:])
        return f"[[data.corpora]] entry {parts[2]}" + (f": {rest}" if rest else "")
    table = ".".join(str(p) for p in parts[:-1])
    return f"[{table}] {parts[-1]}"


def describe(exc: ValidationError, prefix: tuple[str, ...] = ()) -> str:
    """Each problem of a validation error as "[table] key: what is wrong (got X)", joined by "; ".
    `prefix`: where the validated table sits in a recipe (("distill",) for a [distill] table)."""
    lines: list[str] = []
    errors = exc.errors()
    inner = [tuple(e["loc"]) for e in errors]
    for err in errors:
        loc = prefix + tuple(err["loc"])
        if err["type"] == "too_short" and any(o[: len(err["loc"])] == tuple(err["loc"]) and len(o) > len(err["loc"])
                                              for o in inner):
            continue  # a list whose items failed: the items' errors say why
        if err["type"] == "extra_forbidden":
            holder = model_at(Recipe, loc)
            known = sorted(k for k in holder.model_fields if k != "path") if holder else []
            lines.append(f"{_where(loc)}: unknown key" + (f" (known: {', '.join(known)})" if known else ""))
            continue
        if err["type"] == "missing":
            lines.append(f"{_where(loc)}: missing")
            continue
        if not loc:  # a check across tables: its message names the keys
            lines.append(err["msg"].removeprefix("Value error, "))
            continue
        got = err.get("input")
        got_text = "" if isinstance(got, (dict, BaseModel)) or "input" not in err else f" (got {got!r})"
        lines.append(f"{_where(loc)}: {err['msg'].removeprefix('Value error, ')}{got_text}")
    return "; ".join(dict.fromkeys(lines))


def parse_recipe(raw: Mapping[str, Any], path: str | Path = "<recipe>") -> Recipe:
    """A recipe from an already-read TOML table; raises `RecipeError` naming the bad key."""
    path = Path(path)
    if "path" in raw:
        raise RecipeError(path, f"(top level) path: unknown key (known: {', '.join(sorted(_SECTIONS))})")
    try:
        return Recipe.model_validate({**raw, "path": path})
    except ValidationError as exc:
        raise RecipeError(path, describe(exc)) from None


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Read and check a recipe; raises `RecipeError` naming the file and the bad key."""
    path = recipe_path(name_or_path)
    if not path.is_file():
        raise RecipeError(path, f"no such file (recipes here: {', '.join(available_recipes()) or 'none'})")
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(path, f"not valid TOML: {exc}") from None
    return parse_recipe(raw, path)


def model_metadata(recipe: Recipe, name: str, version: str | None = None, training: dict[str, Any] | None = None):
    """The model contract's metadata for a model trained by `recipe`."""
    from edgekd.contract import ModelMetadata

    return ModelMetadata(
        task=recipe.task.name,
        labels=recipe.task.labels,
        sample_rate=recipe.task.sample_rate,
        window_samples=recipe.task.window_samples,
        multi_label=recipe.task.multi_label,
        name=name,
        version=str(version or recipe.export.version),
        training=dict(training or {}),
    )


def with_overrides(recipe: Recipe, assignments: Sequence[str]) -> Recipe:
    """`recipe` with `[distill]` keys set from `KEY=VALUE` strings (`augment.p_noise=0.8` reaches the
    sub-table). VALUE is read as TOML (`80`, `0.5`, `"group"`, `[1, 2]`); a bare word is a string.
    The result is checked like the file: a bad key or value raises `RecipeError` naming it."""
    if not assignments:
        return recipe
    table = assign(recipe.distill.fields(), assignments, recipe.path, "[distill]")
    try:
        return Recipe.model_validate({**recipe.model_dump(exclude_unset=True), "path": recipe.path, "distill": table})
    except ValidationError as exc:
        raise RecipeError(recipe.path, f"--set {' '.join(assignments)}: {describe(exc)}") from None


def assign(values: Mapping[str, Any], assignments: Sequence[str], path: Path, what: str) -> dict[str, Any]:
    """A copy of `values` with keys set from `KEY=VALUE` strings, as `with_overrides` reads them."""
    table = {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}
    for item in assignments:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RecipeError(path, f"--set {item!r}: write KEY=VALUE, e.g. epochs=80 or augment.p_noise=0.8")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        *parents, leaf = key.split(".")
        target = table
        for part in parents:
            sub = target.setdefault(part, {})
            if not isinstance(sub, dict):
                raise RecipeError(path, f"--set {item!r}: {what} {part} is not a table")
            target = sub
        target[leaf] = value
    return table


# [teacher.train] keys (transformers' TrainingArguments names) -> DistillConfig fields
_TEACHER_SCHEDULE = {"epochs": "epochs", "batch_size": "batch_size", "learning_rate": "lr",
                     "weight_decay": "weight_decay", "warmup_ratio": "warmup_frac", "max_grad_norm": "grad_clip",
                     "seed": "seed"}  # fmt: skip


def teacher_distill_fields(recipe: Recipe, fields: Mapping[str, Any]) -> dict[str, Any]:
    """DistillConfig fields that train the recipe's scratch wav2vec2 with the students' loop: the students'
    `fields` with the schedule of [teacher.train] (epochs, batch size, learning rate, weight decay, warm-up,
    gradient clipping (1.0 unless set, as Trainer does), seed)."""
    tt = recipe.teacher_train
    out = {**fields, "grad_clip": 1.0}
    out.update({ours: tt[theirs] for theirs, ours in _TEACHER_SCHEDULE.items() if theirs in tt})
    return out


def distill_settings(recipe: Recipe, **overrides: Any) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """(student name, DistillConfig fields, TensorAugmentConfig fields or None) from [distill].

    Overrides that are None are ignored; the others are checked like the recipe's own keys.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    if given:
        try:
            spec = DistillSpec.model_validate({**recipe.distill.fields(), **given})
        except ValidationError as exc:
            raise RecipeError(recipe.path, describe(exc, ("distill",))) from None
    else:
        spec = recipe.distill
    table = spec.fields()
    student = str(table.pop("student", spec.student))
    augment = table.pop("augment", None)
    longer = table.pop("train_window_seconds", None)  # read by edgekd_train.prepare; the augmentation crops the window
    if augment is not None:
        augment = {k: tuple(v) if isinstance(v, list) else v for k, v in augment.items()}
        augment.setdefault("sample_rate", recipe.task.sample_rate)
        if longer is not None:
            augment.setdefault("crop_samples", recipe.task.window_samples)
    return student, table, augment
