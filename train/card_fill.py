"""Template blocks filled from nested figures: the model file's metadata and its run record.

A placeholder names a path into the values, with an optional format after `|`:

    ${training.figures.test.accuracy|pct}     94.6%
    ${record.streams.test.false_alarms|n}      4,435
    ${op.threshold}                            0.993187 (no format: as it is; floats as %g)

Paths are dot-separated keys (a list takes an index: `recall_ci95.0`). Four directives use blocks
of the same template:

    ${block:NAME}            the block NAME
    ${if:PATH:NAME}          the block NAME when PATH holds something (else nothing)
    ${pick:PATH:PREFIX}      the block PREFIX_VALUE, VALUE being what PATH holds (e.g. met, missed)
    ${each:PATH:NAME}        the block NAME once per item of the list (or mapping) at PATH, one a
                             line; the item is `row` (a mapping's key is `row.key`, a plain value
                             `row.value`)
    ${join:PATH:NAME}        the same, joined by ", " on one line

Formats are in FORMATS; the card's prose stays in the template.
"""

from __future__ import annotations

import math
from string import Template
from typing import Any, Callable, Mapping

from edgekd_train.card_template import CardError, CardTemplate


def _num(fmt: str) -> Callable[[Any], str]:
    return lambda x: format(float(x), fmt)


FORMATS: dict[str, Callable[[Any], str]] = {
    "pct": lambda x: f"{100 * float(x):.1f}%",  # 0.9462 -> 94.6%
    "pct0": lambda x: f"{100 * float(x):.0f}%",
    "pnum": lambda x: f"{100 * float(x):.1f}",  # a percentage without its sign, for "40.0-48.0%"
    "n": lambda x: f"{round(float(x)):,}",  # 4435.0 -> 4,435
    "int": lambda x: f"{round(float(x))}",
    "f1": _num(".1f"), "f2": _num(".2f"), "f3": _num(".3f"), "f4": _num(".4f"),
    "g": _num("g"), "e1": _num(".1e"),
    "mega": lambda x: f"{float(x) / 1e6:.1f}",  # 34470720 -> 34.5
    "kilo": lambda x: f"{float(x) / 1e3:.0f}K",  # 463059 -> 463K
    "list": lambda x: ", ".join(map(str, x)),
}


class _PathTemplate(Template):
    braceidpattern = r"(?:(?:each|join|block|pick|if):[-\w.]+(?::[-\w.]+)?|[-\w]+(?:\.[-\w]+)*(?:\|\w+)?)"


def resolve(values: Mapping[str, Any], path: str) -> Any:
    """What `path` (dot-separated keys, list indexes) names in `values`; KeyError when nothing."""
    here: Any = values
    for key in path.split("."):
        if isinstance(here, Mapping) and key in here:
            here = here[key]
        elif isinstance(here, (list, tuple)) and key.lstrip("-").isdigit() and -len(here) <= int(key) < len(here):
            here = here[int(key)]
        else:
            raise KeyError(path)
    return here


def plain(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(plain, value))
    return str(value)


class BlockFiller:
    """Fills blocks of `template` from the nested `values`; `fill(name)` renders the block `name`."""

    def __init__(self, template: CardTemplate, values: Mapping[str, Any]) -> None:
        self.template = template
        self.values = values

    def fill(self, name: str, values: Mapping[str, Any] | None = None) -> str:
        if name not in self.template.blocks:
            raise CardError(f"template {self.template.path} has no block {name!r}: add `@@ {name}`")
        scope = self.values if values is None else values
        try:
            return _PathTemplate(self.template.blocks[name]).substitute(_Lookup(self, scope, name))
        except CardError:
            raise
        except ValueError as exc:  # string.Template: a `$` that starts no placeholder
            raise CardError(f"block {name!r} of {self.template.path.name}: {exc} (write $$ for a dollar sign)") from None


class _Lookup(Mapping[str, str]):
    """What `string.Template` asks for: each placeholder, resolved and formatted."""

    def __init__(self, filler: BlockFiller, values: Mapping[str, Any], block: str) -> None:
        self.filler, self.values, self.block = filler, values, block

    def __iter__(self):
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, key: str) -> str:
        directive, _, rest = key.partition(":")
        if rest:
            return self._directive(directive, rest)
        path, _, fmt = key.partition("|")
        value = self._get(path)
        if not fmt:
            return plain(value)
        if fmt not in FORMATS:
            raise CardError(f"block {self.block!r}: ${{{key}}} asks for format {fmt!r}; formats: {sorted(FORMATS)}")
        try:
            return FORMATS[fmt](value)
        except (TypeError, ValueError):
            raise CardError(f"block {self.block!r}: ${{{key}}} is {value!r}, which format {fmt!r} cannot show") from None

    def _get(self, path: str) -> Any:
        try:
            return resolve(self.values, path)
        except KeyError:
            raise CardError(f"block {self.block!r} of {self.filler.template.path.name} uses ${{{path}}}, which "
                            "neither the model's metadata nor its run record holds") from None

    def _directive(self, directive: str, rest: str) -> str:
        path, _, block = rest.partition(":")
        if directive == "block":
            return self.filler.fill(path, self.values)
        if not block:
            raise CardError(f"block {self.block!r}: ${{{directive}:{rest}}} needs a block name after a second colon")
        if directive == "if":
            try:
                present = resolve(self.values, path) not in (None, False, "", [], {})
            except KeyError:
                present = False
            return self.filler.fill(block, self.values) if present else ""
        value = self._get(path)
        if directive == "pick":
            return self.filler.fill(f"{block}_{plain(value).replace('-', '_').replace('.', '_')}", self.values)
        items = ([{"key": k, **v} if isinstance(v, Mapping) else {"key": k, "value": v} for k, v in value.items()]
                 if isinstance(value, Mapping) else [v if isinstance(v, Mapping) else {"value": v} for v in value])
        if directive not in ("each", "join"):
            raise CardError(f"block {self.block!r}: ${{{directive}:{rest}}}: no directive {directive!r} "
                            "(block, if, pick, each, join)")
        sep = "\n" if directive == "each" else ", "
        return sep.join(self.filler.fill(block, {**self.values, "row": item}) for item in items)
