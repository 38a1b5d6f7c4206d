"""Recipes: the TOML files under train/recipes/, loaded once into typed objects and checked.

A recipe names the task (labels, rate, window), the corpora, the split, the teacher, the
distillation settings, the ablation grid and the export version. `load_recipe("emotion")` finds
`train/recipes/emotion.toml`; any other path to a `.toml` file works too.

No torch here: the command line reads recipes before it imports the training stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


class RecipeError(ValueError):
    """A recipe file is missing, malformed or has an unknown key. The message names the key."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"recipe {path}: {problem}")


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    root: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    labels: tuple[str, ...]
    sample_rate: int = 16000
    window_seconds: float = 3.0
    multi_label: bool = False

    @property
    def window_samples(self) -> int:
        return int(round(self.window_seconds * self.sample_rate))


@dataclass(frozen=True)
class SplitSpec:
    """Group-disjoint split per corpus: a holdout (meta key -> values) is that corpus's test part."""

    seed: int = 0
    val: float = 0.1
    test: float = 0.2
    holdout: dict[str, dict[str, tuple[Any, ...]]] = field(default_factory=dict)


@dataclass(frozen=True)
class AblationSpec:
    students: tuple[str, ...] = ("wav2small", "wav2tiny")
    temperatures: tuple[float, ...] = (1.0, 2.0, 3.0)
    alphas: tuple[float, ...] = (0.0, 0.5, 1.0)
    seeds: tuple[int, ...] = (0, 1, 2)


@dataclass(frozen=True)
class Recipe:
    path: Path
    task: TaskSpec
    corpora: tuple[CorpusSpec, ...]
    split: SplitSpec
    teacher_source: str
    teacher_scratch: dict[str, Any]
    teacher_train: dict[str, Any]
    distill: dict[str, Any]
    ablation: AblationSpec
    export: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.stem


_TOP = {"task", "data", "split", "teacher", "distill", "ablation", "export"}


def recipe_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        return p
    return RECIPES_DIR / f"{name_or_path}.toml"


