"""The card template format: named blocks of `string.Template` text in one file.

A block starts at a line `@@ NAME` and runs to the next one; `$name` and `${name}` are filled in
and `$$` is a dollar sign. The first block, `card`, is the whole card; the others are its parts.
Text above the first block is a comment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any, Mapping

_BLOCK = re.compile(r"^@@ (\w+)[ \t]*$", re.MULTILINE)


class CardError(ValueError):
    """A card cannot be rendered: no template for the task, a record of another file, a missing figure."""


@dataclass(frozen=True)
class CardTemplate:
    """Named blocks of `string.Template` text; `render(name, values)` fills one in."""

    path: Path
    blocks: dict[str, str]

    @classmethod
    def read(cls, path: Path) -> CardTemplate:
        text = path.read_text(encoding="utf-8")
        marks = list(_BLOCK.finditer(text))
        if not marks or marks[0].group(1) != "card":
            raise CardError(f"template {path}: its first block must be `@@ card`")
        blocks = {}
        for mark, following in zip(marks, [*marks[1:], None]):
            end = following.start() if following else len(text)
            blocks[mark.group(1)] = text[mark.end() + 1 : end].strip("\n")
        return cls(path, blocks)

    def with_blocks(self, replaced: Mapping[str, str]) -> CardTemplate:
        unknown = sorted(set(replaced) - set(self.blocks))
        if unknown:
            raise CardError(f"the record replaces block(s) {unknown} that {self.path.name} does not have; "
                            f"its blocks: {sorted(self.blocks)}")
        return CardTemplate(self.path, {**self.blocks, **replaced})

    def render(self, name: str, values: Mapping[str, Any]) -> str:
        if name not in self.blocks:
            raise CardError(f"template {self.path} has no block {name!r}: add `@@ {name}`")
        try:
            return Template(self.blocks[name]).substitute(values)
        except KeyError as exc:
            raise CardError(f"block {name!r} of {self.path.name} uses ${exc.args[0]}, which this card does not "
                            "have (a figure missing from the model's metadata or its record?)") from None
        except ValueError as exc:
            raise CardError(f"block {name!r} of {self.path.name}: {exc} (write $$ for a dollar sign)") from None
