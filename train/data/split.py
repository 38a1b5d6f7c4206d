"""Splits that do not leak: every group (word, actor, speaker, recording) lands
in exactly one part. Fixed seed; `Split.write` records it next to the results."""

from __future__ import annotations

import json
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from edgekd_train.data.clips import Clip, label_counts

PARTS = ("train", "val", "test")


class SplitError(ValueError):
    """A split would leak a group across parts, or cannot be made as asked."""


def group_key(clip: Clip, by: str) -> str:
    """The unit to keep together: "group", "path" (each file) or a `meta` key."""
    if by == "group":
        return clip.group
    if by == "path":
        return str(clip.path)
    if by in clip.meta:
        return str(clip.meta[by])
    raise SplitError(f"cannot split by {by!r}: clip {clip.path} has no such field (use 'group', 'path' or a meta key)")


@dataclass(frozen=True)
class Split:
    train: list[Clip]
    val: list[Clip]
    test: list[Clip]
    seed: int | None = None
    by: str = "group"

    def parts(self) -> dict[str, list[Clip]]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def leaks(self) -> set[str]:
        """Groups found in more than one part (empty for a sound split)."""
        seen: dict[str, set[str]] = defaultdict(set)
        for name, clips in self.parts().items():
            for c in clips:
                seen[group_key(c, self.by)].add(name)
        return {g for g, names in seen.items() if len(names) > 1}

    def summary(self) -> dict[str, Any]:
        return {
            name: {"clips": len(clips), "groups": len({group_key(c, self.by) for c in clips}), "labels": label_counts(clips)}
            for name, clips in self.parts().items()
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "by": self.by,
            "summary": self.summary(),
            "parts": {
                name: [{"path": str(c.path), "label": c.label, "group": c.group, "corpus": c.corpus} for c in clips]
                for name, clips in self.parts().items()
            },
        }

    def write(self, path: str | Path) -> Path:
        """Write the split (files per part, seed, counts) as JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path

    @classmethod
    def read(cls, path: str | Path) -> "Split":
        """Read a split written by `write` (clips carry no meta)."""
        data = json.loads(Path(path).read_text())
        parts = {
            name: [Clip(Path(r["path"]), r["label"], r["group"], r["corpus"]) for r in data["parts"][name]]
            for name in PARTS
        }
        return cls(parts["train"], parts["val"], parts["test"], data.get("seed"), data.get("by", "group"))


def group_split(
    clips: Iterable[Clip],
    val: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
    by: str = "group",
) -> Split:
    """Assign whole groups to test, val and train in a seeded random order.

    Groups go to test until it holds about `test` of the clips, then to val,
    the rest to train. With at least three groups, a part asked for (fraction
    > 0) gets at least one group.
    """
    clips = list(clips)
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise SplitError(f"val={val} and test={test} must be fractions that leave some clips for training")
    if not clips:
        raise SplitError("no clips to split")
    members: dict[str, list[Clip]] = defaultdict(list)
    for c in clips:
        members[group_key(c, by)].append(c)
    groups = sorted(members)
    needed = (val > 0) + (test > 0) + 1
    if len(groups) < needed:
        raise SplitError(
            f"only {len(groups)} distinct {by} value(s); a {by}-disjoint train/val/test split needs {needed}"
        )
    order = [groups[i] for i in np.random.default_rng(seed).permutation(len(groups))]
    total = len(clips)
    parts: dict[str, list[Clip]] = {"train": [], "val": [], "test": []}
    queue = deque(order)
    for name, target in (("test", test * total), ("val", val * total)):
        if target <= 0:
            continue
        while queue and len(parts[name]) < target:
            cur, size = len(parts[name]), len(members[queue[0]])
            if cur > 0 and cur + size - target > target - cur:
                break  # the next group would overshoot more than stopping undershoots
            parts[name].extend(members[queue.popleft()])
    if not queue:
        raise SplitError(f"nothing left for training with val={val}, test={test} over {len(groups)} groups")
    for g in queue:
        parts["train"].extend(members[g])
    return Split(parts["train"], parts["val"], parts["test"], seed, by)


def holdout(clips: Iterable[Clip], predicate: Callable[[Clip], bool], by: str = "group") -> tuple[list[Clip], list[Clip]]:
    """Split off the clips where `predicate` is true: returns (rest, held_out).

    Raises `SplitError` when a group would end up on both sides.
    """
    rest, held = [], []
    for c in clips:
        (held if predicate(c) else rest).append(c)
    both = {group_key(c, by) for c in rest} & {group_key(c, by) for c in held}
    if both:
        some = ", ".join(sorted(both)[:5])
        raise SplitError(f"the holdout predicate splits {len(both)} {by} value(s) across both sides ({some}); hold out whole groups")
    return rest, held