def available_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def _table(path: Path, raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise RecipeError(path, f"[{key}] must be a table")
    return dict(value)


def _known(path: Path, table: str, values: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(values) - known)
    if unknown:
        raise RecipeError(path, f"unknown key(s) {unknown} in [{table}]; known: {sorted(known)}")


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
    _known(path, "top level", raw, _TOP)

    task_raw = _table(path, raw, "task")
    _known(path, "task", task_raw, {"name", "labels", "sample_rate", "window_seconds", "multi_label"})
    if "name" not in task_raw or "labels" not in task_raw:
        raise RecipeError(path, "[task] needs name and labels")
    labels = task_raw["labels"]
    if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)) or len(set(labels)) != len(labels):
        raise RecipeError(path, "[task] labels must be a non-empty list of unique strings")
    task = TaskSpec(
        name=str(task_raw["name"]),
        labels=tuple(labels),
        sample_rate=int(task_raw.get("sample_rate", 16000)),
        window_seconds=float(task_raw.get("window_seconds", 3.0)),
        multi_label=bool(task_raw.get("multi_label", False)),
    )
    if not 4000 <= task.sample_rate <= 96000 or task.window_seconds <= 0:
        raise RecipeError(path, f"[task] sample_rate={task.sample_rate} or window_seconds={task.window_seconds} out of range")

    data = _table(path, raw, "data")
    _known(path, "data", data, {"corpora"})
    corpora = []
    for i, c in enumerate(data.get("corpora", [])):
        _known(path, f"data.corpora[{i}]", c, {"name", "root", "options"})
        if "name" not in c:
            raise RecipeError(path, f"[[data.corpora]] entry {i} has no name")
        corpora.append(CorpusSpec(str(c["name"]), str(c.get("root", c["name"])), dict(c.get("options", {}))))
    if not corpora:
        raise RecipeError(path, "no [[data.corpora]] entries: name at least one corpus")

    split_raw = _table(path, raw, "split")
    _known(path, "split", split_raw, {"seed", "val", "test", "holdout"})
    holdout = {}
    for corpus, rule in dict(split_raw.get("holdout", {})).items():
        if not isinstance(rule, dict) or not rule or not all(isinstance(v, list) for v in rule.values()):
            raise RecipeError(path, f"[split.holdout.{corpus}] must map a meta key to a list, e.g. actor = [15, 16]")
        holdout[corpus] = {k: tuple(v) for k, v in rule.items()}
    split = SplitSpec(int(split_raw.get("seed", 0)), float(split_raw.get("val", 0.1)),
                      float(split_raw.get("test", 0.2)), holdout)
    if not (0 <= split.val < 1 and 0 <= split.test < 1 and split.val + split.test < 1):
        raise RecipeError(path, f"[split] val={split.val} and test={split.test} must be fractions summing below 1")
    unknown_corpora = sorted(set(holdout) - {c.name for c in corpora})
    if unknown_corpora:
        raise RecipeError(path, f"[split.holdout] names corpora {unknown_corpora} that [[data.corpora]] does not list")

    teacher = _table(path, raw, "teacher")
    _known(path, "teacher", teacher, {"source", "scratch", "train"})
    distill = _table(path, raw, "distill")
    for key in ("T", "alpha"):
        if key in distill and not isinstance(distill[key], (int, float)):
            raise RecipeError(path, f"[distill] {key} must be a number")
    if not 0 <= float(distill.get("alpha", 0.5)) <= 1:
        raise RecipeError(path, f"[distill] alpha={distill['alpha']} must be in [0, 1] (1 = labels only, no teacher)")
    if float(distill.get("T", 1.0)) <= 0:
        raise RecipeError(path, f"[distill] T={distill['T']} must be positive")
    if "augment" in distill and not isinstance(distill["augment"], dict):
        raise RecipeError(path, "[distill.augment] must be a table of TensorAugmentConfig fields")

    abl = _table(path, raw, "ablation")
    _known(path, "ablation", abl, {"students", "temperatures", "alphas", "seeds"})
    defaults = AblationSpec()
    ablation = AblationSpec(
        students=tuple(abl.get("students", defaults.students)),
        temperatures=tuple(float(t) for t in abl.get("temperatures", defaults.temperatures)),
        alphas=tuple(float(a) for a in abl.get("alphas", defaults.alphas)),
        seeds=tuple(int(s) for s in abl.get("seeds", defaults.seeds)),
    )
    if any(not 0 <= a <= 1 for a in ablation.alphas) or any(t <= 0 for t in ablation.temperatures):
        raise RecipeError(path, "[ablation] alphas must be in [0, 1] and temperatures positive")

    return Recipe(
        path=path,
        task=task,
        corpora=tuple(corpora),
        split=split,
        teacher_source=str(teacher.get("source", "scratch")),
        teacher_scratch=dict(teacher.get("scratch", {})),
        teacher_train=dict(teacher.get("train", {})),
        distill=distill,
        ablation=ablation,
        export=_table(path, raw, "export"),
    )


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
        version=str(version or recipe.export.get("version", "0.1.0")),
        training=dict(training or {}),
    )


def with_overrides(recipe: Recipe, assignments: Sequence[str]) -> Recipe:
    """`recipe` with `[distill]` keys set from `KEY=VALUE` strings (`augment.p_noise=0.8` reaches the
    sub-table). VALUE is read as TOML (`80`, `0.5`, `"group"`, `[1, 2]`); a bare word is a string."""
    return replace(recipe, distill=assign(recipe.distill, assignments, recipe.path, "[distill]"))


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

    Overrides that are None are ignored. The fields are checked when the configs are built.
    """
    table = dict(recipe.distill)
    student = str(table.pop("student", "wav2small"))
    augment = table.pop("augment", None)
    longer = table.pop("train_window_seconds", None)  # read by train.prepare; the augmentation crops the window
    if augment is not None:
        augment = {k: tuple(v) if isinstance(v, list) else v for k, v in augment.items()}
        augment.setdefault("sample_rate", recipe.task.sample_rate)
        if longer is not None:
            augment.setdefault("crop_samples", recipe.task.window_samples)
    elif longer is not None:
        raise ValueError("[distill] train_window_seconds needs a [distill.augment] table: "
                         "the augmentation crops the task's window from the longer training windows")
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "student":
            student = str(value)
        else:
            table[key] = value
    return student, table, augment
